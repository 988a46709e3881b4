"""A binary's run loads its data once: the library reuses the binary's cache.

Each binary's `check_flags` and `main` run here in-process (in the session's
runtime) while the data-set loader and the partitioner count their calls.
"""

import os

from absl import flags
import pytest

from experiments import compare
from experiments import flags_lib
from experiments import run_experiment
from tff_hgb.data import datasets
from tff_hgb.data import partition as partition_lib
from tff_hgb.experiment import results

SMALL = ['--dataset=basicmotions', '--partition=mixed_b', '--num_clients=3',
         '--rounds=2', '--batch_size=8', '--noprogress']


@pytest.fixture
def calls(monkeypatch):
  """Counts data-set loads and partitions; keeps the session's runtime."""
  counts = {'load': 0, 'partition': 0}
  real_load, real_partition = datasets.load, partition_lib.make_partition

  def counting_load(*args, **kwargs):
    counts['load'] += 1
    return real_load(*args, **kwargs)

  def counting_partition(*args, **kwargs):
    counts['partition'] += 1
    return real_partition(*args, **kwargs)

  monkeypatch.setattr(datasets, 'load', counting_load)
  monkeypatch.setattr(partition_lib, 'make_partition', counting_partition)
  # The session owns the runtime (tests/conftest.py).
  monkeypatch.setattr(flags_lib, 'start_runtime', lambda: 'session')
  monkeypatch.setattr(flags_lib.runtime_workers, 'stop_all_workers',
                      lambda: None)
  return counts


def _run_main(binary, argv):
  was_parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(argv)
    binary.main(binary.check_flags())
  finally:
    flags.FLAGS.unparse_flags()
    if was_parsed:
      flags.FLAGS.mark_as_parsed()


def test_run_experiment_binary_loads_its_data_once(tmp_path, calls):
  out = str(tmp_path / 'run')
  _run_main(run_experiment, ['run_experiment', '--algorithm=fedavg',
                                  *SMALL, f'--output_dir={out}'])
  assert os.path.exists(os.path.join(out, results.SUMMARY_JSON))
  assert calls == {'load': 1, 'partition': 1}


def test_compare_binary_loads_its_data_once(tmp_path, calls):
  out = str(tmp_path / 'cmp')
  _run_main(compare, ['compare', '--algorithms=fedavg,fedavg_all_heads',
                           '--seeds=1', *SMALL, f'--output_dir={out}'])
  assert os.path.exists(os.path.join(out, results.SUMMARY_JSON))
  assert calls == {'load': 1, 'partition': 1}


def test_compare_with_a_shared_validation_set_loads_its_data_once(tmp_path,
                                                                  calls):
  # The audit's control: the shared set is held out of the pool the clients
  # are partitioned from, within the one load and partition of the run.
  out = str(tmp_path / 'shared')
  _run_main(compare, ['compare', '--algorithms=fedavg_tk,c_gb',
                           '--seeds=1', '--shared_validation_fraction=0.25',
                           '--validation_source=shared', '--full_probe',
                           *SMALL, f'--output_dir={out}'])
  assert os.path.exists(os.path.join(out, results.SUMMARY_JSON))
  assert calls == {'load': 1, 'partition': 1}
