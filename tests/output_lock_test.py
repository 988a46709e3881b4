"""One run per output directory: the binaries' lock on --output_dir.

Real binaries as subprocesses: two runs into one directory (one is refused in
one line naming the other's pid), and a run killed with SIGKILL (its stale lock
does not block --resume, which ends equal to an uninterrupted run).
"""

import os

import pytest

import binary_utils  # tests/binary_utils.py

from tff_hgb.experiment import results

TIMEOUT = 240
MODULE = 'experiments.run_experiment'
# Small and fast: basicmotions, 4 clients, 4 rounds, a checkpoint at round 2.
FLAGS = ['--algorithm=fedavg', '--dataset=basicmotions',
         '--partition=mixed_b', '--num_clients=4', '--clients_per_round=3',
         '--rounds=4', '--batch_size=8', '--checkpoint_every=2', '--seed=5',
         '--progress=false']


def _start(args):
  return binary_utils.start(MODULE, FLAGS + list(args))


def _finish(process):
  return binary_utils.finish(process, TIMEOUT)


def _final_metrics(out):
  """metrics.csv without its timing columns (they differ between runs)."""
  return [{k: v for k, v in row.items() if 'seconds' not in k}
          for row in results.read_metrics(os.path.join(out, 'metrics.csv'))]


@pytest.fixture(scope='module')
def concurrent(tmp_path_factory):
  """Two runs started together into one directory: (out, outcomes by pid)."""
  out = str(tmp_path_factory.mktemp('lock') / 'run')
  # Started together, so whichever claims the directory first is still
  # running (it has rounds to train) when the other reaches its claim.
  processes = [_start([f'--output_dir={out}']) for _ in range(2)]
  return out, {p.pid: _finish(p) for p in processes}


def test_second_run_into_one_directory_exits_1_in_one_line(concurrent):
  out, outcomes = concurrent
  codes = sorted(code for code, _, _ in outcomes.values())
  assert codes == [0, 1], {pid: o[0] for pid, o in outcomes.items()}
  (winner, (_, stdout, _)), = [(p, o) for p, o in outcomes.items()
                               if o[0] == 0]
  (_, _, stderr), = [o for o in outcomes.values() if o[0] == 1]
  assert stderr.strip().splitlines() == [
      f'error: --output_dir: {out} is in use by another run (pid {winner}); '
      'wait for it or choose another directory.'], stderr
  # The run that kept the directory finished it alone.
  assert 'fedavg on basicmotions/mixed_b seed 5: final ' in stdout
  summary = results.read_json(os.path.join(out, 'summary.json'))
  assert summary['rounds_completed'] == 4
  assert [r['round'] for r in _final_metrics(out)] == [1, 2, 3, 4]


def test_resume_after_sigkill_takes_over_the_stale_lock(concurrent, tmp_path):
  reference, _ = concurrent
  out = str(tmp_path / 'run')
  process = _start([f'--output_dir={out}'])
  binary_utils.kill_at_checkpoint(process, out, 2, TIMEOUT)
  # The killed run's pid is still written in the lock file; only the kernel's
  # lock counts, and the kernel dropped it with the process.
  with open(os.path.join(out, results.LOCK)) as f:
    assert f.read().strip() == str(process.pid)

  resumed = _start([f'--output_dir={out}', '--resume'])
  code, _, stderr = _finish(resumed)
  assert code == 0, stderr[-3000:]
  with open(os.path.join(out, results.LOCK)) as f:
    assert f.read().strip() == str(resumed.pid)
  assert _final_metrics(out) == _final_metrics(reference)
  assert (results.read_json(os.path.join(out, 'summary.json'))
          ['final_accuracy'] == results.read_json(
              os.path.join(reference, 'summary.json'))['final_accuracy'])
