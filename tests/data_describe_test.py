"""experiments/describe_data.py as users run it: a subprocess."""

import os
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _describe_data(*flags):
  return subprocess.run(
      [sys.executable, '-m', 'experiments.describe_data', *flags],
      cwd=_REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=120)


def test_prints_sizes_shapes_and_partition():
  run = _describe_data('--dataset=basicmotions', '--partition=mixed_b',
                       '--num_clients=3', '--alpha=0.5', '--seed=1')
  assert run.returncode == 0, run.stderr
  out = run.stdout
  assert 'basicmotions-train: 64 examples, 4 classes' in out
  assert 'basicmotions-test: 16 examples, 4 classes' in out
  assert 'modality accel: timeseries [100, 3]' in out
  assert 'modality gyro: timeseries [100, 3]' in out
  assert 'partition mixed_b (seed 1' in out
  assert 'client_0  train' in out and 'modalities accel ' in out
  assert 'modalities accel,gyro ' in out


def test_errors_end_with_one_line():
  for flags, message in (
      (['--dataset=nope'], "error: Unknown data set 'nope'; valid names: "
       'basicmotions, '),
      (['--dataset=basicmotions', '--partition=natural'],
       'error: basicmotions-train has no client ids (subjects, speakers), so '
       'it has no natural clients; use another scheme.'),
  ):
    run = _describe_data(*flags)
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(message), run.stderr
    assert 'Traceback' not in run.stderr
