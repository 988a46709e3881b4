"""Names a package loads on first use (PEP 562), so that importing it stays fast.

`module_getattr` builds a package's `__getattr__` from name → module tables.
"""

from __future__ import annotations

import importlib
from typing import Callable, Iterable, Mapping


def module_getattr(package: str, symbols: Mapping[str, str],
                   modules: Iterable[str] = ()) -> Callable[[str], object]:
  """A `__getattr__` for `package` that imports a name's module when asked.

  Args:
    package: the package's `__name__` (for the error message and submodules).
    symbols: attribute name → the module that defines it.
    modules: submodules of `package` that are attributes of it.

  Returns:
    `__getattr__(name)`: the symbol, or the submodule, imported on first use;
    AttributeError for any other name, as Python's own lookup would raise.
  """
  symbols, modules = dict(symbols), frozenset(modules)

  def __getattr__(name):  # pylint: disable=invalid-name
    if name in symbols:
      return getattr(importlib.import_module(symbols[name]), name)
    if name in modules:
      return importlib.import_module(f'{package}.{name}')
    raise AttributeError(f'module {package!r} has no attribute {name!r}')

  return __getattr__
