"""Reliability: faults tried on purpose (docs/RELIABILITY.md is the catalogue).

Binaries run as subprocesses (helpers of tests/run_experiment_test.py: each
run is checked to leave no worker behind); library-level faults run in this
process on the session's TFF worker (tests/conftest.py).
"""

import csv
import errno
import os
import random
import signal
import subprocess
import time

import pytest

from tff_hgb.experiment import caches as caches_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import loop
from tff_hgb.experiment import results
from tff_hgb.experiment import run

import run_experiment_test as rx  # pylint: disable=g-bad-import-order

ROUNDS = 6
FLAGS = ['--algorithm=hgb', '--dataset=basicmotions', '--partition=mixed_b',
         '--num_clients=4', '--clients_per_round=3', f'--rounds={ROUNDS}',
         '--batch_size=8', '--checkpoint_every=1', '--seed=5',
         '--progress=false']
# Columns that measure time, not what was computed.
TIMING = ('seconds', 'eval_seconds')
KILL_SEED = 20261127


def _columns(path):
  """metrics.csv as text cells (exact bytes), without the timing columns."""
  with open(path, encoding='utf-8', newline='') as f:
    rows = list(csv.DictReader(f))
  return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def _rows_by_round(path):
  """metrics.csv as text cells by round, timing columns included."""
  with open(path, encoding='utf-8', newline='') as f:
    return {int(row['round']): row for row in csv.DictReader(f)}


def _one_line_error(code, stderr, startswith):
  assert code == 1, (code, stderr[-2000:])
  assert 'Traceback' not in stderr, stderr[-3000:]
  errors = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, stderr[-3000:]
  assert errors[0].startswith(startswith), errors[0]
  return errors[0]


@pytest.fixture(scope='module')
def two_runs(tmp_path_factory):
  """The same flags and seed twice, side by side (separate processes)."""
  base = tmp_path_factory.mktemp('twice')
  dirs = [str(base / name) for name in ('a', 'b')]
  started = [rx.start('experiments.run_experiment',
                      FLAGS + [f'--output_dir={d}']) for d in dirs]
  for process in started:
    code, _, stderr = rx.finish(process)
    assert code == 0, stderr[-3000:]
  return dirs


# ---------------------------------------------------------------------------
# Determinism and kill -9.
# ---------------------------------------------------------------------------


def test_same_flags_and_seed_give_identical_metrics(two_runs):
  a, b = two_runs
  rows_a = _columns(os.path.join(a, results.METRICS_CSV))
  rows_b = _columns(os.path.join(b, results.METRICS_CSV))
  assert [r['round'] for r in rows_a] == [str(r) for r in range(1, ROUNDS + 1)]
  assert rows_a == rows_b  # Cell by cell, as written (no tolerance).
  summary_a = results.read_json(os.path.join(a, results.SUMMARY_JSON))
  summary_b = results.read_json(os.path.join(b, results.SUMMARY_JSON))
  summary_a.pop('seconds_per_round_median')
  summary_b.pop('seconds_per_round_median')
  assert summary_a == summary_b
  for name in (results.PARTITION_JSON, results.PARTITION_TXT):
    with open(os.path.join(a, name), 'rb') as fa, open(os.path.join(b, name),
                                                       'rb') as fb:
      assert fa.read() == fb.read(), name


def _newest_state(out):
  state_dir = os.path.join(out, results.STATE_DIR)
  if not os.path.isdir(state_dir):
    return 0
  numbers = [int(n.split('_')[2]) for n in os.listdir(state_dir)
             if n.startswith('program_state_') and n.count('_') == 2]
  return max(numbers, default=0)


@pytest.mark.slow
def test_killed_three_times_at_random_rounds_resumes_to_the_same_result(
    two_runs, tmp_path):
  reference = two_runs[0]
  out = str(tmp_path / 'run')
  args = FLAGS + [f'--output_dir={out}']
  rng = random.Random(KILL_SEED)
  kills = []
  kept = {}
  for attempt in range(3):
    newest = _newest_state(out)
    remaining = 2 - attempt  # Kills still to come after this one.
    target = rng.randint(newest + 1, ROUNDS - 1 - remaining)
    process = rx.start('experiments.run_experiment',
                       args + (['--resume'] if attempt else []))
    deadline = time.monotonic() + rx.TIMEOUT
    try:
      while _newest_state(out) < target:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f'no checkpoint {target}'
        time.sleep(0.01)
      process.send_signal(signal.SIGKILL)
    finally:
      code, _, _ = rx.finish(process)
    assert code == -signal.SIGKILL
    assert not os.path.exists(os.path.join(out, results.SUMMARY_JSON)), (
        f'attempt {attempt}: the run finished before it was killed')
    kills.append((target, _newest_state(out)))
    # The rounds up to the newest checkpoint are finished: every later resume
    # must keep their rows as written, timing columns included (a resume
    # that retrained them would measure new seconds).
    finished = _rows_by_round(os.path.join(out, results.METRICS_CSV))
    kept.update({r: row for r, row in finished.items() if r <= kills[-1][1]})
  assert len(kills) == 3, kills

  code, _, stderr = rx.run('experiments.run_experiment', args + ['--resume'])
  assert code == 0, stderr[-3000:]
  resumed = results.read_json(os.path.join(out, results.SUMMARY_JSON))
  expected = results.read_json(os.path.join(reference, results.SUMMARY_JSON))
  assert resumed['rounds_completed'] == ROUNDS
  assert resumed['final_accuracy'] == expected['final_accuracy'], kills
  assert resumed['best_accuracy'] == expected['best_accuracy'], kills
  assert (resumed['missing_modality_accuracy'] ==
          expected['missing_modality_accuracy'])
  assert (_columns(os.path.join(out, results.METRICS_CSV)) ==
          _columns(os.path.join(reference, results.METRICS_CSV))), kills
  assert kept and max(kept) == kills[-1][1], kills
  final = _rows_by_round(os.path.join(out, results.METRICS_CSV))
  assert {r: final[r] for r in kept} == kept, kills


# ---------------------------------------------------------------------------
# Output directory and disk faults (binary: one line, no traceback).
# ---------------------------------------------------------------------------

def test_output_dir_faults_end_in_one_line(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a directory')
  started = [
      (rx.start('experiments.run_experiment',
                FLAGS + [f'--output_dir={a_file}/run']),
       f'error: --output_dir: cannot create {a_file}/run: {a_file} is a '
       'file.'),
      (rx.start('experiments.run_experiment',
                FLAGS + [f'--output_dir={a_file}']),
       f'error: --output_dir: {a_file} is a file.'),
  ]
  for process, expected in started:
    code, _, stderr = rx.finish(process)
    assert _one_line_error(code, stderr, expected) == expected
  assert not (tmp_path / 'a_file' / 'run').exists()


@pytest.fixture
def small_disk(tmp_path):
  """mount(size) → a fresh tmpfs of that size (a real disk that fills up)."""
  mounted = []

  def mount(size):
    path = tmp_path / f'disk{len(mounted)}'
    path.mkdir()
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                           'tmpfs', str(path)], capture_output=True,
                          text=True, check=False)
    if done.returncode:
      pytest.skip(f'cannot mount a tmpfs here: {done.stderr.strip()}')
    mounted.append(path)
    return path

  yield mount
  for path in mounted:
    subprocess.run(['umount', str(path)], check=False)


def test_full_disk_ends_in_one_line_naming_the_file(small_disk):
  # Real ENOSPC (a write to a full tmpfs names no file by itself). 20 KiB:
  # .lock, flags.json, partition.txt and partition.json take a 4 KiB page
  # each, so round 1's metrics.csv is what fills the disk; 64 KiB: the
  # metrics.csv row and TensorBoard event fit, round 1's checkpoint (~120 KB,
  # written by TensorFlow) does not.
  cases = [(small_disk('20k'), results.METRICS_CSV),
           (small_disk('64k'), os.path.join(results.STATE_DIR,
                                            'program_state_1'))]
  started = [(rx.start('experiments.run_experiment',
                       FLAGS + [f'--output_dir={disk}/run']), disk, name)
             for disk, name in cases]
  for process, disk, name in started:
    code, _, stderr = rx.finish(process)
    expected = ('error: cannot write results: No space left on device '
                f'({disk}/run/{name}); free the space and rerun with '
                '--resume to continue from the last saved round.')
    assert _one_line_error(code, stderr, expected) == expected
    # Nothing half-written: every file present is whole, no temporary files.
    names = os.listdir(disk / 'run')
    assert not [n for n in names if n.endswith('.tmp')], names
    assert results.read_json(str(disk / 'run' / results.FLAGS_JSON))
  rows = results.read_metrics(str(cases[1][0] / 'run' / results.METRICS_CSV))
  assert [r['round'] for r in rows] == [1]

  # Freeing the space and resuming, as the line says, finishes the run.
  disk = cases[1][0]
  subprocess.run(['mount', '-o', 'remount,size=4m', str(disk)], check=True)
  code, _, stderr = rx.run('experiments.run_experiment',
                           FLAGS + [f'--output_dir={disk}/run', '--resume'])
  assert code == 0, stderr[-3000:]
  summary = results.read_json(str(disk / 'run' / results.SUMMARY_JSON))
  assert summary['rounds_completed'] == ROUNDS


def test_unwritable_output_dir_is_refused_before_any_work(tmp_path):
  a_file = tmp_path / 'a_file'
  a_file.write_text('x')
  for path in (f'{a_file}/run', f'{a_file}/deeper/run'):
    with pytest.raises(config_lib.UsageError,
                       match=f'^--output_dir: cannot create .*{a_file} is a'):
      results.check_output_dir(path, {}, resume=False)
  if os.geteuid() != 0:  # Root writes anywhere: only checkable as a user.
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    with pytest.raises(config_lib.UsageError, match='is not writable'):
      results.check_output_dir(str(locked / 'run'), {}, resume=False)


def test_disk_full_leaves_the_previous_file_whole(tmp_path, monkeypatch):
  writer = results.RunWriter(str(tmp_path), tensorboard=False)
  writer.append({'round': 1, 'seconds': 0.1, 'test/fusion/accuracy': 0.5})
  before = (tmp_path / results.METRICS_CSV).read_bytes()

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(results.os, 'fsync', full)
  with pytest.raises(OSError, match='No space left') as raised:
    writer.append({'round': 2, 'seconds': 0.1, 'test/fusion/accuracy': 0.6})
  # An fsync error names no file; the writer's names the one it writes.
  assert raised.value.filename == str(tmp_path / results.METRICS_CSV)
  with pytest.raises(OSError, match='No space left'):
    results.atomic_write_json(str(tmp_path / results.SUMMARY_JSON), {'a': 1})
  assert (tmp_path / results.METRICS_CSV).read_bytes() == before
  assert not (tmp_path / results.SUMMARY_JSON).exists()
  assert sorted(os.listdir(tmp_path)) == [results.METRICS_CSV]  # No temp.


def test_results_are_written_through_temp_file_and_rename(tmp_path,
                                                          monkeypatch):
  """Every results file goes through atomic_write_text (temp + os.replace)."""
  replaced = []
  real_replace = os.replace

  def spy(src, dst):
    assert os.path.dirname(src) == os.path.dirname(dst)
    assert os.path.basename(src).startswith('.' + os.path.basename(dst))
    assert os.path.basename(src).endswith('.tmp')
    replaced.append(os.path.basename(dst))
    return real_replace(src, dst)

  monkeypatch.setattr(results.os, 'replace', spy)
  writer = results.RunWriter(str(tmp_path), tensorboard=False)
  writer.append({'round': 1, 'seconds': 0.1})
  writer.write_json(results.SUMMARY_JSON, {'final_accuracy': 0.5})
  writer.write_text(results.PARTITION_TXT, 'client_0\n')
  writer.truncate(0)
  assert replaced == [results.METRICS_CSV, results.SUMMARY_JSON,
                      results.PARTITION_TXT, results.METRICS_CSV]
  # No other writer of results: nothing in the library opens a file for
  # writing except atomic_write_text (and the TFRecord sidecar of media.py,
  # which is data preparation, not results).
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  harness = sorted(os.path.join('experiment', n) for n in os.listdir(
      os.path.join(root, 'tff_hgb', 'experiment')) if n.endswith('.py'))
  for name in harness + ['centralized.py']:
    text = open(os.path.join(root, 'tff_hgb', name), encoding='utf-8').read()
    for mode in ("'w'", "'wb'", "'a'", '"w"'):
      uses = text.count(f', {mode}')
      allowed = 1 if (name == os.path.join('experiment', 'results.py') and
                      mode == "'w'") else 0
      assert uses == allowed, (name, mode)


# ---------------------------------------------------------------------------
# Corrupt checkpoints and result files (library, in this process).
# ---------------------------------------------------------------------------


def _corrupt_state(out, round_num):
  state = os.path.join(out, results.STATE_DIR, f'program_state_{round_num}')
  assert os.path.isdir(state), os.listdir(os.path.dirname(state))
  for folder, _, files in os.walk(state):
    for name in files:
      with open(os.path.join(folder, name), 'wb') as f:
        f.write(b'\x00garbage')


@pytest.fixture(scope='module')
def caches():
  return caches_lib.DataCache(), caches_lib.AlgorithmCache()


def _small_config(out, **overrides):
  values = dict(algorithm='fedavg', dataset='basicmotions',
                partition='mixed_b', num_clients=4, rounds=3, batch_size=8,
                checkpoint_every=1, seed=2, progress=False, output_dir=out)
  values.update(overrides)
  return config_lib.ExperimentConfig.from_dict(values)


@pytest.fixture
def trained_rounds(monkeypatch):
  """The rounds `loop.train` trains, in order (it samples once per round)."""
  rounds = []
  sample = loop.sample_clients

  def spy(client_ids, clients_per_round, seed, round_num):
    rounds.append(round_num)
    return sample(client_ids, clients_per_round, seed, round_num)

  monkeypatch.setattr(loop, 'sample_clients', spy)
  return rounds


def test_corrupt_checkpoint_falls_back_to_an_earlier_one(tmp_path, caches,
                                                         trained_rounds):
  data_cache, algorithm_cache = caches
  out = str(tmp_path / 'run')
  metrics = os.path.join(out, results.METRICS_CSV)
  config = _small_config(out)
  first = run.run_experiment(config, data_cache=data_cache,
                                    algorithm_cache=algorithm_cache)
  assert trained_rounds == [1, 2, 3]
  rows = _columns(metrics)
  written = _rows_by_round(metrics)

  # The newest state is damaged: --resume loads the one before (round 2),
  # keeps rounds 1-2 as they were and retrains only round 3, to the same
  # result.
  _corrupt_state(out, 3)
  resume = config.replace(resume=True)
  del trained_rounds[:]
  again = run.run_experiment(resume, data_cache=data_cache,
                                    algorithm_cache=algorithm_cache)
  assert trained_rounds == [3]
  assert again['final_accuracy'] == first['final_accuracy']
  assert _columns(metrics) == rows
  redone = _rows_by_round(metrics)
  assert [redone[r] for r in (1, 2)] == [written[r] for r in (1, 2)]
  assert os.path.isdir(os.path.join(out, results.STATE_DIR,
                                    'program_state_3'))

  # Every state damaged: the run starts again from round 0 (documented
  # fallback), still to the same result.
  for r in (1, 2, 3):
    _corrupt_state(out, r)
  del trained_rounds[:]
  again = run.run_experiment(resume, data_cache=data_cache,
                                    algorithm_cache=algorithm_cache)
  assert trained_rounds == [1, 2, 3]
  assert again['final_accuracy'] == first['final_accuracy']
  assert _columns(metrics) == rows


def test_corrupt_flags_and_summary_files(tmp_path):
  out = tmp_path / 'run'
  out.mkdir()
  (out / results.FLAGS_JSON).write_text('{"rounds": 3, trunc')
  config = _small_config(str(out), resume=True)
  with pytest.raises(config_lib.UsageError,
                     match=r'^--resume: .*flags.json is unreadable'):
    results.check_output_dir(str(out), config.to_dict(), resume=True)
  # A damaged summary.json is not taken for a finished run (it is redone).
  (out / results.SUMMARY_JSON).write_text('{"rounds_completed": 3')
  assert not results.run_is_complete(str(out), config)
