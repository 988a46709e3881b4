"""Structured-weight aggregation: client-weight mixing and modality-aware means."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_hgb import aggregation
from tff_hgb import hgb
from tff_hgb import models
from tff_hgb.data import client_data
from tff_hgb.data import dataset as dataset_lib

# Three "variables": one of modality 0, one of modality 1, one shared.
VALUE_TYPE = tff.types.StructWithPythonType(
    [tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [2]),
     tff.TensorType(np.float32, [2])], list)
GROUPS = [0, 1, None]


def _weight(n, u, modalities):
  return collections.OrderedDict(num_examples=np.float32(n),
                                 ogr=np.float32(u),
                                 modalities=np.array(modalities, np.float32))


def _run(process, values, weights):
  state = process.initialize()
  return [np.asarray(v) for v in process.next(state, values, weights).result]


def _values():
  return [[np.full(2, 1.0, np.float32), np.full(2, 10.0, np.float32),
           np.full(2, 100.0, np.float32)],
          [np.full(2, 3.0, np.float32), np.full(2, 30.0, np.float32),
           np.full(2, 300.0, np.float32)]]


def test_mix_interpolates_between_example_and_ogr_weighting():
  weights = [_weight(10, 3, [1, 1]), _weight(30, 1, [1, 1])]
  for mix in (0.0, 0.25, 1.0):
    process = aggregation.build_structured_mean(VALUE_TYPE, 2,
                                                client_weight_mix=mix)
    result = _run(process, _values(), weights)
    p = (1 - mix) * np.array([10, 30]) / 40 + mix * np.array([3, 1]) / 4
    expected = [p[0] * a + p[1] * b for a, b in zip(*_values())]
    for got, want in zip(result, expected):
      np.testing.assert_allclose(got, want, rtol=1e-6)


def test_modality_aware_mean_ignores_clients_without_the_modality():
  # Client 0 lacks modality 1: its (zero) update must not dilute modality 1's.
  weights = [_weight(10, 2, [1, 0]), _weight(30, 2, [1, 1])]
  process = aggregation.build_structured_mean(
      VALUE_TYPE, 2, client_weight_mix=1.0, variable_groups=GROUPS)
  modality0, modality1, shared = _run(process, _values(), weights)
  np.testing.assert_allclose(modality0, [2.0, 2.0])      # both, equal u
  np.testing.assert_allclose(modality1, [30.0, 30.0])    # only client 1
  np.testing.assert_allclose(shared, [200.0, 200.0])     # both
  # Without modality awareness the same inputs give the plain weighted mean.
  plain = aggregation.build_structured_mean(VALUE_TYPE, 2,
                                            client_weight_mix=1.0)
  np.testing.assert_allclose(_run(plain, _values(), weights)[1], [20.0, 20.0])


def test_a_modality_nobody_holds_gets_a_zero_update():
  weights = [_weight(10, 2, [1, 0]), _weight(30, 2, [1, 0])]
  process = aggregation.build_structured_mean(
      VALUE_TYPE, 2, client_weight_mix=0.5, variable_groups=GROUPS)
  np.testing.assert_allclose(_run(process, _values(), weights)[1], [0.0, 0.0])


def test_bad_arguments():
  with pytest.raises(ValueError, match='client_weight_mix'):
    aggregation.build_structured_mean(VALUE_TYPE, 2, client_weight_mix=1.5)
  with pytest.raises(ValueError, match='variable_groups'):
    aggregation.build_structured_mean(VALUE_TYPE, 2, variable_groups=[0])


def test_hgb_process_with_modality_aware_and_mixed_weights_runs():
  mods = [dataset_lib.ModalitySpec('a', 'vector', (5,)),
          dataset_lib.ModalitySpec('b', 'vector', (3,))]
  rng = np.random.default_rng(0)

  def client(n, presence_b):
    ds = dataset_lib.MultiModalDataset(
        't', mods, {'a': rng.normal(size=(n, 5)).astype(np.float32),
                    'b': rng.normal(size=(n, 3)).astype(np.float32)},
        rng.integers(0, 3, n), ['x', 'y', 'z'],
        presence={'a': np.ones(n, np.float32),
                  'b': np.full(n, presence_b, np.float32)})
    examples = dataset_lib.to_tf_dataset(ds)
    return collections.OrderedDict(
        train=examples.take(n - 4).batch(4),
        held_out=client_data.held_out_dataset(
            probe=examples.take(4).batch(4), val=examples.skip(n - 4).batch(4)))

  clients = [client(16, 1.0), client(16, 0.0)]
  model_fn = models.build_model_fn(mods, 3)
  process = hgb.build_hgb_process(
      model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
      modality_aware=True, client_weight_mix=0.5)
  state = process.initialize()
  output = process.next(state, clients)
  effective = output.metrics['client_work']['hgb'][
      'client_weight/effective_clients']
  assert 1.0 <= effective <= 2.0
  before = process.get_model_weights(state).trainable
  after = process.get_model_weights(output.state).trainable
  assert any(np.max(np.abs(x - y)) > 0 for x, y in zip(before, after))
  with pytest.raises(ValueError, match='model_aggregator'):
    hgb.build_hgb_process(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1),
        modality_aware=True, model_aggregator=tff.aggregators.MeanFactory())


# ---- Capped shares (max_client_share). ----


def _reference_capped_shares(weights, cap):
  """Exact water-filling in NumPy: shares ≤ cap, the rest keep proportions."""
  weights = np.asarray(weights, np.float64)
  capped = np.zeros(len(weights), bool)
  while True:
    free = weights[~capped].sum()
    room = 1.0 - cap * capped.sum()
    shares = np.where(capped, cap, weights * room / free)
    over = (shares > cap + 1e-12) & ~capped
    if not over.any():
      return shares
    capped |= over


def _capped_mean(factory, weights):
  process = factory.create(tff.TensorType(np.float32, [3]),
                           tff.TensorType(np.float32))
  values = [np.array([k, 1.0, -k], np.float32) for k in range(len(weights))]
  out = process.next(process.initialize(), values,
                     [np.float32(w) for w in weights])
  return np.asarray(out.result), out.measurements, np.stack(values)


@pytest.mark.parametrize('weights,cap', [
    ([100.0, 1.0, 1.0, 1.0, 2.0], 0.3),   # one dominant client
    ([50.0, 40.0, 1.0, 2.0, 3.0, 4.0], 0.25),  # two, found in two passes
    ([1.0, 2.0, 3.0, 4.0], 0.5),           # already under the cap
    ([5.0, 5.0, 5.0, 5.0], 0.25),          # at the cap exactly
])
def test_capped_mean_matches_exact_water_filling(weights, cap):
  result, measurements, values = _capped_mean(
      aggregation.CappedMeanFactory(cap), weights)
  shares = _reference_capped_shares(weights, cap)
  assert shares.max() <= cap + 1e-9
  np.testing.assert_allclose(result, shares @ values, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(measurements['max_share'], cap, rtol=1e-6)


def test_cap_relative_to_uniform_share_uses_the_rounds_client_count():
  weights = [100.0, 1.0, 1.0, 1.0, 2.0, 3.0, 1.0, 1.0]
  result, measurements, values = _capped_mean(
      aggregation.CappedMeanFactory(max_share_over_uniform=2.0), weights)
  np.testing.assert_allclose(measurements['max_share'], 2.0 / 8, rtol=1e-6)
  assert measurements['capped_clients'] == 1.0
  shares = _reference_capped_shares(weights, 2.0 / 8)
  np.testing.assert_allclose(result, shares @ values, rtol=1e-5, atol=1e-5)
  uncapped = np.asarray(weights) / np.sum(weights)
  assert not np.allclose(result, uncapped @ values, atol=1e-2)


def test_infeasible_cap_leaves_capped_clients_equal():
  # 3 clients cannot all stay under 0.2: the best is equal shares.
  result, _, values = _capped_mean(aggregation.CappedMeanFactory(0.2),
                                   [9.0, 3.0, 1.0])
  np.testing.assert_allclose(result, values.mean(axis=0), rtol=1e-5)


def test_capped_mean_bad_arguments():
  with pytest.raises(ValueError, match='exactly one'):
    aggregation.CappedMeanFactory()
  with pytest.raises(ValueError, match='max_share must'):
    aggregation.CappedMeanFactory(1.5)
  with pytest.raises(ValueError, match='max_share_over_uniform'):
    aggregation.CappedMeanFactory(max_share_over_uniform=0.5)
