"""Tests of `python -m experiments.compare` and the comparison outputs."""

import os
import time

import pytest

import binary_utils  # tests/binary_utils.py
from tff_hgb.experiment import comparison as comparison_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import results

TIMEOUT = 900  # The slow paper-tables run under a loaded machine.


def _run(module, args):
  return binary_utils.run_binary(module, args, timeout=TIMEOUT)


def test_compare_two_algorithms_two_seeds(tmp_path):
  out = str(tmp_path / 'cmp')
  code, stdout, stderr = _run('experiments.compare', [
      '--algorithms=fedavg,hgb', '--seeds=2', '--dataset=basicmotions',
      '--partition=mixed_b', '--num_clients=3', '--rounds=2',
      '--batch_size=8', '--target_accuracy=0.3', '--centralized',
      '--progress=false', f'--output_dir={out}'])
  assert code == 0, stderr[-3000:]
  assert 'Traceback' not in stderr
  for name in ('comparison.md', 'comparison.png', 'summary.json',
               'flags.json'):
    assert os.path.isfile(os.path.join(out, name)), name
  assert open(os.path.join(out, 'comparison.png'), 'rb').read(4) == (
      b'\x89PNG')
  for algorithm in ('fedavg', 'hgb'):
    for seed in (0, 1):
      run_dir = os.path.join(out, algorithm, f'seed_{seed}')
      summary = results.read_json(os.path.join(run_dir, 'summary.json'))
      assert summary['algorithm'] == algorithm and summary['seed'] == seed
      assert summary['rounds_completed'] == 2

  summary = results.read_json(os.path.join(out, 'summary.json'))
  assert summary['seeds'] == [0, 1]
  for algorithm in ('fedavg', 'hgb'):
    row = summary['algorithms'][algorithm]
    for key in ('final_accuracy_mean', 'final_accuracy_std',
                'best_accuracy_mean', 'rounds_to_target_mean',
                'seconds_per_round_median'):
      assert key in row, key
    assert row['seeds'] == 2
    assert 0 <= row['final_accuracy_mean'] <= 1
    finals = [results.read_json(os.path.join(out, algorithm, f'seed_{s}',
                                             'summary.json'))['final_accuracy']
              for s in (0, 1)]
    assert row['final_accuracy_mean'] == pytest.approx(sum(finals) / 2)
  assert 'effective_clients_mean' in summary['algorithms']['hgb']
  assert 'fusion_weight_mean' in summary['algorithms']['hgb']
  assert summary['centralized']['seeds'] == 2
  assert 0 <= summary['centralized']['final_accuracy_mean'] <= 1

  table = open(os.path.join(out, 'comparison.md')).read()
  assert '| `fedavg` | 2 |' in table and '| `hgb` | 2 |' in table
  assert 'centralized' in table and 'ΔCR' in table
  assert 'without accel' in table
  # The table is printed at the end.
  assert '| `hgb` | 2 |' in stdout


def test_compare_bad_flags(tmp_path):
  code, _, stderr = _run('experiments.compare', [
      '--algorithms=fedavg,nope', '--dataset=basicmotions',
      f'--output_dir={tmp_path}/x'])
  assert code == 1 and 'Traceback' not in stderr, (code, stderr[-2000:])
  assert stderr.strip().splitlines()[-1].startswith(
      "error: --algorithms: unknown algorithm 'nope'; expected one of "
      'fedavg, '), stderr[-2000:]


def test_default_preset_fills_flags_not_given():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from experiments import compare  # pylint: disable=g-import-not-at-top
  was_parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(['compare', '--config=default', '--rounds=7'])
    comparison = compare.comparison_config(*compare.check_flags())
  finally:
    flags.FLAGS.unparse_flags()
    if was_parsed:
      flags.FLAGS.mark_as_parsed()
  preset = comparison_lib.PRESETS['default']
  assert comparison.base.run.rounds == 7  # Given on the command line: kept.
  assert comparison.base.data.dataset == 'htad'
  assert comparison.base.data.partition == 'mixed_b'
  assert comparison.base.run.output_dir == 'results/default'
  assert comparison.algorithms == tuple(preset['algorithms'])
  assert comparison_lib.BEST_UNIMODAL in comparison.algorithms
  assert comparison.centralized
  assert comparison.seeds == (0, 1, 2)
  assert config_lib.parse_tune(comparison.base.run.tune)[0][0] == (
      'client_learning_rate')
  # Tuned the robust way (tff_hgb.experiment.tuning), with the method the
  # study's evidence favours among the rows.
  assert comparison.base.run.tune_seeds >= 3
  assert comparison.base.run.tune_extensions >= 1
  assert 'mmpareto' in comparison.algorithms
  comparison_lib.validate_comparison(comparison)


def test_parse_seeds():
  from experiments import compare  # pylint: disable=g-import-not-at-top
  assert compare.parse_seeds('3', 5) == (5, 6, 7)
  assert compare.parse_seeds('0,4', 5) == (0, 4)
  for bad in ('0', 'x', '1,1'):
    with pytest.raises(config_lib.UsageError, match='^--seeds: '):
      compare.parse_seeds(bad, 0)


@pytest.mark.slow
def test_paper_tables_quick_and_resumable(tmp_path):
  out = str(tmp_path / 'paper')
  args = ['--quick', '--progress=false', f'--output_dir={out}']
  code, stdout, stderr = _run('experiments.paper_tables', args)
  assert code == 0, stderr[-3000:]
  text = open(os.path.join(out, 'RESULTS.md')).read()
  for heading in ('## Table I', '## Table II', '### mixed_b', '### 2m_b',
                  '## Table III'):
    assert heading in text, heading
  for scheme in ('case_a', '1m_b', '2m_b', 'mixed_b', 'case_c'):
    assert os.path.isfile(os.path.join(out, scheme, 'summary.json')), scheme
  assert '62.97' in text  # The paper's FedHGB, Kinetics Mixed-B.
  # A rerun reuses every finished run: the same tables, no training.
  started = time.monotonic()
  code, again, stderr = _run('experiments.paper_tables', args)
  assert code == 0, stderr[-3000:]
  assert time.monotonic() - started < 60
  assert again.split('## Table I')[1] == stdout.split('## Table I')[1]


def test_report_names_the_partitions_clients_and_tuned_edges(tmp_path):
  """watch/natural has one client per subject, whatever --num_clients says."""
  from tff_hgb.data import datasets  # pylint: disable=g-import-not-at-top
  from tff_hgb.data import partition  # pylint: disable=g-import-not-at-top
  train, _ = datasets.load('watch')
  subjects = len(partition.make_partition(train, 'natural').clients)
  assert subjects != 3
  out = str(tmp_path / 'cmp')
  base = config_lib.ExperimentConfig.from_dict(dict(
      algorithm='fedavg', dataset='watch', partition='natural',
      num_clients=3, rounds=1, tune_rounds=3, batch_size=16,
      tune='client_learning_rate:0.1,0.2', progress=False, output_dir=out))
  comparison = comparison_lib.ComparisonConfig(
      base=base, algorithms=('fedavg',), seeds=(0,))
  summary = comparison_lib.run_comparison(comparison, output_dir=out,
                                          log=lambda _: None)
  assert summary['num_clients'] == subjects
  stored = results.read_json(os.path.join(out, 'summary.json'))
  assert stored['num_clients'] == subjects
  run = results.read_json(os.path.join(out, 'fedavg', 'seed_0',
                                       'summary.json'))
  assert run['num_clients'] == subjects
  title = f'# watch / natural: {subjects} clients, 1 rounds, 1 seed(s)'
  markdown = open(os.path.join(out, 'comparison.md')).read()
  assert markdown.splitlines()[0] == title
  # Of a grid of two values, the chosen one is always on an edge.
  chosen = stored['tuned']['fedavg']['client_learning_rate']
  assert stored['tuned_edge'] == {'fedavg': ['client_learning_rate']}
  assert stored['algorithms']['fedavg']['tuned_edge'] == [
      'client_learning_rate']
  assert f'client_learning_rate={chosen:g} (edge)' in markdown


def test_edge_fields_of_a_tuning_record():
  from tff_hgb.experiment import reports  # pylint: disable=g-import-not-at-top

  def record(chosen, grid):
    return {'chosen': chosen,
            'candidates': [{'values': v, 'score': 0.5} for v in grid]}

  grid = [{'lr': lr, 'e': e} for lr in (0.1, 0.2, 0.4) for e in (1, 2)]
  assert reports.edge_fields(record({'lr': 0.2, 'e': 1}, grid)) == ['e']
  assert reports.edge_fields(record({'lr': 0.4, 'e': 2}, grid)) == ['lr', 'e']
  assert reports.edge_fields(
      record({'lr': 0.2}, [{'lr': 0.1}, {'lr': 0.2}, {'lr': 0.4}])) == []
  assert reports.edge_fields(
      record({'lr': 0.1}, [{'lr': 0.1}, {'lr': 0.2}, {'lr': 0.4}])) == ['lr']
  assert reports.edge_fields(record({'lr': 0.1}, [{'lr': 0.1}])) == []
  assert reports.edge_fields(None) == []
  assert reports.tuned_text({'lr': 0.4, 'e': 2}, ['lr']) == 'lr=0.4 (edge), e=2'
