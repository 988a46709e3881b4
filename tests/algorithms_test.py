"""The registry: every entry builds and trains on real data, evaluated alike."""

import dataclasses

import numpy as np
import pytest

from tff_hgb import algorithms
from tff_hgb import evaluation
from tff_hgb import models
from tff_hgb.data import client_data
from tff_hgb.data import datasets
from tff_hgb.data import partition


@pytest.fixture(scope='module')
def basicmotions():
  train_pool, test = datasets.load('basicmotions', seed=0)
  parts = partition.make_partition(train_pool, 'mixed_b', num_clients=3,
                                   alpha=None, seed=0)
  return client_data.FederatedData(train_pool, parts), test


CONFIG = algorithms.AlgorithmConfig(
    client_learning_rate=0.05, batch_size=16,
    model=models.ModelConfig(feature_dim=8, hidden_units=16, conv_filters=4))


@pytest.mark.parametrize('name', list(algorithms.NAMES) + ['uni:accel'])
def test_each_entry_runs_two_rounds_on_basicmotions(basicmotions, name):
  federated, test = basicmotions
  algorithm = algorithms.build_algorithm(name, federated, CONFIG)
  state = algorithm.process.initialize()
  initial = algorithm.process.get_model_weights(state)
  for round_num in range(2):
    data = [algorithm.client_data(cid, round_num)
            for cid in algorithm.client_ids]
    state = algorithm.process.next(state, data).state
  weights = algorithm.process.get_model_weights(state)
  assert any(np.max(np.abs(a - b)) > 0
             for a, b in zip(weights.trainable, initial.trainable))
  result = evaluation.evaluate(algorithm.keras_model_fn(), weights, test)
  assert 0.0 <= result['fusion/accuracy'] <= 1.0
  assert np.isfinite(result['fusion/loss'])


def test_uni_modal_entry_never_sees_another_modality(basicmotions):
  federated, _ = basicmotions
  algorithm = algorithms.build_algorithm('uni:gyro', federated, CONFIG)
  element = algorithm.process.next.type_signature.parameter[1].member.element
  assert [name for name, _ in _items(element.x)] == ['gyro']
  holders = [cid for cid in federated.client_ids
             if 'gyro' in federated.client_modalities(cid)]
  assert algorithm.client_ids == holders
  for cid in algorithm.client_ids:
    batch = next(iter(algorithm.client_data(cid, 0)))
    assert list(batch['x']) == ['gyro']
  keras_model = algorithm.keras_model_fn()
  assert models.model_modalities(keras_model) == ['gyro']


def _items(struct):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  return list(tff.structure.iter_elements(struct))


def test_unknown_algorithm_is_named(basicmotions):
  federated, _ = basicmotions
  with pytest.raises(ValueError, match="Unknown algorithm 'fedsgd'"):
    algorithms.build_algorithm('fedsgd', federated, CONFIG)
  with pytest.raises(ValueError, match='uni:audio'):
    algorithms.build_algorithm('uni:audio', federated, CONFIG)


def _one_round(algorithm):
  state = algorithm.process.initialize()
  data = [algorithm.client_data(cid, 0) for cid in algorithm.client_ids]
  return algorithm.process.next(state, data)


def test_fedavg_capped_caps_at_two_over_k_by_default(basicmotions):
  federated, _ = basicmotions
  output = _one_round(algorithms.build_algorithm('fedavg_capped', federated,
                                                 CONFIG))
  aggregator = output.metrics['aggregator']
  k = len(federated.client_ids)
  np.testing.assert_allclose(aggregator['max_share'], min(1.0, 2.0 / k),
                             rtol=1e-6)


def test_hgb_max_client_share_reaches_the_aggregation(basicmotions):
  federated, _ = basicmotions
  config = dataclasses.replace(CONFIG, max_client_share=0.4)
  output = _one_round(algorithms.build_algorithm('hgb', federated, config))
  np.testing.assert_allclose(output.metrics['aggregator']['max_share'], 0.4,
                             rtol=1e-6)
  # The literal modes ignore the switch (they are the paper's algorithm).
  paper = _one_round(algorithms.build_algorithm('hgb_paper', federated,
                                                config))
  assert 'max_share' not in paper.metrics['aggregator']


def test_hgb_shared_validation_sends_the_shared_set(basicmotions):
  federated, _ = basicmotions
  config = dataclasses.replace(CONFIG, validation_source='shared')
  algorithm = algorithms.build_algorithm('hgb', federated, config)
  cid = algorithm.client_ids[0]
  shared = algorithm.client_data(cid, 0)['held_out'].get_single_element()
  assert shared['val']['y'].shape[0] == federated.num_shared_val_examples
  assert federated.num_shared_val_examples > federated.num_val_examples(cid)
  output = _one_round(algorithm)
  weights = algorithm.process.get_model_weights(output.state)
  assert all(np.all(np.isfinite(w)) for w in weights.trainable)


def test_bad_switch_values_are_named():
  with pytest.raises(ValueError, match='max_client_share'):
    algorithms.AlgorithmConfig(max_client_share=1.5)
  with pytest.raises(ValueError, match='validation_source'):
    algorithms.AlgorithmConfig(validation_source='server')


def test_baselines_iterator_loop_trains_as_tffs_default_loop(basicmotions):
  # The registry runs baselines with the iterator loop for speed; a user who
  # builds TFF's FedAvg with its defaults (DATASET_REDUCE) gets the same model.
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  federated, _ = basicmotions
  config = dataclasses.replace(CONFIG, local_epochs=2)
  ours = algorithms.build_algorithm('fedavg', federated, config)
  assert (algorithms.BASELINE_LOOP ==
          tff.learning.LoopImplementation.DATASET_ITERATOR)
  theirs = tff.learning.algorithms.build_weighted_fed_avg(
      models.build_model_fn(federated.modalities, federated.num_classes,
                            config=config.model),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(
          learning_rate=config.client_learning_rate),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(
          learning_rate=config.server_learning_rate))
  weights = []
  for process in (ours.process, theirs):
    state = process.initialize()
    initial = process.get_model_weights(state).trainable
    for round_num in range(2):
      state = process.next(state, [ours.client_data(cid, round_num)
                                   for cid in ours.client_ids]).state
    weights.append(process.get_model_weights(state).trainable)
  assert max(np.max(np.abs(a - b)) for a, b in zip(weights[0], initial)) > 1e-3
  for a, b in zip(*weights):
    np.testing.assert_allclose(a, b, atol=1e-6)
