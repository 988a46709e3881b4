"""The layer rule of docs/ARCHITECTURE.md, read from every module's imports.

The algorithm core (what a user embedding HGB imports) never imports the
experiment harness or the binaries; the harness never imports the binaries;
nothing in the library imports the tests. Imports are read with `ast` (no
module is executed), including imports inside functions and literal
`importlib.import_module('...')` calls.

The table below is the rule. It names module prefixes: `tff_hgb.experiment`
is the package experiment/ and everything in it.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent

CORE = 'core'
HARNESS = 'harness'
BINARIES = 'binaries'
TESTS = 'tests'

# Module prefix → layer. The longest matching prefix wins; `tff_hgb` itself
# (its __init__ and any top-level module not named here) is core.
LAYER_OF_PREFIX = {
    # The algorithm core: tff_hgb's top level and its algorithm packages.
    'tff_hgb': CORE,
    'tff_hgb.ogr': CORE,
    'tff_hgb.balancing': CORE,
    'tff_hgb.losses': CORE,
    'tff_hgb.models': CORE,
    'tff_hgb.client_work': CORE,
    'tff_hgb.aggregation': CORE,
    'tff_hgb.hgb': CORE,
    'tff_hgb.process_utils': CORE,
    'tff_hgb.evaluation': CORE,
    'tff_hgb.export': CORE,
    'tff_hgb.centralized': CORE,
    'tff_hgb.algorithms': CORE,
    'tff_hgb.data': CORE,  # incl. media.py and encoder_data.py (TF, no harness)
    'tff_hgb.hgb_config': CORE,
    'tff_hgb.runtime': CORE,
    # The experiment harness: the experiment/ package (config, caches, loop,
    # tuning, run, comparison, paper, study, results, reports) and the
    # benchmarking/ package.
    'tff_hgb.experiment': HARNESS,
    'tff_hgb.benchmarking': HARNESS,
    # The thin absl binaries.
    'experiments': BINARIES,
    # The tests.
    'tests': TESTS,
}

# Layer → the layers its modules may import (besides third-party packages).
ALLOWED_IMPORTS = {
    CORE: {CORE},
    HARNESS: {CORE, HARNESS},
    BINARIES: {CORE, HARNESS, BINARIES},
    TESTS: {CORE, HARNESS, BINARIES, TESTS},
}

# The directories whose modules are checked.
CHECKED_DIRS = ('tff_hgb', 'experiments', 'tests')


def layer_of(module):
  """The layer of a dotted module name, or None for a third-party module."""
  best = None
  for prefix in LAYER_OF_PREFIX:
    if module == prefix or module.startswith(prefix + '.'):
      if best is None or len(prefix) > len(best):
        best = prefix
  return None if best is None else LAYER_OF_PREFIX[best]


def module_name(path, root=ROOT):
  parts = list(path.relative_to(root).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def imported_modules(path, root=ROOT):
  """(line, dotted name) of everything `path` imports.

  `from a.b import c` yields a.b.c (c may be a module or a symbol; a prefix
  rule matches either way). Relative imports are resolved against the module's
  package.
  """
  tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
  name = module_name(path, root)
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.split('.')
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = '.'.join(anchor + ([base] if base else []))
      found += [(node.lineno, f'{base}.{alias.name}' if base else alias.name)
                for alias in node.names]
    elif (isinstance(node, ast.Call) and node.args and
          isinstance(node.args[0], ast.Constant) and
          isinstance(node.args[0].value, str) and
          ((isinstance(node.func, ast.Attribute) and
            node.func.attr == 'import_module') or
           (isinstance(node.func, ast.Name) and
            node.func.id in ('import_module', '__import__')))):
      found.append((node.lineno, node.args[0].value))
  return found


def checked_files(root=ROOT):
  return [path for directory in CHECKED_DIRS
          for path in sorted((root / directory).rglob('*.py'))]


def violations(files, root=ROOT):
  """'path:line: module (layer) imports name (layer)' for every broken rule."""
  found = []
  for path in files:
    importer = module_name(path, root)
    importer_layer = layer_of(importer)
    if importer_layer is None:
      found.append(f'{path.relative_to(root)}: {importer} has no layer in '
                   'LAYER_OF_PREFIX')
      continue
    for line, imported in imported_modules(path, root):
      imported_layer = layer_of(imported)
      if (imported_layer is not None and
          imported_layer not in ALLOWED_IMPORTS[importer_layer]):
        found.append(f'{path.relative_to(root)}:{line}: {importer} '
                     f'({importer_layer}) imports {imported} '
                     f'({imported_layer})')
  return found


def test_the_table_classifies_the_layout():
  for module, layer in [
      ('tff_hgb', CORE), ('tff_hgb.ogr', CORE), ('tff_hgb.hgb', CORE),
      ('tff_hgb.algorithms.fednova', CORE), ('tff_hgb.data.partition', CORE),
      ('tff_hgb.runtime.inprocess', CORE),
      ('tff_hgb.runtime.inprocess.intrinsics', CORE),
      ('tff_hgb.experiment', HARNESS), ('tff_hgb.experiment.loop', HARNESS),
      ('tff_hgb.experiment.study', HARNESS),
      ('tff_hgb.experiment.jobs', HARNESS),
      ('tff_hgb.experiment.results', HARNESS),
      ('tff_hgb.benchmarking', HARNESS),
      ('tff_hgb.benchmarking.ratio', HARNESS),
      ('experiments.flags_lib', BINARIES), ('experiments', BINARIES),
      ('tests.binary_utils', TESTS),
      # Dotted prefixes: a similar name is not the same module.
      ('tff_hgb.experimental', CORE), ('tff_hgb.hgb_config', CORE),
      ('tensorflow_federated', None), ('experiments_extra', None),
  ]:
    assert layer_of(module) == layer, (module, layer_of(module), layer)


def test_imports_are_read_from_source(tmp_path):
  package = tmp_path / 'tff_hgb' / 'runtime'
  package.mkdir(parents=True)
  (package / '__init__.py').write_text('from . import local\n')
  source = package / 'local.py'
  source.write_text(
      'import numpy as np\n'
      'from tff_hgb import ogr\n'
      'from .. import experiment\n'
      'from ..data import partition\n'
      'def f():\n'
      '  import importlib\n'
      "  return importlib.import_module('experiments.flags_lib')\n")
  assert imported_modules(source, tmp_path) == [
      (1, 'numpy'), (2, 'tff_hgb.ogr'), (3, 'tff_hgb.experiment'),
      (4, 'tff_hgb.data.partition'), (6, 'importlib'),
      (7, 'experiments.flags_lib')]
  assert imported_modules(package / '__init__.py', tmp_path) == [
      (1, 'tff_hgb.runtime.local')]


def test_a_violating_import_is_reported(tmp_path):
  (tmp_path / 'tff_hgb' / 'experiment').mkdir(parents=True)
  core = tmp_path / 'tff_hgb' / 'hgb.py'
  core.write_text('from tff_hgb.experiment import config\nimport tests.x\n')
  harness = tmp_path / 'tff_hgb' / 'experiment' / 'loop.py'
  harness.write_text('from tff_hgb import hgb\nfrom experiments import flags_lib\n')
  assert violations([core, harness], tmp_path) == [
      'tff_hgb/hgb.py:1: tff_hgb.hgb (core) imports '
      'tff_hgb.experiment.config (harness)',
      'tff_hgb/hgb.py:2: tff_hgb.hgb (core) imports tests.x (tests)',
      'tff_hgb/experiment/loop.py:2: tff_hgb.experiment.loop (harness) '
      'imports experiments.flags_lib (binaries)',
  ]


def test_every_module_keeps_the_layer_rule():
  files = checked_files()
  layers = {layer_of(module_name(f)) for f in files}
  # The check is not vacuous: it sees every layer.
  assert layers == {CORE, HARNESS, BINARIES, TESTS}, layers
  found = violations(files)
  assert not found, ('imports against the layer rule (docs/ARCHITECTURE.md):\n'
                     + '\n'.join('  ' + v for v in found))
