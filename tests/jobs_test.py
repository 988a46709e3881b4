"""Tests of --jobs (tff_hgb/experiment/jobs.py): runs in parallel processes
write the files of --jobs=1, a failing run spares the others, resume works.
"""

import csv
import json
import os
import signal
import time

import pytest

import binary_utils  # tests/binary_utils.py
from tff_hgb.experiment import jobs
from tff_hgb.experiment import results

TIMEOUT = 600
# A tiny comparison that still has every kind of task: tuning values, seeds
# at the tuned value, the centralized reference.
TINY = ['--algorithms=fedavg,hgb', '--seeds=2', '--dataset=basicmotions',
        '--partition=mixed_b', '--num_clients=3', '--rounds=2',
        '--batch_size=8', '--target_accuracy=0.3', '--checkpoint_every=1',
        '--tune=client_learning_rate:0.1,0.4', '--tune_rounds=3',
        '--centralized', '--progress=false']
# Values that measure time, not results.
_TIMING = ('seconds', 'seconds_per_round_median', 'process_builds',
           'eval_seconds')


def _compare(out, *extra):
  return binary_utils.start('experiments.compare',
                            TINY + [f'--output_dir={out}', *extra])


@pytest.fixture(scope='module')
def sequential(tmp_path_factory):
  """The tiny comparison with --jobs=1 (the reference files)."""
  out = str(tmp_path_factory.mktemp('jobs1') / 'cmp')
  code, _, stderr = binary_utils.finish(_compare(out, '--jobs=1'), TIMEOUT)
  assert code == 0, stderr[-3000:]
  return out


def _without_timing(value):
  if isinstance(value, dict):
    return {k: _without_timing(v) for k, v in value.items()
            if k not in _TIMING}
  if isinstance(value, list):
    return [_without_timing(v) for v in value]
  return value


def _markdown_without_timing(text):
  """comparison.md without its wall-time note and its s/round column."""
  lines, drop = [], None
  for line in text.splitlines():
    if line.startswith('- Wall time'):
      continue
    cells = line.split('|')
    if 's/round' in [c.strip() for c in cells]:
      drop = [c.strip() for c in cells].index('s/round')
    if drop is not None and line.startswith('|') and len(cells) > drop:
      cells[drop] = ''
    lines.append('|'.join(cells))
  return lines


def _result_files(root):
  """Relative path → content of every result file, timing left out.

  TensorBoard events, the exported Keras archive and the checkpoints' graph
  protos carry time stamps; the checkpoints' variables are compared bytewise.
  """
  found = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      relative = os.path.relpath(path, root)
      parts = relative.split(os.sep)
      if ('tensorboard' in parts or 'model' in parts or name == results.LOCK
          or name.endswith(('.pb', '.png'))):
        continue
      if name.endswith('.json'):
        text = open(path, encoding='utf-8').read().replace(root, '<root>')
        found[relative] = _without_timing(json.loads(text))
        if name == results.FLAGS_JSON:  # A resumed run says so.
          found[relative].pop('resume', None)
      elif name.endswith('.csv'):
        found[relative] = [
            {k: v for k, v in row.items() if k not in _TIMING}
            for row in csv.DictReader(open(path, encoding='utf-8'))]
      elif name.endswith('.md'):
        found[relative] = _markdown_without_timing(
            open(path, encoding='utf-8').read())
      else:
        found[relative] = open(path, 'rb').read()
  return found


def _assert_same_files(expected_root, actual_root):
  expected = _result_files(expected_root)
  actual = _result_files(actual_root)
  assert sorted(actual) == sorted(expected)
  for name, content in expected.items():
    assert actual[name] == content, name


def test_two_jobs_write_the_files_of_one(sequential, tmp_path):
  out = str(tmp_path / 'cmp')
  code, _, stderr = binary_utils.finish(_compare(out, '--jobs=2'), TIMEOUT)
  assert code == 0, stderr[-3000:]
  # Every run directory, tuning record and the aggregated files, the same
  # numbers (bit for bit: metrics and checkpoint variables).
  _assert_same_files(sequential, out)
  assert results.read_json(os.path.join(out, 'summary.json'))[
      'process_builds'] > 0


def test_a_failing_run_spares_the_others(tmp_path):
  out = str(tmp_path / 'cmp')
  # A bad run: its run directory is a regular file.
  os.makedirs(os.path.join(out, 'hgb'))
  open(os.path.join(out, 'hgb', 'seed_1'), 'w').close()
  code, stdout, stderr = binary_utils.finish(
      _compare(out, '--jobs=2', '--tune=', '--nocentralized'), TIMEOUT)
  assert code == 1, stderr[-3000:]
  assert 'Traceback' not in stderr, stderr[-3000:]
  lines = stderr.strip().splitlines()
  assert any(line.startswith("error: run 'hgb seed 1' failed: UsageError: "
                             '--output_dir:') and 'is a file' in line
             for line in lines), stderr[-3000:]
  assert lines[-1].startswith('error: 1 run(s) failed: hgb seed 1'), lines[-1]
  for algorithm, seed in (('fedavg', 0), ('fedavg', 1), ('hgb', 0)):
    summary = results.read_json(os.path.join(out, algorithm, f'seed_{seed}',
                                             'summary.json'))
    assert summary['rounds_completed'] == 2
  assert 'fedavg on basicmotions/mixed_b seed 1' in stdout
  # Nothing aggregated from an incomplete comparison.
  assert not os.path.exists(os.path.join(out, 'summary.json'))


def test_resume_with_two_jobs_after_a_kill(sequential, tmp_path):
  out = str(tmp_path / 'cmp')
  process = _compare(out, '--jobs=2')
  # Killed (with its workers, which die with it) once a seed's run has saved
  # its first round and before the comparison is done.
  checkpoint = os.path.join(out, 'fedavg', 'seed_0', 'state',
                            'program_state_1')
  deadline = time.monotonic() + TIMEOUT
  try:
    while not os.path.isdir(checkpoint):
      assert process.poll() is None, process.communicate()[1][-3000:]
      assert time.monotonic() < deadline
      time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
  finally:
    code, _, _ = binary_utils.finish(process, TIMEOUT)  # No worker left.
  assert code == -signal.SIGKILL
  assert not os.path.exists(os.path.join(out, 'summary.json'))
  code, _, stderr = binary_utils.finish(
      _compare(out, '--jobs=2', '--resume'), TIMEOUT)
  assert code == 0, stderr[-3000:]
  _assert_same_files(sequential, out)


# ---------------------------------------------------------------------------
# The scheduler and pool on their own (tasks of this module).
# ---------------------------------------------------------------------------


def _square(context, x):
  del context
  return x * x


def _raise(context, message):
  del context
  raise ValueError(message)


def _exit(context, code):
  del context
  os._exit(code)  # pylint: disable=protected-access


def test_pool_reports_failures_and_deaths_and_finishes_the_rest():
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  done = {}
  with jobs.Pool(2, progress=False) as pool:
    scheduler = jobs.Scheduler(pool, caches.DataCache())
    for i in range(4):
      scheduler.submit(jobs.Task((i,), f'square {i}', _square, (i,)),
                       then=lambda v, i=i: done.__setitem__(i, v))
    scheduler.submit(jobs.Task((5,), 'bad', _raise, ('no good',)))
    scheduler.submit(jobs.Task((6,), 'dies', _exit, (3,)))
    # A follow-up task submitted by a callback runs too.
    scheduler.submit(
        jobs.Task((7,), 'then', _square, (5,)),
        then=lambda v: scheduler.submit(
            jobs.Task((8,), 'after', _square, (v,)),
            then=lambda w: done.__setitem__('after', w)))
    with pytest.raises(jobs.RunsFailed) as failure:
      scheduler.run()
    assert sorted(failure.value.labels) == ['bad', 'dies']
    assert done == {0: 0, 1: 1, 2: 4, 3: 9, 'after': 625}
    # The pool still works after a worker died (it was replaced).
    again = jobs.Scheduler(pool, caches.DataCache())
    again.submit(jobs.Task((0,), 'again', _square, (3,)),
                 then=lambda v: done.__setitem__('again', v))
    again.run()
  assert done['again'] == 9


def test_inline_runs_in_key_order_and_raises_at_once():
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  order = []
  scheduler = jobs.Scheduler(None, caches.DataCache())
  for key in [(1, 1), (0,), (1, 0)]:
    scheduler.submit(jobs.Task(key, str(key), _square, (2,)),
                     then=lambda v, key=key: order.append(key))
  scheduler.submit(jobs.Task((2,), 'bad', _raise, ('stop',)))
  scheduler.submit(jobs.Task((3,), 'never', _square, (2,)),
                   then=lambda v: order.append('never'))
  with pytest.raises(ValueError, match='stop'):
    scheduler.run()
  assert order == [(0,), (1, 0), (1, 1)]


def _entry(key, affinity, cls=2):
  return ((cls, key), key, jobs.Task((key,), str(key), _square, (1,),
                                     affinity=affinity), None)


def test_pick_prefers_own_then_unclaimed_affinity_then_the_first():
  import heapq  # pylint: disable=g-import-not-at-top
  ready = [_entry(0, 'a'), _entry(1, 'b'), _entry(2, 'a'), _entry(3, 'c'),
           _entry(4, None)]
  heapq.heapify(ready)
  key = lambda i: ready[i][1]
  assert key(jobs.pick(ready, own={'a'}, others={'b'})) == 0
  assert key(jobs.pick(ready, own={'b'}, others={'a'})) == 1
  # Nothing of its own: the first task no other worker has built.
  assert key(jobs.pick(ready, own=set(), others={'a', 'b'})) == 3
  # Everything taken by others: the first, so no worker waits.
  assert key(jobs.pick(ready, own=set(), others={'a', 'b', 'c'})) == 0
  # A higher priority class (eager: 1) goes first whatever the affinity.
  ready.append(_entry(9, 'z', cls=1))
  heapq.heapify(ready)
  assert key(jobs.pick(ready, own={'a'}, others=set())) == 9


_SEEN = set()


def _sleep(context, seconds):
  del context
  time.sleep(seconds)


def _build_once(context, affinity):
  """A task that "builds" its affinity once per process; returns whether it
  had to (as a method's first run in a worker builds its process)."""
  del context
  time.sleep(0.3)
  built = affinity not in _SEEN
  _SEEN.add(affinity)
  return built


def test_pool_keeps_a_methods_runs_on_the_worker_that_built_it():
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  builds = []
  with jobs.Pool(2, progress=False) as pool:
    scheduler = jobs.Scheduler(pool, caches.DataCache())
    # Two runs without affinity first, so that both workers are up and start
    # the others at about the same time.
    for i in (-2, -1):
      scheduler.submit(jobs.Task((i,), f'start {i}', _sleep, (2.0,)))
    # In key order (a, a, b, b, ...) two workers in step would each take one
    # run of each method, and both would build both methods: 4 builds.
    for i, affinity in enumerate('aabbaabb'):
      scheduler.submit(jobs.Task((i,), f'{affinity}{i}', _build_once,
                                 (affinity,), affinity=affinity),
                       then=builds.append)
    scheduler.run()
  assert len(builds) == 8
  # Each method stays on its worker: 2 builds; 3 if one worker has to take
  # over the other's last runs so as not to wait.
  assert sum(builds) <= 3
