"""FedAttn: its defining properties, on the TFF runtime and in plain TF/NumPy."""

import collections

import algorithm_test_utils as utils
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb.algorithms import fedattn

_LR = 0.1
_EPSILON = fedattn.DEFAULT_EPSILON


def _np_fedattn_round(weights, clients, lr, epsilon):
  """Per layer: α = softmax_k(‖Δ_k‖_F); w ← w − ε Σ α_k Δ_k."""
  deltas = [utils.np_local_sgdm(*weights, batches, lr)[0]
            for batches in clients]
  new, alphas = [], []
  for layer, w in enumerate(weights):
    d = np.array([np.linalg.norm(delta[layer]) for delta in deltas])
    alpha = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
    alphas.append(alpha)
    new.append(w - epsilon * sum(a * delta[layer]
                                 for a, delta in zip(alpha, deltas)))
  return new, deltas, alphas


# ---------------------------------------------------------------------------
# The maths, without TFF.
# ---------------------------------------------------------------------------


def _sum_terms(deltas, weights, max_distance=fedattn.DEFAULT_MAX_DISTANCE):
  terms = [fedattn.attention_terms(d, tf.constant(w, tf.float32), max_distance)
           for d, w in zip(deltas, weights)]
  return tf.nest.map_structure(lambda *xs: tf.add_n(list(xs)), *terms)


def test_one_sum_then_division_is_the_per_layer_softmax():
  rng = np.random.default_rng(0)
  deltas = [[tf.constant(rng.normal(scale=s, size=(3, 2)), tf.float32),
             tf.constant(rng.normal(scale=s, size=(2,)), tf.float32)]
            for s in (0.5, 1.0, 2.0)]
  got = fedattn.attention_step(_sum_terms(deltas, [1.0, 1.0, 1.0]), 0.7)
  for layer in range(2):
    stacked = tf.stack([d[layer] for d in deltas])
    alpha = tf.nn.softmax(tf.stack([tf.norm(d[layer]) for d in deltas]))
    want = 0.7 * tf.tensordot(alpha, stacked, axes=1)
    np.testing.assert_allclose(got[layer].numpy(), want.numpy(), rtol=1e-5)


def test_excluded_client_contributes_nothing_even_if_its_delta_is_nan():
  deltas = [[tf.constant([1.0, 2.0])], [tf.constant([3.0, -1.0])],
            [tf.constant([np.nan, 1.0])]]
  with_nan = _sum_terms(deltas, [1.0, 1.0, 0.0])
  without = _sum_terms(deltas[:2], [1.0, 1.0])
  for got, want in zip(tf.nest.flatten(fedattn.attention_step(with_nan, 1.0)),
                       tf.nest.flatten(fedattn.attention_step(without, 1.0))):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
  assert float(with_nan[fedattn.EXCLUDED_KEY]) == 1.0


def test_clipping_keeps_huge_distances_finite():
  # Unclipped, exp(1000) overflows float32 and the result would be NaN.
  deltas = [[tf.constant([1000.0, 0.0])], [tf.constant([0.0, 1005.0])],
            [tf.constant([1.0, 0.0])]]
  got = fedattn.attention_step(_sum_terms(deltas, [1.0] * 3), 1.0)[0].numpy()
  assert np.all(np.isfinite(got))
  # Both far clients are clipped to the same distance: they share the
  # attention; the near one gets ~exp(1 - 50) of it.
  d = np.minimum([1000.0, 1005.0, 1.0], fedattn.DEFAULT_MAX_DISTANCE)
  alpha = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
  want = sum(a * np.array(x[0]) for a, x in zip(alpha, deltas))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(got, [500.0, 502.5], rtol=1e-5)


# ---------------------------------------------------------------------------
# The learning process, on the TFF runtime.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def process():
  return fedattn.build_fedattn_process(
      utils.linear_model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(_LR))


def test_equal_distances_give_the_plain_mean_of_deltas_times_epsilon(process):
  # From w = 0, one SGD step on a single example (x, y) gives
  # Δ_kernel = −2ηyx and Δ_bias = −2ηy. With x = e_k and |y| = 1, every client
  # is at the same distance in each layer, so α_k = 1/3: w ← −ε mean_k Δ_k.
  ys = [1.0, -1.0, 1.0]
  data = [utils.dataset(np.eye(utils.DIM)[k:k + 1], [[ys[k]]], 1)
          for k in range(3)]
  state = utils.with_weights(process, np.zeros((utils.DIM, 1)), np.zeros(1))
  out = process.next(state, data)
  deltas = [np.concatenate([-2 * _LR * ys[k] * np.eye(utils.DIM)[k],
                            [-2 * _LR * ys[k]]]) for k in range(3)]
  want = -_EPSILON * np.mean(deltas, axis=0)
  np.testing.assert_allclose(
      utils.flat(process.get_model_weights(out.state)), want, atol=1e-6)
  # i.e. kernel = 2εη y_k / 3 on coordinate k, bias = 2εη Σy / 3.
  np.testing.assert_allclose(want[:utils.DIM], [0.08, -0.08, 0.08], atol=1e-12)


def test_unequal_distances_match_numpy_reference(process):
  clients, data = [], []
  for seed, n, batch_size, scale in ((1, 4, 2, 0.5), (2, 6, 2, 1.0),
                                     (3, 8, 4, 3.0)):
    batches, ds = utils.linear_client(seed, n, batch_size, scale)
    clients.append(batches)
    data.append(ds)
  state = utils.with_weights(process, *utils.W0)
  ref = list(utils.W0)
  for round_num in range(2):
    start = ref
    ref, deltas, alphas = _np_fedattn_round(ref, clients, _LR, _EPSILON)
    state = process.next(state, data).state
    got = utils.flat(process.get_model_weights(state))
    np.testing.assert_allclose(got, np.concatenate([r.ravel() for r in ref]),
                               atol=1e-5)
    if round_num == 0:
      # Not a disguised plain mean: the attention is far from uniform.
      assert max(np.max(np.abs(a - 1 / 3)) for a in alphas) > 0.1
      plain = np.concatenate([
          (w - _EPSILON * np.mean([d[layer] for d in deltas], axis=0)).ravel()
          for layer, w in enumerate(start)])
      assert np.max(np.abs(got - plain)) > 1e-3


def test_non_finite_client_is_excluded_and_counted(process):
  _, a = utils.linear_client(4, 6, 2)
  _, b = utils.linear_client(5, 4, 4, scale=2.0)
  _, bad = utils.linear_client(6, 4, 2, nan=True)
  with_bad = utils.check_non_finite_client_is_left_out(
      process, [a, b], bad, counted_by='aggregator')
  assert with_bad.metrics['client_work']['train']['num_examples'] == 10


def test_type_signatures_and_learning_process_api(process):
  metrics_type = tff.FederatedType(collections.OrderedDict(
      distributor=(),
      client_work=collections.OrderedDict(
          train=collections.OrderedDict(
              loss=np.float32, num_examples=np.int64, num_batches=np.int64)),
      aggregator=collections.OrderedDict(
          model_aggregator=(), num_non_finite_clients=np.int32),
      finalizer=collections.OrderedDict(update_non_finite=np.int32),
  ), tff.SERVER)
  hparams = utils.check_learning_process_api(process, metrics_type)
  assert hparams['client_work']['learning_rate'] == pytest.approx(_LR)
  assert hparams['finalizer']['learning_rate'] == pytest.approx(1.0)


def test_round_splits_across_workers_with_the_same_result(process):
  # Checks FedAttn's single aggregation (see the helper).
  data = [utils.linear_client(s, 2 * s, 2, scale=s)[1] for s in (1, 2, 3)]
  utils.check_round_splits_across_workers(
      process, utils.with_weights(process, *utils.W0), data)


def test_argument_checks():
  utils.check_argument_checks(
      fedattn.build_fedattn_process,
      wrong_model_aggregator=tff.aggregators.MeanFactory(),
      value_errors={
          'epsilon': dict(epsilon=0.0),
          'max_distance': dict(max_distance=100.0),  # exp overflows float32.
      })
