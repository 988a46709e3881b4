"""FedAttn: its defining properties, on the TFF runtime and in plain TF/NumPy."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import runtime
from tff_hgb.algorithms import fedattn

_DIM = 3
_LR = 0.1
_EPSILON = fedattn.DEFAULT_EPSILON


def _linear_model_fn():
  """y = x·w + b with MSE loss: local SGD has a closed form in NumPy."""
  keras_model = tf.keras.Sequential(
      [tf.keras.layers.Input((_DIM,)),
       tf.keras.layers.Dense(1, kernel_initializer='zeros')])
  return tff.learning.models.from_keras_model(
      keras_model, loss=tf.keras.losses.MeanSquaredError(),
      input_spec=(tf.TensorSpec([None, _DIM], tf.float32),
                  tf.TensorSpec([None, 1], tf.float32)))


def _dataset(x, y, batch_size):
  return tf.data.Dataset.from_tensor_slices(
      (np.asarray(x, np.float32), np.asarray(y, np.float32))).batch(batch_size)


def _random_client(seed, num_examples, batch_size, scale=1.0, nan=False):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_examples, _DIM)).astype(np.float32)
  y = (scale * (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3) +
       rng.normal(scale=0.5, size=(num_examples, 1))).astype(np.float32)
  if nan:
    x[:] = np.nan
  batches = [(x[i:i + batch_size], y[i:i + batch_size])
             for i in range(0, num_examples, batch_size)]
  return batches, _dataset(x, y, batch_size)


def _np_local_sgd(kernel, bias, batches, lr):
  w, b = kernel.astype(np.float64), bias.astype(np.float64)
  for x, y in batches:
    r = x @ w + b - y
    w = w - lr * 2.0 / len(x) * x.T @ r
    b = b - lr * 2.0 / len(x) * r.sum(axis=0)
  return [kernel - w, bias - b]


def _np_fedattn_round(weights, clients, lr, epsilon):
  """Per layer: α = softmax_k(‖Δ_k‖_F); w ← w − ε Σ α_k Δ_k."""
  deltas = [_np_local_sgd(*weights, batches, lr) for batches in clients]
  new, alphas = [], []
  for layer, w in enumerate(weights):
    d = np.array([np.linalg.norm(delta[layer]) for delta in deltas])
    alpha = np.exp(d - d.max()) / np.exp(d - d.max()).sum()
    alphas.append(alpha)
    new.append(w - epsilon * sum(a * delta[layer]
                                 for a, delta in zip(alpha, deltas)))
  return new, deltas, alphas


def _flat(model_weights):
  return np.concatenate([np.ravel(w) for w in model_weights.trainable])


def _with_weights(process, kernel, bias):
  return process.set_model_weights(
      process.initialize(), tff.learning.models.ModelWeights(
          trainable=[np.asarray(kernel, np.float32),
                     np.asarray(bias, np.float32)], non_trainable=[]))


_W0 = (np.array([[0.2], [-0.1], [0.4]]), np.array([0.1]))


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
      _linear_model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(_LR))


def test_equal_distances_give_the_plain_mean_of_deltas_times_epsilon(process):
  # From w = 0, one SGD step on a single example (x, y) gives
  # Δ_kernel = −2ηyx and Δ_bias = −2ηy. With x = e_k and |y| = 1, every client
  # is at the same distance in each layer, so α_k = 1/3: w ← −ε mean_k Δ_k.
  ys = [1.0, -1.0, 1.0]
  data = [_dataset(np.eye(_DIM)[k:k + 1], [[ys[k]]], 1) for k in range(3)]
  state = _with_weights(process, np.zeros((_DIM, 1)), np.zeros(1))
  out = process.next(state, data)
  deltas = [np.concatenate([-2 * _LR * ys[k] * np.eye(_DIM)[k],
                            [-2 * _LR * ys[k]]]) for k in range(3)]
  want = -_EPSILON * np.mean(deltas, axis=0)
  np.testing.assert_allclose(_flat(process.get_model_weights(out.state)), want,
                             atol=1e-6)
  # i.e. kernel = 2εη y_k / 3 on coordinate k, bias = 2εη Σy / 3.
  np.testing.assert_allclose(want[:_DIM], [0.08, -0.08, 0.08], atol=1e-12)


def test_unequal_distances_match_numpy_reference(process):
  clients, data = [], []
  for seed, n, batch_size, scale in ((1, 4, 2, 0.5), (2, 6, 2, 1.0),
                                     (3, 8, 4, 3.0)):
    batches, ds = _random_client(seed, n, batch_size, scale)
    clients.append(batches)
    data.append(ds)
  state = _with_weights(process, *_W0)
  ref = list(_W0)
  for round_num in range(2):
    start = ref
    ref, deltas, alphas = _np_fedattn_round(ref, clients, _LR, _EPSILON)
    state = process.next(state, data).state
    got = _flat(process.get_model_weights(state))
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
  _, a = _random_client(4, 6, 2)
  _, b = _random_client(5, 4, 4, scale=2.0)
  _, bad = _random_client(6, 4, 2, nan=True)
  state = _with_weights(process, *_W0)
  with_bad = process.next(state, [a, b, bad])
  without = process.next(state, [a, b])
  np.testing.assert_allclose(_flat(process.get_model_weights(with_bad.state)),
                             _flat(process.get_model_weights(without.state)),
                             atol=1e-7)
  assert with_bad.metrics['aggregator']['num_non_finite_clients'] == 1
  assert without.metrics['aggregator']['num_non_finite_clients'] == 0
  assert with_bad.metrics['client_work']['train']['num_examples'] == 10
  assert with_bad.metrics['finalizer']['update_non_finite'] == 0


def test_type_signatures_and_learning_process_api(process):
  assert isinstance(process, tff.learning.templates.LearningProcess)
  weights_type = tff.learning.models.weights_type_from_model(_linear_model_fn)
  data_type = tff.FederatedType(
      tff.SequenceType(((np.float32, [None, _DIM]), (np.float32, [None, 1]))),
      tff.CLIENTS)
  state_type = process.initialize.type_signature.result
  assert process.initialize.type_signature.parameter is None
  assert state_type.placement == tff.SERVER
  assert state_type.member.global_model_weights.is_equivalent_to(weights_type)
  state_param, data_param = process.next.type_signature.parameter
  assert state_param.is_equivalent_to(state_type)
  assert data_param.is_equivalent_to(data_type)
  assert process.next.type_signature.result.state.is_equivalent_to(state_type)
  metrics_type = tff.FederatedType(collections.OrderedDict(
      distributor=(),
      client_work=collections.OrderedDict(
          train=collections.OrderedDict(
              loss=np.float32, num_examples=np.int64, num_batches=np.int64)),
      aggregator=collections.OrderedDict(
          model_aggregator=(), num_non_finite_clients=np.int32),
      finalizer=collections.OrderedDict(update_non_finite=np.int32),
  ), tff.SERVER)
  assert process.next.type_signature.result.metrics.is_equivalent_to(
      metrics_type)
  assert process.get_model_weights.type_signature.result.is_equivalent_to(
      weights_type)
  state = _with_weights(process, *_W0)
  got = process.get_model_weights(state)
  np.testing.assert_allclose(got.trainable[0], _W0[0])
  np.testing.assert_allclose(got.trainable[1], _W0[1])
  hparams = process.get_hparams(state)
  assert hparams['client_work']['learning_rate'] == pytest.approx(_LR)
  assert hparams['finalizer']['learning_rate'] == pytest.approx(1.0)


def test_round_splits_across_workers_with_the_same_result(process):
  # TFF's mergeable context refuses an aggregation that depends on another:
  # running the round on two workers checks FedAttn's single aggregation.
  data = [_random_client(s, 2 * s, 2, scale=s)[1] for s in (1, 2, 3)]
  state = _with_weights(process, *_W0)
  local = process.next(state, data)
  stack = tff.framework.get_context_stack()
  saved, before = stack.current, runtime.started_workers()
  try:
    runtime.set_multi_worker_context(local_workers=2)
    merged = process.next(state, data)
  finally:
    stack.set_default_context(saved)
    for worker in runtime.started_workers():
      if worker not in before:
        worker.stop()
  np.testing.assert_allclose(_flat(process.get_model_weights(merged.state)),
                             _flat(process.get_model_weights(local.state)),
                             atol=1e-6)


def test_argument_checks():
  sgd = tff.learning.optimizers.build_sgdm(0.1)
  with pytest.raises(ValueError, match='epsilon'):
    fedattn.build_fedattn_process(_linear_model_fn, client_optimizer_fn=sgd,
                                  epsilon=0.0)
  with pytest.raises(ValueError, match='max_distance'):
    fedattn.build_fedattn_process(_linear_model_fn, client_optimizer_fn=sgd,
                                  max_distance=100.0)
  with pytest.raises(TypeError, match='client_optimizer_fn'):
    fedattn.build_fedattn_process(_linear_model_fn,
                                  client_optimizer_fn=tf.keras.optimizers.SGD())
  with pytest.raises(TypeError, match='model_aggregator'):
    fedattn.build_fedattn_process(
        _linear_model_fn, client_optimizer_fn=sgd,
        model_aggregator=tff.aggregators.MeanFactory())
