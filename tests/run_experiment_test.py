"""End-to-end tests of `python -m experiments.run_experiment` (subprocesses).

Every subprocess gets a unique marker in its environment; the TFF workers it
starts inherit it, so after each run the tests can check that no worker of
that run is left (other sessions' workers on the machine are not ours).
"""

import json
import os
import re

import pytest

import binary_utils  # tests/binary_utils.py

from tff_hgb.experiment import results

REPO = binary_utils.REPO
TIMEOUT = 240

# Small and fast: basicmotions, 4 clients (3 per round), 4 rounds.
BASE_FLAGS = ['--algorithm=hgb', '--dataset=basicmotions',
              '--partition=mixed_b', '--num_clients=4',
              '--clients_per_round=3', '--rounds=4', '--batch_size=8',
              '--checkpoint_every=2', '--seed=3', '--progress=false']


# The binary helpers, also used through this module by reliability_test.
start = binary_utils.start


def finish(process):
  return binary_utils.finish(process, TIMEOUT)


def run(module, args):
  return finish(start(module, args))


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  """One uninterrupted run, shared by the output and the resume tests."""
  out = str(tmp_path_factory.mktemp('full') / 'run')
  code, stdout, stderr = run('experiments.run_experiment',
                             BASE_FLAGS + [f'--output_dir={out}'])
  assert code == 0, stderr[-3000:]
  return out, stdout, stderr


def test_end_to_end_outputs(full_run):
  out, stdout, stderr = full_run
  assert 'Traceback' not in stderr
  for name in ('flags.json', 'partition.txt', 'partition.json', 'metrics.csv',
               'summary.json'):
    assert os.path.isfile(os.path.join(out, name)), name
  assert any(n.startswith('events.') for n in
             os.listdir(os.path.join(out, 'tensorboard')))
  assert os.path.isdir(os.path.join(out, 'state', 'program_state_4'))
  flags = results.read_json(os.path.join(out, 'flags.json'))
  assert flags['algorithm'] == 'hgb' and flags['rounds'] == 4
  json.loads(open(os.path.join(out, 'partition.json')).read())
  assert 'client' in open(os.path.join(out, 'partition.txt')).read()

  rows = results.read_metrics(os.path.join(out, 'metrics.csv'))
  assert [r['round'] for r in rows] == [1, 2, 3, 4]
  for row in rows:
    assert row['clients'] == 3
    assert 0.0 <= row['test/fusion/accuracy'] <= 1.0
    for column in ('seconds', 'test/accel/accuracy', 'test/gyro/accuracy',
                   'train/fusion/loss', 'z/fusion', 'z/accel',
                   'client_weight/effective_clients'):
      assert row[column] is not None, column

  summary = results.read_json(os.path.join(out, 'summary.json'))
  for key in ('algorithm', 'dataset', 'partition', 'seed', 'rounds_completed',
              'final_accuracy', 'best_accuracy', 'rounds_to_target',
              'seconds_per_round_median', 'missing_modality_accuracy',
              'tuned'):
    assert key in summary, key
  assert summary['rounds_completed'] == 4
  assert summary['final_accuracy'] == rows[-1]['test/fusion/accuracy']
  assert summary['best_accuracy'] == max(r['test/fusion/accuracy']
                                         for r in rows)
  assert set(summary['missing_modality_accuracy']) == {'accel', 'gyro'}
  assert summary['seconds_per_round_median'] > 0
  # The short result line.
  assert stdout.strip().splitlines()[-1].startswith(
      'hgb on basicmotions/mixed_b seed 3: final ')


def test_resume_after_sigkill_matches_uninterrupted(full_run, tmp_path):
  reference, _, _ = full_run
  out = str(tmp_path / 'run')
  args = BASE_FLAGS + [f'--output_dir={out}']
  binary_utils.kill_at_checkpoint(start('experiments.run_experiment', args),
                                  out, 2, TIMEOUT)
  # Rounds 1-2 are checkpointed: the resume must start at round 3 and keep
  # their rows as written, timing columns included (a resume that trained
  # from round 0 again would give the same accuracies, not the same seconds).
  with open(os.path.join(out, 'metrics.csv'), encoding='utf-8') as f:
    finished = f.read().splitlines()[:3]  # Header, rounds 1 and 2.
  assert [l.split(',')[0] for l in finished] == ['round', '1', '2'], finished

  code, stdout, stderr = run('experiments.run_experiment', args + ['--resume'])
  assert code == 0, stderr[-3000:]
  resumed = results.read_json(os.path.join(out, 'summary.json'))
  expected = results.read_json(os.path.join(reference, 'summary.json'))
  assert resumed['rounds_completed'] == 4
  assert resumed['final_accuracy'] == expected['final_accuracy']
  assert resumed['best_accuracy'] == expected['best_accuracy']
  rows = results.read_metrics(os.path.join(out, 'metrics.csv'))
  reference_rows = results.read_metrics(os.path.join(reference,
                                                     'metrics.csv'))
  assert [r['round'] for r in rows] == [1, 2, 3, 4]
  with open(os.path.join(out, 'metrics.csv'), encoding='utf-8') as f:
    assert f.read().splitlines()[:3] == finished
  for row, ref in zip(rows, reference_rows):
    assert row['test/fusion/accuracy'] == ref['test/fusion/accuracy']
    assert row['train/fusion/loss'] == pytest.approx(ref['train/fusion/loss'],
                                                     rel=1e-5)


# One case per kind of error; tests/experiment_test.py checks many more
# configurations in-process (same code path, without a TensorFlow start each).
# Each with the whole line docs/RELIABILITY.md quotes (a regex; '…' there is
# '.+' here).
BAD_FLAGS = [
    (['--algorithm=nope'],
     r"--algorithm: unknown algorithm 'nope'; expected one of .+"),
    (['--dataset=no_such_data'],
     r"--dataset: unknown data set 'no_such_data'; valid names: .+"),
    (['--dataset=npz:/no/such/file.npz'],  # DataError on load.
     r'--dataset: /no/such/file\.npz: no such file\.'),
    (['--rounds=-5'], r'--rounds: must be ≥ 1, got -5\.'),
    (['--clients_per_round=9'],
     r'--clients_per_round: 9 > --num_clients=4\.'),
    (['--tune=client_learning_rate:0.1,fast'],
     r"--tune: client_learning_rate: 'fast' is not a float\."),
    (['--hgb_warmup_fraction=3'],
     r'--hgb_warmup_fraction: warmup_fraction must lie in \[0, 1\], '
     r'got 3\.0\.'),
]


def test_bad_flags_end_with_one_line_error(tmp_path):
  taken = tmp_path / 'taken'
  taken.mkdir()
  (taken / 'flags.json').write_text('{}')
  cases = [(args + [f'--output_dir={tmp_path / str(i)}'], body)
           for i, (args, body) in enumerate(BAD_FLAGS)]
  cases.append(([f'--output_dir={taken}'],
                f'--output_dir: {re.escape(str(taken))} already holds a run '
                r'\(flags\.json\); pass --resume to continue it or choose '
                r'another directory\.'))
  # In parallel: each start imports TensorFlow (seconds, mostly waiting).
  started = [(start('experiments.run_experiment', BASE_FLAGS + args), body)
             for args, body in cases]
  for process, body in started:
    code, stdout, stderr = finish(process)
    assert code == 1, (body, code, stdout, stderr)  # The documented code.
    assert 'Traceback' not in stderr, stderr
    errors = [l for l in stderr.splitlines() if l.startswith('error:')]
    assert len(errors) == 1, (body, stderr)
    assert re.fullmatch('error: ' + body, errors[0]), (body, errors[0])
  for i in range(len(BAD_FLAGS)):
    # Nothing was written for a refused run.
    assert not os.path.exists(tmp_path / str(i) / 'metrics.csv')
