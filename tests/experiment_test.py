"""Tests of the harness tff_hgb.experiment (in-process, small)."""

import collections
import json
import os

import numpy as np
import pytest

from tff_hgb import evaluation
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import loop
from tff_hgb.experiment import reports
from tff_hgb.experiment import results
from tff_hgb.experiment import run
from tff_hgb.experiment import tuning


def _config(tmp_path, **overrides):
  values = dict(algorithm='fedavg', dataset='basicmotions',
                partition='mixed_b', num_clients=3, rounds=3, batch_size=8,
                output_dir=str(tmp_path / 'run'), progress=False,
                checkpoint_every=2)
  values.update(overrides)
  return config_lib.ExperimentConfig.from_dict(values)


# ---------------------------------------------------------------------------
# Configuration and flags-level validation.
# ---------------------------------------------------------------------------


def test_parse_tune_values_and_grid():
  assert config_lib.parse_tune('client_learning_rate:0.02, 0.1') == [
      ('client_learning_rate', [0.02, 0.1])]
  grid = config_lib.tune_candidates(
      'client_learning_rate:0.1,0.2;local_epochs:1,2')
  assert grid == [
      {'client_learning_rate': 0.1, 'local_epochs': 1},
      {'client_learning_rate': 0.1, 'local_epochs': 2},
      {'client_learning_rate': 0.2, 'local_epochs': 1},
      {'client_learning_rate': 0.2, 'local_epochs': 2}]
  assert isinstance(grid[0]['local_epochs'], int)
  assert config_lib.parse_tune('hgb_warmup_fraction:0.25,0.5')[0][0] == (
      'hgb_warmup_fraction')


def test_algorithm_options_reach_the_algorithm_config(tmp_path):
  extra = config_lib.extra_algorithm_fields()
  assert 'client_weight_mix' in extra and 'client_learning_rate' not in extra
  config = config_lib.with_values(
      _config(tmp_path), {'client_weight_mix': 0.25,
                          'client_learning_rate': 0.3,
                          'hgb_warmup_fraction': 0.75})
  assert dict(config.algorithm.options) == {'client_weight_mix': 0.25}
  assert dict(config.algorithm.hgb) == {'warmup_fraction': 0.75}
  built = config.algorithm_config()
  assert built.client_weight_mix == 0.25
  assert built.client_learning_rate == 0.3
  assert dict(built.hgb_overrides) == {'warmup_fraction': 0.75}
  assert config_lib.parse_tune('client_weight_mix:0,0.5,1')[0][1] == [0, 0.5,
                                                                       1]


@pytest.mark.parametrize('spec', [
    'client_learning_rate', 'client_learning_rate:', ':0.1',
    'no_such_field:1,2', 'client_learning_rate:a,b', 'local_epochs:1.5',
    'client_learning_rate:0.1,0.1', 'client_learning_rate:nan',
])
def test_parse_tune_rejects(spec):
  with pytest.raises(config_lib.UsageError, match='^--tune: '):
    config_lib.parse_tune(spec)


@pytest.mark.parametrize('overrides, flag', [
    (dict(algorithm='nope'), 'algorithm'),
    (dict(dataset='no_such_data'), 'dataset'),
    (dict(partition='case_z'), 'partition'),
    (dict(rounds=0), 'rounds'),
    (dict(rounds=-2), 'rounds'),
    (dict(clients_per_round=4), 'clients_per_round'),
    (dict(client_learning_rate=0.0), 'client_learning_rate'),
    (dict(val_fraction=1.5), 'val_fraction'),
    (dict(hgb=(('warmup_fraction', 2.0),)), 'hgb_warmup_fraction'),
    (dict(tune='client_learning_rate:-1,0.1'), 'tune'),
    (dict(algorithm_options=(('client_weight_mix', 1.5),)),
     'client_weight_mix'),
    (dict(algorithm_options=(('no_such_option', 1.0),)), 'no_such_option'),
    (dict(output_dir=None), 'output_dir'),
])
def test_validate_names_the_flag(tmp_path, overrides, flag):
  with pytest.raises(config_lib.UsageError) as raised:
    config_lib.validate(_config(tmp_path, **overrides))
  assert raised.value.flag == flag
  assert str(raised.value).startswith(f'--{flag}: ')


def test_errors_found_with_the_data(tmp_path):
  cache = caches.DataCache()
  config = _config(tmp_path, algorithm='uni:smell')
  config_lib.validate(config)  # uni:<m> is checked once modalities are known.
  with pytest.raises(config_lib.UsageError, match='^--algorithm: '):
    caches.check_algorithm(config, cache.get(config))
  with pytest.raises(config_lib.UsageError, match='^--dataset: '):
    cache.get(_config(tmp_path, dataset='npz:/no/such/file.npz'))
  with pytest.raises(config_lib.UsageError, match='^--partition: '):
    cache.get(_config(tmp_path, num_clients=60))


def test_output_dir_holding_a_run(tmp_path):
  config = _config(tmp_path)
  os.makedirs(config.run.output_dir)
  results.atomic_write_json(os.path.join(config.run.output_dir, 'flags.json'),
                            config.to_dict())
  with pytest.raises(config_lib.UsageError, match='^--output_dir: '):
    results.check_output_dir(config.run.output_dir, config.to_dict(),
                                resume=False)
  results.check_output_dir(config.run.output_dir, config.to_dict(), resume=True)
  other = config.replace(rounds=7)
  with pytest.raises(config_lib.UsageError, match='^--resume: .*rounds'):
    results.check_output_dir(config.run.output_dir, other.to_dict(),
                                resume=True)


def test_config_round_trips_through_json(tmp_path):
  config = _config(tmp_path, hgb=(('warmup_fraction', 0.25),),
                   algorithm_options=(('client_weight_mix', 0.5),),
                   tune='client_learning_rate:0.1,0.2')
  text = json.dumps(results.clean_for_json(config.to_dict()))
  assert config_lib.ExperimentConfig.from_dict(json.loads(text)) == config


def test_sample_clients_is_a_pure_function_of_seed_and_round():
  ids = [f'c{i}' for i in range(10)]
  first = [loop.sample_clients(ids, 3, 5, r) for r in range(1, 6)]
  again = [loop.sample_clients(ids, 3, 5, r) for r in range(1, 6)]
  assert first == again
  assert len({tuple(c) for c in first}) > 1
  assert all(len(c) == 3 and len(set(c)) == 3 for c in first)
  assert loop.sample_clients(ids, 3, 6, 1) != first[0] or (
      loop.sample_clients(ids, 3, 6, 2) != first[1])
  assert loop.sample_clients(ids, 0, 5, 1) == ids
  assert loop.sample_clients(ids, 10, 5, 1) == ids


def test_flatten_process_metrics():
  metrics = collections.OrderedDict(
      distributor=(),
      client_work=collections.OrderedDict(
          train=collections.OrderedDict([('fusion/accuracy', np.float32(.5))]),
          hgb=collections.OrderedDict([('z/fusion', np.float32(.7)),
                                       ('client_weight/effective_clients',
                                        np.float32(2.0))])),
      aggregator=collections.OrderedDict(mean_value=(), mean_weight=()),
      finalizer=collections.OrderedDict(update_non_finite=np.int32(0)))
  assert loop.flatten_process_metrics(metrics) == {
      'train/fusion/accuracy': 0.5, 'z/fusion': pytest.approx(0.7),
      'client_weight/effective_clients': 2.0,
      'finalizer/update_non_finite': 0.0}


# ---------------------------------------------------------------------------
# results.py and reports.py
# ---------------------------------------------------------------------------


def test_run_writer_rows_truncate_and_atomic_files(tmp_path):
  writer = results.RunWriter(str(tmp_path), tensorboard=False)
  for r in range(1, 5):
    row = {'round': r, 'seconds': 0.1 * r, 'train/fusion/loss': 1.0 / r}
    if r % 2 == 0:
      row['test/fusion/accuracy'] = 0.2 * r
    writer.append(row)
  rows = results.read_metrics(str(tmp_path / 'metrics.csv'))
  assert [r['round'] for r in rows] == [1, 2, 3, 4]
  assert rows[0]['test/fusion/accuracy'] is None
  assert rows[3]['test/fusion/accuracy'] == pytest.approx(0.8)
  writer.truncate(2)
  again = results.RunWriter(str(tmp_path), tensorboard=False)
  assert [r['round'] for r in again.rows] == [1, 2]
  assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_summarize_rows():
  rows = [{'round': 1, 'seconds': 1.0, 'test/fusion/accuracy': 0.5},
          {'round': 2, 'seconds': 3.0},
          {'round': 3, 'seconds': 2.0, 'test/fusion/accuracy': 0.8,
           'z/fusion': 0.4},
          {'round': 4, 'seconds': 2.0, 'test/fusion/accuracy': 0.7,
           'z/fusion': 0.6}]
  summary = reports.summarize_rows(rows, target_accuracy=0.75)
  assert summary['final_accuracy'] == 0.7
  assert summary['best_accuracy'] == 0.8
  assert summary['best_round'] == 3
  assert summary['rounds_to_target'] == 3
  assert summary['rounds_completed'] == 4
  assert summary['seconds_per_round_median'] == 2.0
  assert summary['fusion_weight_mean'] == pytest.approx(0.5)
  assert reports.summarize_rows(rows, target_accuracy=0.9)[
      'rounds_to_target'] is None


def test_aggregate_and_markdown_delta_cr(tmp_path):
  def run(final, best, rounds, **extra):
    return dict(final_accuracy=final, best_accuracy=best,
                rounds_to_target=rounds, rounds_completed=20,
                seconds_per_round_median=0.5, **extra)

  runs = collections.OrderedDict(
      fedavg=[run(0.6, 0.62, 15), run(0.64, 0.66, 11)],
      fednova=[run(0.7, 0.71, 9), run(0.7, 0.72, None)],
      hgb=[run(0.75, 0.77, 5, effective_clients_mean=4.0,
               fusion_weight_mean=0.5,
               missing_modality_accuracy={'audio': 0.5}),
           run(0.73, 0.74, 7, effective_clients_mean=6.0,
               fusion_weight_mean=0.7,
               missing_modality_accuracy={'audio': 0.6})])
  table = reports.aggregate(runs, baselines=['fedavg', 'fednova'])
  assert table['fedavg']['final_accuracy_mean'] == pytest.approx(0.62)
  assert table['fedavg']['final_accuracy_std'] == pytest.approx(0.02)
  assert table['fedavg']['rounds_to_target_mean'] == 13
  assert table['fednova']['rounds_to_target_reached'] == 1
  # ΔCR: the fastest baseline (fednova, 9) minus ours (6).
  assert table['hgb']['delta_cr'] == pytest.approx(3.0)
  assert table['hgb']['effective_clients_mean'] == pytest.approx(5.0)
  assert table['hgb']['missing_modality_accuracy'] == {
      'audio': pytest.approx(0.55)}
  text = reports.comparison_markdown(
      table, target_accuracy=0.7,
      centralized=dict(seeds=2, final_accuracy_mean=0.9,
                       final_accuracy_std=0.01, best_accuracy_mean=0.91,
                       best_accuracy_std=0.0))
  assert '| `hgb` | 2 | 74.00 ± 1.00 |' in text
  assert '+3.0' in text and 'centralized' in text and 'without audio' in text
  curves = {name: [([1, 2, 3], [0.1, 0.2, 0.3]), ([1, 2, 3], [0.2, 0.3, 0.4])]
            for name in runs}
  path = tmp_path / 'plot.png'
  reports.plot_comparison(curves, str(path), target_accuracy=0.7,
                          centralized=0.9)
  assert path.read_bytes()[:4] == b'\x89PNG'


# ---------------------------------------------------------------------------
# Tuning: validation data only (in-process, on the session's TFF worker).
# ---------------------------------------------------------------------------


def test_tuning_uses_training_pool_validation_only(tmp_path, monkeypatch):
  """A run with --tune: candidates scored on held-out TRAINING data only."""
  config = _config(tmp_path, algorithm='fedavg', rounds=3,
                   tune='client_learning_rate:0.001,0.3')
  data_cache = caches.DataCache()
  train_pool, test = data_cache.load(config)
  evaluated = []
  real_evaluate = evaluation.evaluate

  def recording_evaluate(keras_model, weights, dataset, **kwargs):
    evaluated.append(dataset)
    return real_evaluate(keras_model, weights, dataset, **kwargs)

  monkeypatch.setattr(evaluation, 'evaluate', recording_evaluate)
  summary = run.run_experiment(config, data_cache=data_cache)
  out = config.run.output_dir
  record = results.read_json(os.path.join(out, 'tuning.json'))
  assert 'test set is not used' in record['validation']['source']

  # The tuning runs evaluated only the held-out part of the training pool,
  # at the last TUNE_EVALUATIONS rounds of each candidate; then the real run
  # evaluated the test set (every round, then each modality dropped).
  tuning_evaluations = 2 * config_lib.TUNE_EVALUATIONS
  assert len(evaluated) == tuning_evaluations + 3 + 2
  pool_rows = {tuple(np.round(r, 5)) for r in
               train_pool.features['accel'].reshape(len(train_pool), -1)}
  for dataset in evaluated[:tuning_evaluations]:
    assert dataset is not test
    assert len(dataset) == record['validation']['examples']
    for row in dataset.features['accel'].reshape(len(dataset), -1):
      assert tuple(np.round(row, 5)) in pool_rows
  assert all(d is test for d in evaluated[tuning_evaluations:])
  # Validation and tuning-training data are disjoint parts of the pool.
  assert (record['validation']['examples'] +
          record['validation']['training_examples'] == len(train_pool))

  scores = {c['values']['client_learning_rate']: c['score']
            for c in record['candidates']}
  assert record['chosen']['client_learning_rate'] == max(scores,
                                                         key=scores.get)
  assert summary['tuned'] == record['chosen']
  assert summary['learning_rates']['client'] == (
      record['chosen']['client_learning_rate'])
  rows = results.read_metrics(os.path.join(out, 'metrics.csv'))
  assert [r['round'] for r in rows] == [1, 2, 3]
  assert summary['final_accuracy'] == rows[-1]['test/fusion/accuracy']
  assert set(summary['missing_modality_accuracy']) == {'accel', 'gyro'}


def test_widened_tuning_grid_reuses_finished_values(tmp_path, monkeypatch):
  config = _config(tmp_path, algorithm='fedavg', rounds=3,
                   tune='client_learning_rate:0.01,0.1')
  path = str(tmp_path / 'tuning.json')
  first = tuning.tune(config, tuning_path=path, resume=True)
  trained = []
  real_train = loop.train

  def counting_train(trial, *args, **kwargs):
    trained.append(trial.algorithm.client_learning_rate)
    return real_train(trial, *args, **kwargs)

  monkeypatch.setattr(loop, 'train', counting_train)
  widened = config.replace(tune='client_learning_rate:0.1,0.01,0.4')
  second = tuning.tune(widened, tuning_path=path, resume=True)
  by_value = lambda record: {c['values']['client_learning_rate']: c
                             for c in record['candidates']}
  assert trained == [0.4]  # Only the new value is trained.
  old, new = by_value(first), by_value(second)
  assert set(new) == {0.01, 0.1, 0.4}
  for value in (0.01, 0.1):
    assert new[value] == old[value]
  assert second['tune'] == widened.run.tune
  # A narrowed grid drops what it no longer contains.
  narrowed = tuning.tune(config.replace(tune='client_learning_rate:0.4'),
                         tuning_path=path, resume=True)
  assert list(by_value(narrowed)) == [0.4] and trained == [0.4]


def test_missing_modality_accuracy_matches_a_hand_built_drop(tmp_path,
                                                            monkeypatch):
  # summary.json's accuracy "without m" (the comparisons' "without m"
  # columns) must be the fusion accuracy of the final model on the test set
  # with m zero-filled and masked out (docs/ALGORITHM.md §2), counted over the
  # examples that keep another modality; here computed by calling the Keras
  # model on inputs built by hand.
  config = _config(tmp_path, rounds=2)
  final = []
  real_train = loop.train

  def train(*args, **kwargs):
    state, rows = real_train(*args, **kwargs)
    final.append((args[1], args[2], state))
    return state, rows

  monkeypatch.setattr(loop, 'train', train)
  summary = run.run_experiment(config)
  (data, algorithm, state), = final
  keras_model = algorithm.keras_model_fn()
  algorithm.process.get_model_weights(state).assign_weights_to(keras_model)
  test = data.evaluation_set
  names = [m.name for m in test.modalities]
  assert set(summary['missing_modality_accuracy']) == set(names) == {
      'accel', 'gyro'}
  labels = test.labels.astype(np.int64)
  differs = False
  for dropped in names:
    inputs = {}
    for m in names:
      kept = (np.zeros(len(test), np.float32) if m == dropped else
              np.asarray(test.presence[m], np.float32))
      features = np.asarray(test.features[m], np.float32)
      inputs[m] = features * kept.reshape((-1,) + (1,) * (features.ndim - 1))
      inputs[m + '__mask'] = kept
    logits = keras_model(inputs, training=False)['fusion'].numpy()
    counted = np.max([inputs[m + '__mask'] for m in names], axis=0) > 0
    assert counted.any(), dropped
    expected = float(np.mean((np.argmax(logits, -1) == labels)[counted]))
    assert summary['missing_modality_accuracy'][dropped] == pytest.approx(
        expected, abs=1e-9), dropped
    differs |= abs(expected - summary['final_accuracy']) > 1e-9
  # The drop changes the answer here, so a drop that did nothing would fail.
  assert differs, summary
