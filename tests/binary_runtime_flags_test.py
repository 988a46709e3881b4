"""The binaries' runtime flags: the same run under every runtime, bad values."""

import os
import subprocess
import sys

import numpy as np
import pytest

import golden_runs  # tests/golden_runs.py

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, name, *flags):
  output_dir = tmp_path / name
  result = subprocess.run(
      [sys.executable, '-m', 'experiments.run_experiment', '--algorithm=hgb',
       '--dataset=basicmotions', '--num_clients=3', '--rounds=2',
       '--progress=false', f'--output_dir={output_dir}', *flags],
      cwd=_REPO, env=dict(os.environ, PYTHONPATH=_REPO),
      capture_output=True, text=True, timeout=600, check=False)
  return result, output_dir


def _without_u(rows):
  return [{k: v for k, v in row.items() if not k.startswith('u/')}
          for row in rows]


def test_same_result_under_tff_local_workers_and_inprocess(tmp_path):
  # Every round's metrics (metrics.csv and summary.json without the timing
  # columns) and every leaf of the final checkpoint (model, optimizer and
  # HGB state) agree to 1e-5: splitting clients over workers or devices only
  # reorders float sums. The default runtime is inprocess; --local_workers
  # alone implies --runtime=tff.
  captured = {}
  for name, flags in (('tff', ('--runtime=tff',)),
                      ('workers', ('--local_workers=2',)),
                      ('inprocess', ('--devices=cpu:2',))):
    result, output_dir = _run(tmp_path, name, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    # A TFF worker listens on all interfaces; each one started says so.
    assert result.stderr.count('listens on *:') == {
        'tff': 1, 'workers': 2, 'inprocess': 0}[name], result.stderr[-2000:]
    captured[name] = golden_runs.capture(str(output_dir))
  values, arrays = captured['tff']
  assert [r['round'] for r in values['metrics.csv']] == [1.0, 2.0]
  assert arrays  # The final checkpoint's leaves.
  for name in ('workers', 'inprocess'):
    other_values, other_arrays = captured[name]
    assert not golden_runs.differences(
        values['summary.json'], other_values['summary.json'], 'summary.json',
        tolerance=1e-5), name
    # u_k (OGR's client weight, a diagnostic under hgb's example-count
    # weighting) is a ratio of small loss differences: the in-process
    # executor's last-bit differences (~1e-7) move it by ~2e-4 relative.
    rows, other_rows = values['metrics.csv'], other_values['metrics.csv']
    assert not golden_runs.differences(_without_u(rows), _without_u(other_rows),
                                       'metrics.csv', tolerance=1e-5), name
    for row, other in zip(rows, other_rows):
      for key in [k for k in row if k.startswith('u/')]:
        assert other[key] == pytest.approx(row[key], rel=1e-3), (name, key)
    assert sorted(other_arrays) == sorted(arrays), name
    for key, leaf in arrays.items():
      np.testing.assert_allclose(other_arrays[key], leaf, rtol=0, atol=1e-5,
                                 err_msg=f'{name}: state leaf {key}')


@pytest.mark.parametrize('flags,named', [
    (('--runtime=gpu-cluster',), '--runtime'),
    (('--workers=nohost',), '--workers'),
    (('--local_workers=-1',), '--local_workers'),
    # --local_workers implies --runtime=tff only when no runtime is named.
    (('--runtime=inprocess', '--local_workers=2'),
     '--workers / --local_workers'),
    (('--devices=gpu', '--workers=h1:8000'), '--devices'),
])
def test_bad_runtime_flag_is_one_line_naming_it(tmp_path, flags, named):
  result, _ = _run(tmp_path, 'bad', *flags)
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  assert lines[-1].startswith('error: ' + named), lines[-1]
