"""The house stays readable: module sizes and function lengths are bounded.

`python tests/code_size_test.py` prints every module's line count and the
longest function bodies (code lines, docstrings excluded) — the figures the
refactor of issue 15 reported before and after.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A module longer than this says why in its docstring, with this phrase.
MAX_MODULE_LINES = 600
LONG_MODULE_REASON = 'Longer than 600 lines because'


def _modules():
  for folder in ('tff_hgb', 'experiments'):
    yield from sorted((ROOT / folder).rglob('*.py'))


def _body_lines(node, lines):
  """Code lines of a function body: no docstring, blank or comment lines."""
  body = node.body
  if (body and isinstance(body[0], ast.Expr) and
      isinstance(getattr(body[0], 'value', None), ast.Constant) and
      isinstance(body[0].value.value, str)):
    body = body[1:]
  if not body:
    return 0
  text = lines[body[0].lineno - 1:body[-1].end_lineno]
  return sum(1 for t in text if t.strip() and not t.strip().startswith('#'))


def function_lengths(path):
  source = path.read_text()
  lines = source.splitlines()
  tree = ast.parse(source)
  out = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      out.append((_body_lines(node, lines), node.name))
  return out


def test_no_module_is_longer_than_its_docstring_allows():
  too_long = []
  for path in _modules():
    count = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ''
    if count > MAX_MODULE_LINES and LONG_MODULE_REASON not in doc:
      too_long.append(f'{path.relative_to(ROOT)}: {count} lines')
  assert not too_long, ('modules above %d lines whose docstring does not say '
                        'why: %s' % (MAX_MODULE_LINES, too_long))


def test_every_module_has_a_docstring():
  missing = [str(p.relative_to(ROOT)) for p in _modules()
             if p.name != '__init__.py' or p.read_text().strip()
             if not ast.get_docstring(ast.parse(p.read_text()))]
  assert not missing, f'modules without a docstring: {missing}'


if __name__ == '__main__':
  rows = []
  functions = []
  for path in _modules():
    rel = str(path.relative_to(ROOT))
    rows.append((len(path.read_text().splitlines()), rel))
    functions += [(n, f'{rel}:{name}') for n, name in function_lengths(path)]
  print('lines  module')
  for count, rel in sorted(rows, reverse=True):
    print(f'{count:5d}  {rel}')
  print('\nbody lines  longest functions')
  for count, name in sorted(functions, reverse=True)[:15]:
    print(f'{count:5d}       {name}')
