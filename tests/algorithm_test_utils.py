"""What the tests of our learning processes (FedNova, FedAttn) share.

A linear model with MSE loss (local SGD has a closed form in NumPy), its
clients, a NumPy reference of local momentum SGD, and checks every learning
process must pass: its type signatures and model-weights API, and a round that
gives the same result split across two workers.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import runtime

DIM = 3
# Initial weights (kernel, bias) of the linear model for the reference runs.
W0 = (np.array([[0.2], [-0.1], [0.4]], np.float32), np.array([0.1], np.float32))
_TRUE_KERNEL = np.array([[1.0], [-2.0], [0.5]])


def linear_model_fn():
  """y = x·w + b with MSE loss: local SGD has a closed form in NumPy."""
  keras_model = tf.keras.Sequential(
      [tf.keras.layers.Input((DIM,)),
       tf.keras.layers.Dense(1, kernel_initializer='zeros')])
  return tff.learning.models.from_keras_model(
      keras_model, loss=tf.keras.losses.MeanSquaredError(),
      input_spec=(tf.TensorSpec([None, DIM], tf.float32),
                  tf.TensorSpec([None, 1], tf.float32)))


# The federated type of one round's client data for `linear_model_fn`.
LINEAR_DATA_TYPE = tff.FederatedType(
    tff.SequenceType(((np.float32, [None, DIM]), (np.float32, [None, 1]))),
    tff.CLIENTS)


def dataset(x, y, batch_size):
  return tf.data.Dataset.from_tensor_slices(
      (np.asarray(x, np.float32), np.asarray(y, np.float32))).batch(batch_size)


def linear_client(seed, num_examples, batch_size, scale=1.0, nan=False):
  """A client of the linear model: (NumPy batches, the same as a dataset).

  y = scale·(x·w* + 0.3) + noise; with `nan`, every x is NaN (the client's
  update is not finite).
  """
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(num_examples, DIM)).astype(np.float32)
  y = (scale * (x @ _TRUE_KERNEL + 0.3) +
       rng.normal(scale=0.5, size=(num_examples, 1))).astype(np.float32)
  if nan:
    x[:] = np.nan
  batches = [(x[i:i + batch_size], y[i:i + batch_size])
             for i in range(0, num_examples, batch_size)]
  return batches, dataset(x, y, batch_size)


def np_local_sgdm(kernel, bias, batches, lr, rho=0.0):
  """Heavy-ball SGD (v ← ρv + g; w ← w − ηv) on the MSE of the linear model.

  Returns:
    `((Δ_kernel, Δ_bias), number of steps, number of examples)`, Δ = initial
    weights − trained ones, in float64.
  """
  w = kernel.astype(np.float64).copy()
  b = bias.astype(np.float64).copy()
  vw, vb = np.zeros_like(w), np.zeros_like(b)
  for x, y in batches:
    r = x @ w + b - y
    gw = 2.0 / len(x) * x.T @ r
    gb = 2.0 / len(x) * r.sum(axis=0)
    vw, vb = rho * vw + gw, rho * vb + gb
    w, b = w - lr * vw, b - lr * vb
  return (kernel - w, bias - b), len(batches), sum(len(x) for x, _ in batches)


def flat(model_weights):
  """The trainable weights as one vector."""
  return np.concatenate([np.ravel(w) for w in model_weights.trainable])


def with_weights(process, kernel, bias):
  """A fresh state of `process` whose linear model has these weights."""
  return process.set_model_weights(
      process.initialize(), tff.learning.models.ModelWeights(
          trainable=[np.asarray(kernel, np.float32),
                     np.asarray(bias, np.float32)], non_trainable=[]))


def check_learning_process_api(process, metrics_type):
  """Checks a process over `linear_model_fn` against the LearningProcess API.

  Its `initialize`/`next` types (the state holds the model's weights, `next`
  takes `LINEAR_DATA_TYPE` and returns metrics of `metrics_type`), and that
  `set_model_weights` then `get_model_weights` is the identity.

  Returns:
    `process.get_hparams` of a state holding `W0`.
  """
  assert isinstance(process, tff.learning.templates.LearningProcess)
  weights_type = tff.learning.models.weights_type_from_model(linear_model_fn)
  state_type = process.initialize.type_signature.result
  assert process.initialize.type_signature.parameter is None
  assert state_type.placement == tff.SERVER
  assert state_type.member.global_model_weights.is_equivalent_to(weights_type)
  state_param, data_param = process.next.type_signature.parameter
  assert state_param.is_equivalent_to(state_type)
  assert data_param.is_equivalent_to(LINEAR_DATA_TYPE)
  assert process.next.type_signature.result.state.is_equivalent_to(state_type)
  assert process.next.type_signature.result.metrics.is_equivalent_to(
      metrics_type)
  assert process.get_model_weights.type_signature.result.is_equivalent_to(
      weights_type)
  state = with_weights(process, *W0)
  got = process.get_model_weights(state)
  np.testing.assert_array_equal(got.trainable[0], W0[0])
  np.testing.assert_array_equal(got.trainable[1], W0[1])
  return process.get_hparams(state)


def check_non_finite_client_is_left_out(process, data, bad, counted_by):
  """A round with the diverged client `bad` is the round without it, counted.

  From `W0`, the round with `bad` gives the same (finite) model as the one
  without it and the same training metrics; `bad` is counted in
  `metrics[counted_by]['num_non_finite_clients']`, and the server update is
  finite.

  Returns:
    The output of `process.next` with `bad`.
  """
  state = with_weights(process, *W0)
  with_bad = process.next(state, data + [bad])
  without = process.next(state, data)
  weights = flat(process.get_model_weights(with_bad.state))
  np.testing.assert_allclose(
      weights, flat(process.get_model_weights(without.state)), atol=1e-7)
  assert np.all(np.isfinite(weights))
  assert with_bad.metrics[counted_by]['num_non_finite_clients'] == 1
  assert without.metrics[counted_by]['num_non_finite_clients'] == 0
  assert (with_bad.metrics['client_work']['train']['num_examples'] ==
          without.metrics['client_work']['train']['num_examples'])
  assert with_bad.metrics['finalizer']['update_non_finite'] == 0
  return with_bad


def check_round_splits_across_workers(process, state, data):
  """One round run locally and on two workers gives the same model.

  TFF's mergeable context refuses an aggregation that depends on another, so
  this also checks that the process aggregates in one step.

  Returns:
    The output of the round run on two workers.
  """
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
  np.testing.assert_allclose(flat(process.get_model_weights(merged.state)),
                             flat(process.get_model_weights(local.state)),
                             atol=1e-6)
  return merged


def check_argument_checks(build_fn, *, wrong_model_aggregator, value_errors):
  """`build_fn(model_fn, client_optimizer_fn=..., ...)` rejects bad arguments.

  Args:
    build_fn: the process builder.
    wrong_model_aggregator: an aggregation factory of the kind the builder
      does not take.
    value_errors: {pattern of the message: keyword arguments (over
      `client_optimizer_fn` = SGD) that must raise a ValueError matching it},
      for the algorithm's own arguments.

  Also checks the arguments every builder takes: a Keras optimizer (TFF's
  composable processes take `tff.learning.optimizers.Optimizer`s) as the
  client or server optimizer, `wrong_model_aggregator` and a model in place
  of `model_fn` each raise a TypeError naming the argument.
  """
  sgd = tff.learning.optimizers.build_sgdm(0.1)
  for match, kwargs in value_errors.items():
    with pytest.raises(ValueError, match=match):
      build_fn(linear_model_fn, **{'client_optimizer_fn': sgd, **kwargs})
  with pytest.raises(TypeError, match='client_optimizer_fn'):
    build_fn(linear_model_fn, client_optimizer_fn=tf.keras.optimizers.SGD())
  with pytest.raises(TypeError, match='server_optimizer_fn'):
    build_fn(linear_model_fn, client_optimizer_fn=sgd,
             server_optimizer_fn=tf.keras.optimizers.SGD())
  with pytest.raises(TypeError, match='model_aggregator'):
    build_fn(linear_model_fn, client_optimizer_fn=sgd,
             model_aggregator=wrong_model_aggregator)
  with pytest.raises(TypeError, match='model_fn'):
    build_fn(linear_model_fn(), client_optimizer_fn=sgd)
