"""FedNova: its defining properties, on the TFF runtime and in plain TF/NumPy."""

import collections

import algorithm_test_utils as utils
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb.algorithms import fednova

_LR = 0.05


# ---------------------------------------------------------------------------
# Models, data and an independent NumPy reference (shared ones: in
# algorithm_test_utils).
# ---------------------------------------------------------------------------


def _mlp_model_fn():
  keras_model = tf.keras.Sequential([
      tf.keras.layers.Input((4,)),
      tf.keras.layers.Dense(5, activation='relu'),
      tf.keras.layers.Dense(3),
  ])
  return tff.learning.models.from_keras_model(
      keras_model,
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=(tf.TensorSpec([None, 4], tf.float32),
                  tf.TensorSpec([None], tf.int32)),
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()])


def _np_a(tau, rho):
  return sum((1 - rho**t) / (1 - rho) for t in range(1, tau + 1))


def _np_round(weights, clients, lr, rho, nova):
  """One FedNova (nova=True) or FedAvg round; returns new weights + details."""
  results = [utils.np_local_sgdm(*weights, batches, lr, rho)
             for batches in clients]
  deltas = [np.concatenate([d[0].ravel(), d[1].ravel()]) for d, _, _ in results]
  taus = np.array([tau for _, tau, _ in results])
  n = np.array([n for _, _, n in results], np.float64)
  p = n / n.sum()
  a = np.array([_np_a(tau, rho) for tau in taus])
  if nova:
    delta = np.dot(p, a) * sum(pk * dk / ak for pk, dk, ak in zip(p, deltas, a))
  else:
    delta = sum(pk * dk for pk, dk in zip(p, deltas))
  flat = np.concatenate([weights[0].ravel(), weights[1].ravel()]) - delta
  new = (flat[:utils.DIM].reshape(utils.DIM, 1), flat[utils.DIM:])
  return new, dict(deltas=deltas, p=p, a=a, taus=taus)


# ---------------------------------------------------------------------------
# The maths, without TFF.
# ---------------------------------------------------------------------------


def test_normalizing_factor_matches_its_definition():
  for rho in (0.0, 0.5, 0.9, 0.99):
    for tau in (0, 1, 2, 5, 17, 100):
      got = float(fednova.normalizing_factor(tf.constant(tau, tf.int64), rho))
      np.testing.assert_allclose(got, _np_a(tau, rho), rtol=1e-6, atol=1e-6)
  # No momentum: a_k is the number of steps, exactly.
  assert float(fednova.normalizing_factor(tf.constant(7, tf.int64), 0.0)) == 7.0


def test_normalizing_factor_is_the_effective_step_count_of_client_sgdm():
  # With a constant gradient g, τ steps of TFF's momentum SGD move the weights
  # by exactly η a g: a_k is the number of plain-SGD steps they amount to.
  g = tf.constant([0.3, -1.0])
  for rho, tau in ((0.0, 4), (0.5, 6), (0.9, 9)):
    optimizer = tff.learning.optimizers.build_sgdm(0.1, momentum=rho or None)
    state = optimizer.initialize(tf.TensorSpec([2], tf.float32))
    w = tf.zeros([2])
    for _ in range(tau):
      state, w = optimizer.next(state, w, g)
    a = float(fednova.normalizing_factor(tau, rho))
    np.testing.assert_allclose(-w.numpy(), 0.1 * a * g.numpy(), rtol=1e-5)


def test_server_formula_from_one_weighted_mean():
  rng = np.random.default_rng(1)
  deltas = [[rng.normal(size=(2, 3)), rng.normal(size=(3,))] for _ in range(3)]
  taus, n, rho = [2, 5, 9], np.array([10.0, 30.0, 60.0]), 0.5
  updates = [
      fednova.normalize_update(
          [tf.constant(x, tf.float32) for x in d],
          fednova.normalizing_factor(tau, rho)) for d, tau in zip(deltas, taus)
  ]
  mean = tf.nest.map_structure(
      lambda *xs: sum(w * x for w, x in zip(n, xs)) / n.sum(), *updates)
  got = fednova.denormalize_update(mean)
  p, a = n / n.sum(), np.array([_np_a(t, rho) for t in taus])
  for layer in range(2):
    want = np.dot(p, a) * sum(
        pk * d[layer] / ak for pk, d, ak in zip(p, deltas, a))
    np.testing.assert_allclose(got[layer].numpy(), want, rtol=1e-5)


# ---------------------------------------------------------------------------
# The learning process, on the TFF runtime.
# ---------------------------------------------------------------------------


@pytest.fixture(scope='module')
def linear_processes():
  rho = 0.5
  optimizer = tff.learning.optimizers.build_sgdm(_LR, momentum=rho)
  nova = fednova.build_fednova_process(
      utils.linear_model_fn, client_optimizer_fn=optimizer, client_momentum=rho)
  avg = tff.learning.algorithms.build_weighted_fed_avg(
      utils.linear_model_fn, client_optimizer_fn=optimizer)
  return nova, avg, rho


def test_equals_fedavg_when_all_clients_take_the_same_number_of_steps():
  optimizer = tff.learning.optimizers.build_sgdm(0.1, momentum=0.9)
  nova = fednova.build_fednova_process(
      _mlp_model_fn, client_optimizer_fn=optimizer, client_momentum=0.9)
  avg = tff.learning.algorithms.build_weighted_fed_avg(
      _mlp_model_fn, client_optimizer_fn=optimizer)
  rng = np.random.default_rng(2)
  # Three batches each, but different batch sizes: equal τ_k, unequal n_k.
  data = []
  for batch_size in (2, 3, 4):
    x = rng.normal(size=(3 * batch_size, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=3 * batch_size).astype(np.int32)
    data.append(tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size))
  avg_state = avg.initialize()
  nova_state = nova.set_model_weights(nova.initialize(),
                                      avg.get_model_weights(avg_state))
  for _ in range(2):
    avg_out = avg.next(avg_state, data)
    nova_out = nova.next(nova_state, data)
    avg_state, nova_state = avg_out.state, nova_out.state
    assert nova_out.metrics['client_work']['mean_local_steps'] == 3.0
    np.testing.assert_allclose(
        nova_out.metrics['client_work']['train']['loss'],
        avg_out.metrics['client_work']['train']['loss'], rtol=1e-5)
  moved = np.max(np.abs(utils.flat(avg.get_model_weights(avg_state)) -
                        utils.flat(avg.get_model_weights(avg.initialize()))))
  diff = np.max(np.abs(utils.flat(nova.get_model_weights(nova_state)) -
                       utils.flat(avg.get_model_weights(avg_state))))
  assert moved > 1e-2  # The comparison is not vacuous.
  assert diff <= 1e-5


def test_unequal_steps_match_numpy_reference_and_damp_the_long_client(
    linear_processes):
  nova, avg, rho = linear_processes
  short, short_ds = utils.linear_client(3, num_examples=4, batch_size=2)  # τ=2
  long, long_ds = utils.linear_client(4, num_examples=16, batch_size=2)   # τ=8
  clients, data = [short, long], [short_ds, long_ds]

  nova_state = utils.with_weights(nova, *utils.W0)
  avg_state = utils.with_weights(avg, *utils.W0)
  ref_nova, ref_avg = utils.W0, utils.W0
  for round_num in range(2):
    start = ref_nova
    ref_nova, info = _np_round(ref_nova, clients, _LR, rho, nova=True)
    ref_avg, _ = _np_round(ref_avg, clients, _LR, rho, nova=False)
    nova_out = nova.next(nova_state, data)
    avg_out = avg.next(avg_state, data)
    nova_state, avg_state = nova_out.state, avg_out.state
    got_nova = utils.flat(nova.get_model_weights(nova_state))
    got_avg = utils.flat(avg.get_model_weights(avg_state))
    # TFF FedNova == NumPy FedNova; TFF FedAvg == NumPy FedAvg (which checks
    # the reference's local training itself).
    np.testing.assert_allclose(got_nova, np.concatenate(
        [ref_nova[0].ravel(), ref_nova[1]]), atol=1e-5)
    np.testing.assert_allclose(got_avg, np.concatenate(
        [ref_avg[0].ravel(), ref_avg[1]]), atol=1e-5)
    np.testing.assert_allclose(
        nova_out.metrics['aggregator']['mean_normalizing_factor'],
        np.dot(info['p'], info['a']), rtol=1e-6)
    assert nova_out.metrics['client_work']['mean_local_steps'] == 5.0
    if round_num == 0:
      # The server delta, written as c_short Δ_short + c_long Δ_long.
      delta = utils.flat(tff.learning.models.ModelWeights(
          trainable=list(start), non_trainable=[])) - got_nova
      coefs, *_ = np.linalg.lstsq(np.stack(info['deltas'], axis=1), delta,
                                  rcond=None)
      p, a = info['p'], info['a']
      # FedAvg would weigh them p_long/p_short = 4; FedNova divides each by
      # its effective number of steps: the long client's influence relative
      # to the short one shrinks by a_short/a_long.
      np.testing.assert_allclose(coefs[1] / coefs[0],
                                 (p[1] / a[1]) / (p[0] / a[0]), rtol=1e-4)
      assert coefs[1] / coefs[0] < 0.5 * p[1] / p[0]
      assert np.max(np.abs(got_nova - got_avg)) > 1e-3


def test_non_finite_client_gets_weight_zero_and_is_counted(linear_processes):
  nova, _, _ = linear_processes
  _, a = utils.linear_client(5, num_examples=6, batch_size=2)
  _, b = utils.linear_client(6, num_examples=8, batch_size=4)
  _, bad = utils.linear_client(7, num_examples=4, batch_size=2, nan=True)
  with_bad = utils.check_non_finite_client_is_left_out(
      nova, [a, b], bad, counted_by='client_work')
  # The diverged client's training metrics are left out as well.
  assert with_bad.metrics['client_work']['train']['num_examples'] == 14


def test_type_signatures_and_learning_process_api(linear_processes):
  nova, _, _ = linear_processes
  metrics_type = tff.FederatedType(collections.OrderedDict(
      distributor=(),
      client_work=collections.OrderedDict(
          train=collections.OrderedDict(
              loss=np.float32, num_examples=np.int64, num_batches=np.int64),
          mean_local_steps=np.float32,
          num_non_finite_clients=np.int32),
      aggregator=collections.OrderedDict(
          model_aggregator=collections.OrderedDict(mean_value=(),
                                                   mean_weight=()),
          mean_normalizing_factor=np.float32),
      finalizer=collections.OrderedDict(update_non_finite=np.int32),
  ), tff.SERVER)
  hparams = utils.check_learning_process_api(nova, metrics_type)
  assert hparams['client_work']['momentum'] == pytest.approx(0.5)
  assert hparams['finalizer']['learning_rate'] == pytest.approx(1.0)


def test_round_splits_across_workers_with_the_same_result(linear_processes):
  # Checks FedNova's single aggregation (see the helper).
  nova, _, _ = linear_processes
  data = [utils.linear_client(s, num_examples=2 * s, batch_size=2)[1]
          for s in (1, 2, 3)]
  merged = utils.check_round_splits_across_workers(
      nova, utils.with_weights(nova, *utils.W0), data)
  assert merged.metrics['client_work']['mean_local_steps'] == pytest.approx(2.0)


def test_argument_checks():
  momentum_sgd = tff.learning.optimizers.build_sgdm(0.1, momentum=0.9)
  utils.check_argument_checks(
      fednova.build_fednova_process,
      wrong_model_aggregator=tff.aggregators.SumFactory(),
      value_errors={
          # The optimizer's momentum is not client_momentum (default 0).
          'momentum': dict(client_optimizer_fn=momentum_sgd),
          'client_momentum': dict(client_momentum=1.0),
      })
