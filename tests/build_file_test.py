"""BUILD stays true: every module, binary and test has a target, deps resolve.

Bazel cannot fetch its Python rules offline here, so this test plays its part:
BUILD is parsed as Starlark (a Python subset) and checked against the tree and
against each source file's imports of our own modules.
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ('py_library', 'py_binary', 'py_test')


def _targets():
  tree = ast.parse((ROOT / 'BUILD').read_text(), filename='BUILD')
  targets = {}
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in RULES):
      continue
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords
              if k.arg in ('name', 'srcs', 'deps', 'main', 'data')}
    name = kwargs['name']
    assert name not in targets, f'duplicate target {name}'
    targets[name] = dict(rule=node.func.id, srcs=kwargs.get('srcs', []),
                         deps=kwargs.get('deps', []))
  return targets


def _python_files(folder):
  return sorted(str(p.relative_to(ROOT)) for p in (ROOT / folder).rglob('*.py')
                if '.venv' not in p.parts)


def _owner_by_src(targets):
  owners = {}
  for name, target in targets.items():
    for src in target['srcs']:
      owners[src] = name
  return owners


def _module_file(module):
  path = ROOT / module.replace('.', os.sep)
  if (path / '__init__.py').exists():
    return str((path / '__init__.py').relative_to(ROOT))
  if path.with_suffix('.py').exists():
    return str(path.with_suffix('.py').relative_to(ROOT))
  return None


def _our_imports(src):
  tree = ast.parse((ROOT / src).read_text(), filename=src)
  modules = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      top = name.split('.')[0]
      if top in ('tff_hgb', 'experiments', 'tests'):
        file = _module_file(name)
        if file:
          modules.add(file)
      elif src.startswith('tests/') and (ROOT / 'tests' / f'{top}.py').exists():
        # pytest puts tests/ on sys.path: a test's helper module (e.g.
        # tests/binary_utils.py) is imported by its bare name.
        modules.add(f'tests/{top}.py')
  return modules


def test_every_source_file_has_a_target():
  owners = _owner_by_src(_targets())
  files = (_python_files('tff_hgb') + _python_files('experiments') +
           _python_files('tests'))
  missing = [f for f in files if f not in owners]
  assert not missing, f'not in any BUILD target: {missing}'


def test_rules_match_the_layout():
  targets = _targets()
  for name, target in targets.items():
    for src in target['srcs']:
      assert (ROOT / src).exists(), f'{name}: {src} does not exist'
      if src.startswith('tests/') and src.endswith('_test.py'):
        assert target['rule'] == 'py_test', f'{src} must be in a py_test'
    if target['rule'] == 'py_binary':
      assert all(s.startswith('experiments/') for s in target['srcs'])


def test_deps_name_existing_targets_and_cover_imports():
  targets = _targets()
  owners = _owner_by_src(targets)
  for name, target in targets.items():
    for dep in target['deps']:
      if dep.startswith(':'):
        assert dep[1:] in targets, f'{name}: dep {dep} is not a target'
    declared = {d[1:] for d in target['deps'] if d.startswith(':')} | {name}
    for src in target['srcs']:
      for module_file in _our_imports(src):
        owner = owners.get(module_file)
        assert owner is not None, f'{src} imports {module_file}: no target'
        assert owner in declared, (
            f'{name}: {src} imports {module_file} (target :{owner}) but '
            f':{owner} is not in deps')


if __name__ == '__main__':
  pytest.main([__file__])
