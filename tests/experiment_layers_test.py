"""The core never imports the harness: tff_hgb/experiment/ sits beside it."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / 'tff_hgb'


def _imported_modules(path):
  for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f'{node.module}.{alias.name}' for alias in node.names)


def test_core_modules_do_not_import_the_experiment_harness():
  offenders = []
  for path in sorted(ROOT.rglob('*.py')):
    if path.relative_to(ROOT).parts[0] == 'experiment':
      continue
    for module in _imported_modules(path):
      if module == 'tff_hgb.experiment' or module.startswith(
          'tff_hgb.experiment.'):
        offenders.append(f'{path.relative_to(ROOT.parent)} imports {module}')
  assert not offenders, offenders
