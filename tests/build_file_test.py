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


# --- Writing BUILD --------------------------------------------------------
# `python tests/build_file_test.py --write` regenerates BUILD from the tree;
# test_build_is_generated_from_the_tree keeps the two identical.

_HEADER = """\
# Bazel targets mirroring the layout, as in TFF's own repository.
# Bazel cannot fetch its Python rules offline here; tests/build_file_test.py
# keeps this file true (every module covered, every import a declared dep).
# Regenerate it with `python tests/build_file_test.py --write`.

load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")

package(default_visibility = ["//visibility:public"])
"""
# Import name → PyPI distribution (as @pypi//<name>); other imports are ours
# or the standard library's.
THIRD_PARTY = {
    'absl': 'absl_py', 'grpc': 'grpcio', 'hypothesis': 'hypothesis',
    'matplotlib': 'matplotlib', 'numpy': 'numpy', 'portpicker': 'portpicker',
    'psutil': 'psutil', 'pytest': 'pytest', 'sklearn': 'scikit_learn',
    'scipy': 'scipy', 'tensorflow': 'tensorflow',
    'tensorflow_federated': 'tensorflow_federated',
    'tensorflow_io': 'tensorflow_io', 'tqdm': 'tqdm',
}


def _target_name(src):
  path = pathlib.PurePosixPath(src)
  if src.startswith('tests/'):
    return path.stem if path.stem.endswith('_test') else f'tests_{path.stem}'
  if src.startswith('experiments/'):
    return 'experiments' if path.stem == '__init__' else path.stem
  parts = list(path.with_suffix('').parts)
  if parts[-1] == '__init__':
    parts = parts[:-1]
  return '_'.join(parts)


def _is_binary(src):
  return (src.startswith('experiments/') and
          "if __name__ == '__main__':" in (ROOT / src).read_text())


def _third_party(src):
  tree = ast.parse((ROOT / src).read_text(), filename=src)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      tops = [a.name.split('.')[0] for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      tops = [node.module.split('.')[0]]
    else:
      continue
    names.update(f'@pypi//{THIRD_PARTY[t]}' for t in tops if t in THIRD_PARTY)
  return names


def _starlark_list(items):
  if not items:
    return '[]'
  return '[\n' + ''.join(f'        "{i}",\n' for i in items) + '    ]'


def expected_build():
  """The BUILD file the tree implies (targets sorted by source path)."""
  files = (_python_files('tff_hgb') + _python_files('experiments') +
           _python_files('tests'))
  owners = {src: _target_name(src) for src in files}
  blocks = [_HEADER]
  for src in files:
    name = owners[src]
    rule = ('py_test' if src.endswith('_test.py') and src.startswith('tests/')
            else 'py_binary' if _is_binary(src) else 'py_library')
    deps = {f':{owners[m]}' for m in _our_imports(src) if m != src}
    if rule == 'py_test' and 'tests/conftest.py' in owners:
      deps.add(':tests_conftest')
    deps = sorted(deps) + sorted(_third_party(src))
    lines = [f'{rule}(', f'    name = "{name}",', f'    srcs = ["{src}"],']
    if rule == 'py_binary':
      lines.append(f'    main = "{src}",')
    if deps:
      lines.append(f'    deps = {_starlark_list(deps)},')
    lines.append(')')
    blocks.append('\n'.join(lines) + '\n')
  return '\n'.join(blocks)


def test_build_is_generated_from_the_tree():
  assert (ROOT / 'BUILD').read_text() == expected_build(), (
      'BUILD is out of date: run `python tests/build_file_test.py --write`')


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  if sys.argv[1:] == ['--write']:
    (ROOT / 'BUILD').write_text(expected_build())
  else:
    pytest.main([__file__])
