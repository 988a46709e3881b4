"""The library installs as users install it: pyproject.toml, pins, console scripts.

Fast checks keep pyproject.toml, requirements*.txt, the README and
experiments/console.py agreeing; the slow test pip-installs into a fresh venv.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid

from packaging import version
import pytest

import binary_utils  # tests/binary_utils.py
import readme_test  # tests/readme_test.py
from experiments import console
import tff_hgb

ROOT = pathlib.Path(__file__).resolve().parent.parent
# requirements.txt's pins that only the test suite needs: pyproject.toml's
# `test` extra rather than a dependency forced on every user's environment.
TEST_ONLY = {'pytest', 'iniconfig', 'pluggy', 'Pygments', 'hypothesis',
             'sortedcontainers'}


def _pins(name):
  lines = (ROOT / name).read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith('#')]


def _project():
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    return tomllib.load(f)


def _no_deps_command():
  return 'pip install --no-deps ' + ' '.join(_pins('requirements-nodeps.txt'))


def test_pyproject_pins_are_requirements_txt():
  project = _project()['project']
  dependencies = project['dependencies']
  test_extra = project['optional-dependencies']['test']
  declared = dependencies + test_extra
  assert len(set(declared)) == len(declared)
  assert sorted(declared) == sorted(_pins('requirements.txt'))
  assert {pin.split('==')[0] for pin in test_extra} == TEST_ONLY
  assert all('==' in pin for pin in declared)


def test_no_deps_step_is_the_same_everywhere():
  command = _no_deps_command()
  readme = (ROOT / 'README.md').read_text()
  assert command in readme
  # pyproject.toml's comment splits the command over two lines.
  comment = ' '.join(
      line.lstrip('#').strip().rstrip('\\').strip()
      for line in (ROOT / 'pyproject.toml').read_text().splitlines()[:6])
  assert command in comment
  message = _import_without_tff()
  assert command in message


def _import_without_tff():
  """The last stderr line of `import tff_hgb` with TFF not installed."""
  code = ("import sys; sys.modules['tensorflow_federated'] = None; "
          'import tff_hgb')
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          check=False)
  assert result.returncode == 1
  return result.stderr.strip().splitlines()[-1]


def test_import_without_tff_says_how_to_install_it():
  line = _import_without_tff()
  assert line.startswith('ModuleNotFoundError: tff_hgb needs TensorFlow '
                         'Federated, installed without its dependencies: ')
  assert line.endswith('(README, "Use it in your own project")')


def test_version_is_single_sourced_version_string():
  assert re.fullmatch(r'\d+\.\d+\.\d+', tff_hgb.__version__)
  assert str(version.Version(tff_hgb.__version__)) == tff_hgb.__version__
  config = _project()
  assert config['project']['dynamic'] == ['version']
  assert config['tool']['setuptools']['dynamic']['version'] == {
      'attr': 'tff_hgb.__version__'}


def test_every_binary_has_a_console_script():
  scripts = _project()['project']['scripts']
  assert set(scripts) == set(console.SCRIPTS)
  for script, target in scripts.items():
    module_name, function = target.split(':')
    assert module_name == 'experiments.console'
    assert callable(getattr(console, function))
    # Each function runs the binary its script names.
    assert function == script.removeprefix('tff-hgb-').replace('-', '_')
  binaries = {f'experiments.{p.stem}'
              for p in (ROOT / 'experiments').glob('*.py')
              if "if __name__ == '__main__':" in p.read_text()}
  assert set(console.SCRIPTS.values()) | set(console.MAINTAINER_BINARIES) == (
      binaries)


def _package_files(directory):
  return sorted(str(p.relative_to(directory)) for p in directory.rglob('*')
                if p.is_file() and '__pycache__' not in p.parts and
                p.suffix != '.pyc')


def _venv_env(venv, marker):
  env = {k: v for k, v in os.environ.items()
         if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV')}
  env['PATH'] = str(venv / 'bin') + os.pathsep + env.get('PATH', '')
  env['VIRTUAL_ENV'] = str(venv)
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  env[binary_utils.MARKER] = marker
  return env


@pytest.mark.slow
def test_pip_install_in_fresh_venv_runs_readme_example(tmp_path):
  timings = {}
  marker = uuid.uuid4().hex
  # A copy of the checkout: pip builds in the source tree (build/, *.egg-info)
  # and the repository's own must stay clean.
  source = tmp_path / 'source'
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
      '.venv', '.git', 'results', 'build', '*.egg-info', '__pycache__',
      '*.pyc', '.hypothesis', '.pytest_cache'))
  venv = tmp_path / 'venv'
  env = _venv_env(venv, marker)
  user = tmp_path / 'user'  # anywhere but the checkout
  user.mkdir()
  python = str(venv / 'bin' / 'python')

  def run(name, args, timeout, expect=0):
    start = time.monotonic()
    result = subprocess.run(args, cwd=user, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    timings[name] = round(time.monotonic() - start, 1)
    assert result.returncode == expect, (name, result.stdout[-3000:],
                                         result.stderr[-3000:])
    return result

  pip = [python, '-m', 'pip', 'install', '--disable-pip-version-check', '-q']
  try:
    # Without --system-site-packages: only what pip installs is there.
    run('venv', [sys.executable, '-m', 'venv', str(venv)], 120)
    run('pip install <repo>', pip + [str(source)], 1500)
    # Before the --no-deps step, the import names it.
    result = run('import without TFF', [python, '-c', 'import tff_hgb'], 60,
                 expect=1)
    assert _no_deps_command() in result.stderr
    run('pip install --no-deps',
        pip + ['--no-deps', '-r', str(source / 'requirements-nodeps.txt')],
        600)

    result = run('import', [python, '-c', (
        'import experiments, tff_hgb; print(tff_hgb.__version__); '
        'print(tff_hgb.__file__); print(experiments.__file__)')], 60)
    installed_version, library, binaries = result.stdout.split()
    assert installed_version == tff_hgb.__version__
    for package, init in (('tff_hgb', library), ('experiments', binaries)):
      installed = pathlib.Path(init).parent
      assert installed.is_relative_to(venv), installed
      # Every module and data file of the checkout, subpackages included.
      assert _package_files(installed) == _package_files(source / package)

    (user / 'example.py').write_text(readme_test._example())  # pylint: disable=protected-access
    result = run('README example', [python, 'example.py'], 900)
    printed = result.stdout.splitlines()
    assert printed[0].startswith('0 ') and printed[1].startswith('1 ')
    assert 'fusion/accuracy' in printed[-1]

    # absl ends --helpshort with exit code 1, as `python -m` does.
    result = run('tff-hgb-run --helpshort',
                 [str(venv / 'bin' / 'tff-hgb-run'), '--helpshort'], 120,
                 expect=1)
    assert '--algorithm' in result.stdout
    assert str(venv) in result.stdout  # the installed binary's flags
    assert 'Traceback' not in result.stderr
  finally:
    print('install_test timings (s):', timings)
    binary_utils.assert_none_left(marker)
