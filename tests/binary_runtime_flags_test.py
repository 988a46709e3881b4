"""The binaries' runtime flags: the same run under every runtime, bad values."""

import json
import os
import subprocess
import sys

import pytest

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


def test_same_result_under_tff_local_workers_and_inprocess(tmp_path):
  accuracies = {}
  # The default is inprocess; --local_workers alone implies --runtime=tff.
  for name, flags in (('tff', ('--runtime=tff',)),
                      ('workers', ('--local_workers=2',)),
                      ('inprocess', ('--devices=cpu:2',))):
    result, output_dir = _run(tmp_path, name, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    # A TFF worker listens on all interfaces; each one started says so.
    assert result.stderr.count('listens on *:') == {
        'tff': 1, 'workers': 2, 'inprocess': 0}[name], result.stderr[-2000:]
    summary = json.loads((output_dir / 'summary.json').read_text())
    accuracies[name] = summary['final_accuracy']
  assert accuracies['workers'] == pytest.approx(accuracies['tff'], abs=1e-6)
  assert accuracies['inprocess'] == pytest.approx(accuracies['tff'], abs=1e-6)


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
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  assert lines[-1].startswith('error: ' + named), lines[-1]
