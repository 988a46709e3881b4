"""Console-script entry points (`tff-hgb-run`, ...) for the experiment binaries.

Each script runs its binary exactly as `python -m experiments.<binary>` does,
importing it only when called; pyproject.toml's [project.scripts] points here.
"""

import runpy

# Script name -> the binary it runs (tests/install_test.py keeps this table and
# pyproject.toml's [project.scripts] identical).
SCRIPTS = {
    'tff-hgb-run': 'experiments.run_experiment',
    'tff-hgb-compare': 'experiments.compare',
    'tff-hgb-paper-tables': 'experiments.paper_tables',
    'tff-hgb-study': 'experiments.study',
    'tff-hgb-benchmark': 'experiments.benchmark',
    'tff-hgb-describe-data': 'experiments.describe_data',
    'tff-hgb-make-tfrecords': 'experiments.make_tfrecords',
    'tff-hgb-check-encoders': 'experiments.check_encoders',
    'tff-hgb-make-encoder-data': 'experiments.make_encoder_data',
    'tff-hgb-worker': 'experiments.worker',
}
# Binaries for the repository's own upkeep (run from a checkout by make), not
# installed as scripts.
MAINTAINER_BINARIES = ('experiments.readme_results',)


def _run(script: str) -> None:
  # Run as __main__ (its `app.run(main)` block) rather than calling
  # `app.run(module.main)` here: absl's --help/--helpshort show the docstring
  # and flags of the __main__ module, which would otherwise be pip's wrapper
  # script, printing no flags at all. alter_sys also sets sys.argv[0] to the
  # binary, as `python -m` does.
  runpy.run_module(SCRIPTS[script], run_name='__main__', alter_sys=True)


def run() -> None:
  _run('tff-hgb-run')


def compare() -> None:
  _run('tff-hgb-compare')


def paper_tables() -> None:
  _run('tff-hgb-paper-tables')


def study() -> None:
  _run('tff-hgb-study')


def benchmark() -> None:
  _run('tff-hgb-benchmark')


def describe_data() -> None:
  _run('tff-hgb-describe-data')


def make_tfrecords() -> None:
  _run('tff-hgb-make-tfrecords')


def check_encoders() -> None:
  _run('tff-hgb-check-encoders')


def make_encoder_data() -> None:
  _run('tff-hgb-make-encoder-data')


def worker() -> None:
  _run('tff-hgb-worker')
