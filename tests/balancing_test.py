"""MMPareto and OGM(-GE) (ALGORITHM.md §9): maths, one local step, processes.

One local step of each is checked against an independent NumPy reference on
a tiny model (tanh encoders, linear heads: the gradients have a closed form);
the processes against FedAvg, on the TFF runtime.
"""

import collections
import dataclasses

import algorithm_test_utils as utils
import numpy as np
import pytest
import tensorflow as tf

from tff_hgb import algorithms
from tff_hgb import balancing
from tff_hgb import models
from tff_hgb.algorithms import balanced
from tff_hgb.data import client_data
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import datasets
from tff_hgb.data import partition
from tff_hgb.experiment import config as config_lib

_LR = 0.1
_DIMS = {'a': 3, 'b': 2}
_FEATURES = 2
_CLASSES = 3
_OGM_OFF = dict(alpha=0.5, noise_scale=0.0, start_round=0.0, end_round=0.0)


# ---------------------------------------------------------------------------
# The maths, against NumPy.
# ---------------------------------------------------------------------------


def _np_min_norm(f, m):
  k = np.dot(m - f, m) / np.dot(f - m, f - m)
  return float(np.clip(k, 0.0, 1.0))


def _split(vector, shapes):
  out, start = [], 0
  for shape in shapes:
    size = int(np.prod(shape))
    out.append(tf.constant(vector[start:start + size].reshape(shape),
                           tf.float32))
    start += size
  return out


def test_cosine_and_min_norm_point_match_numpy():
  rng = np.random.default_rng(0)
  shapes = [(3, 2), (2,)]
  for _ in range(20):
    f, m = rng.normal(size=8), rng.normal(size=8)
    cos = np.dot(f, m) / np.linalg.norm(f) / np.linalg.norm(m)
    np.testing.assert_allclose(
        balancing.cosine(_split(f, shapes), _split(m, shapes)), cos, atol=1e-6)
    k = float(balancing.min_norm_weight(_split(f, shapes), _split(m, shapes)))
    np.testing.assert_allclose(k, _np_min_norm(f, m), atol=1e-6)
    # It is the minimum of ‖k f + (1 − k) m‖ over [0, 1] (a grid search).
    grid = np.linspace(0, 1, 2001)
    norms = [np.linalg.norm(g * f + (1 - g) * m) for g in grid]
    assert np.linalg.norm(k * f + (1 - k) * m) <= min(norms) + 1e-5
    weight, conflict, _ = balancing.mmpareto_weight(_split(f, shapes),
                                                    _split(m, shapes))
    assert float(conflict) == float(cos <= 0)
    np.testing.assert_allclose(weight, 0.5 if cos > 0 else k, atol=1e-6)
  # A zero gradient conflicts with nothing: ½/½, the summed gradient.
  zero = [tf.zeros(s) for s in shapes]
  weight, conflict, _ = balancing.mmpareto_weight(zero, _split(m, shapes))
  assert (float(weight), float(conflict)) == (0.5, 0.0)


def _np_direction(f_list, m_list, k, gamma):
  out = []
  for f, m in zip(f_list, m_list):
    new = 2 * k * f + 2 * (1 - k) * m
    scale = np.linalg.norm(f + m) / np.linalg.norm(new)
    out.append(gamma * (scale * new if scale > 1 else new))
  return out


def test_mmpareto_direction_matches_numpy_rule():
  rng = np.random.default_rng(1)
  f = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
  m = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]
  for k in (0.0, 0.2, 0.5, 0.9):
    got = balancing.mmpareto_direction(
        [tf.constant(x, tf.float32) for x in f],
        [tf.constant(x, tf.float32) for x in m], k, 1.5)
    for g, want in zip(got, _np_direction(f, m, k, 1.5)):
      np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_ogm_scores_ratios_and_coefficients_match_numpy():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(6, 5)).astype(np.float32)
  kernel = rng.normal(size=(5, _CLASSES)).astype(np.float32)
  bias = rng.normal(size=(_CLASSES,)).astype(np.float32)
  labels = np.array([0, 1, 2, 0, 1, 2])
  presence = np.array([[1, 1], [1, 0], [1, 1], [0, 1], [1, 1], [1, 1]],
                      np.float32)
  out = balancing.modality_logits(features, kernel, bias, [3, 2])
  want_out = [features[:, :3] @ kernel[:3] + bias / 2,
              features[:, 3:] @ kernel[3:] + bias / 2]
  for got, want in zip(out, want_out):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  scores = balancing.confidence_scores(out, labels, presence).numpy()
  for i in range(2):
    p = np.exp(want_out[i]) / np.exp(want_out[i]).sum(1, keepdims=True)
    chosen = p[np.arange(6), labels]
    np.testing.assert_allclose(
        scores[i], (chosen * presence[:, i]).sum() / presence[:, i].sum(),
        rtol=1e-5)
  ratios, defined = balancing.confidence_ratios(scores, [1.0, 1.0])
  np.testing.assert_allclose(ratios, [scores[0] / scores[1],
                                      scores[1] / scores[0]], rtol=1e-5)
  coefficients = balancing.ogm_coefficients(ratios, defined, 0.3).numpy()
  for r, k in zip(ratios.numpy(), coefficients):
    np.testing.assert_allclose(k, 1 - np.tanh(0.3 * r) if r > 1 else 1.0,
                               rtol=1e-6)
  # M = 3: ρ_m over the mean of the other present modalities.
  ratios, defined = balancing.confidence_ratios([0.2, 0.6, 0.9],
                                                [1.0, 1.0, 0.0])
  np.testing.assert_allclose(ratios, [0.2 / 0.6, 0.6 / 0.2, 1.0], rtol=1e-6)
  np.testing.assert_array_equal(defined, [1.0, 1.0, 0.0])
  # One present modality: no ratio, nothing modulated.
  ratios, defined = balancing.confidence_ratios([0.2, 0.6], [1.0, 0.0])
  np.testing.assert_array_equal(defined, [0.0, 0.0])
  np.testing.assert_array_equal(
      balancing.ogm_coefficients(ratios, defined, 0.8), [1.0, 1.0])


def test_modulate_gradient_scales_kernels_and_adds_seeded_noise():
  g = tf.constant(np.random.default_rng(3).normal(size=(200, 100)),
                  tf.float32)
  seed = tf.constant([4, 5])
  np.testing.assert_allclose(balancing.modulate_gradient(g, 0.3, 0.0, seed),
                             0.3 * g.numpy(), rtol=1e-6)
  noisy = balancing.modulate_gradient(g, 0.3, 2.0, seed).numpy()
  noise = noisy - 0.3 * g.numpy()
  np.testing.assert_allclose(noise.std(), 2.0 * g.numpy().std(), rtol=0.02)
  np.testing.assert_array_equal(
      noisy, balancing.modulate_gradient(g, 0.3, 2.0, seed))  # Seeded.
  bias = tf.constant([1.0, -2.0])
  np.testing.assert_array_equal(
      balancing.modulate_gradient(bias, 0.3, 2.0, seed), bias)


# ---------------------------------------------------------------------------
# One local step on a tiny model, against a NumPy reference.
# ---------------------------------------------------------------------------


def _tanh_encoder(x, feature_dim, seed):
  return tf.keras.layers.Dense(
      feature_dim, activation='tanh',
      kernel_initializer=tf.keras.initializers.GlorotUniform(seed),
      bias_initializer=tf.keras.initializers.RandomNormal(seed=seed))(x)


_SPECS = [dataset_lib.ModalitySpec(m, dataset_lib.VECTOR, (d,))
          for m, d in _DIMS.items()]


def _tiny_model_fn(seed=0):
  return models.build_model_fn(
      _SPECS, _CLASSES, config=models.ModelConfig(feature_dim=_FEATURES,
                                                  seed=seed),
      encoders={m: _tanh_encoder for m in _DIMS})


def _batch(seed, size=6, mask_b=None):
  rng = np.random.default_rng(seed)
  mask = {'a': np.ones(size, np.float32),
          'b': (rng.random(size) < 0.7).astype(np.float32)
          if mask_b is None else np.full(size, mask_b, np.float32)}
  mask['b'][0] = 1.0 if mask_b is None else mask_b
  x = {m: rng.normal(size=(size, d)).astype(np.float32) * mask[m][:, None]
       for m, d in _DIMS.items()}
  y = rng.integers(0, _CLASSES, size=size).astype(np.int32)
  return collections.OrderedDict(x=x, mask=mask, y=y)


def _weights(model):
  """name → NumPy array of each part's variables (kernel, bias)."""
  keras_model = model.keras_model
  out = {}
  for name in ['encoder_a', 'encoder_b', 'head_a', 'head_b', 'head_fusion']:
    kernel, bias = keras_model.get_layer(name).trainable_variables
    out[name] = (kernel.numpy().astype(np.float64),
                 bias.numpy().astype(np.float64))
  return out


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def _np_gradients(w, batch):
  """Per-part gradients of the fused and each uni-modal masked mean CE.

  Returns (forward values, {loss: {part: (d kernel, d bias)}}).
  """
  y = np.eye(_CLASSES)[batch['y']]
  h, pre = {}, {}
  for m in _DIMS:
    kernel, bias = w[f'encoder_{m}']
    h[m] = np.tanh(batch['x'][m] @ kernel + bias)
  masked = np.concatenate([h[m] * batch['mask'][m][:, None] for m in _DIMS], 1)
  fusion_logits = masked @ w['head_fusion'][0] + w['head_fusion'][1]
  grads = {'fusion': {}}
  # Fused loss: every example has modality a, so all count.
  dz = (_softmax(fusion_logits) - y) / len(y)
  grads['fusion']['head_fusion'] = (masked.T @ dz, dz.sum(0))
  dmasked = dz @ w['head_fusion'][0].T
  start = 0
  for m in _DIMS:
    dh = dmasked[:, start:start + _FEATURES] * batch['mask'][m][:, None]
    start += _FEATURES
    da = dh * (1 - h[m] ** 2)
    grads['fusion'][f'encoder_{m}'] = (batch['x'][m].T @ da, da.sum(0))
  for m in _DIMS:
    present = batch['mask'][m]
    logits = h[m] @ w[f'head_{m}'][0] + w[f'head_{m}'][1]
    dz = (_softmax(logits) - y) * present[:, None] / max(present.sum(), 1)
    da = (dz @ w[f'head_{m}'][0].T) * (1 - h[m] ** 2)
    grads[m] = {f'head_{m}': (h[m].T @ dz, dz.sum(0)),
                f'encoder_{m}': (batch['x'][m].T @ da, da.sum(0))}
  return dict(h=h, masked=masked), grads


def _np_mmpareto_step(w, batch, gamma):
  """The new weights' gradients of one MMPareto step, and (k_f, conflict)."""
  _, grads = _np_gradients(w, batch)
  out = {'head_fusion': grads['fusion']['head_fusion']}
  info = {}
  for m in _DIMS:
    out[f'head_{m}'] = grads[m][f'head_{m}']
    f = grads['fusion'][f'encoder_{m}']
    u = grads[m][f'encoder_{m}']
    flat_f = np.concatenate([t.ravel() for t in f])
    flat_u = np.concatenate([t.ravel() for t in u])
    norms = np.linalg.norm(flat_f) * np.linalg.norm(flat_u)
    conflict = norms > 0 and flat_f @ flat_u <= 0  # A zero gradient: none.
    k = _np_min_norm(flat_f, flat_u) if conflict else 0.5
    out[f'encoder_{m}'] = tuple(_np_direction(f, u, k, gamma))
    info[m] = (k, float(conflict))
  return out, info


def _np_ogm_step(w, batch, alpha):
  """The gradients of one OGM step (no noise), and (ρ, k) per modality."""
  forward, grads = _np_gradients(w, batch)
  kernel, bias = w['head_fusion']
  scores = []
  for i, m in enumerate(_DIMS):
    rows = slice(i * _FEATURES, (i + 1) * _FEATURES)
    out = forward['masked'][:, rows] @ kernel[rows] + bias / len(_DIMS)
    p = _softmax(out)[np.arange(len(batch['y'])), batch['y']]
    present = batch['mask'][m]
    scores.append((p * present).sum() / present.sum())
  ratios = [scores[0] / scores[1], scores[1] / scores[0]]
  coefficients = [1 - np.tanh(alpha * r) if r > 1 else 1.0 for r in ratios]
  out = dict(grads['fusion'])
  for m in _DIMS:
    out[f'head_{m}'] = (np.zeros_like(w[f'head_{m}'][0]),
                        np.zeros_like(w[f'head_{m}'][1]))
  for m, k in zip(_DIMS, coefficients):  # Kernels only (rank ≥ 2).
    out[f'encoder_{m}'] = (k * out[f'encoder_{m}'][0], out[f'encoder_{m}'][1])
  return out, ratios, coefficients


def _one_step(method, hparams, batch, model_seed=0, model_edit=None,
              round_num=0):
  """(initial weights, Δ = initial − after one SGD step, stats) in TF."""
  model_fn = _tiny_model_fn(model_seed)
  probe = model_fn()
  if model_edit is not None:
    model_edit(probe.keras_model)
  initial = _weights(probe)
  update = balanced.build_client_update(model_fn, method)
  weights = tff_weights(probe)
  dataset = tf.data.Dataset.from_tensors(batch)
  out = update(tff_sgd(), weights, dataset,
               collections.OrderedDict(learning_rate=np.float32(_LR)),
               collections.OrderedDict(
                   (k, np.float32(v)) for k, v in hparams.items()),
               np.int32(round_num))
  parts = balanced.model_parts(probe)
  delta = {}
  names = {**{f'encoder_{m}': parts.encoders[i] for i, m in enumerate(_DIMS)},
           **{f'head_{m}': parts.heads[i] for i, m in enumerate(_DIMS)},
           'head_fusion': [parts.fusion_kernel, parts.fusion_bias]}
  for name, idx in names.items():
    delta[name] = tuple(np.asarray(out.result.update[j]) for j in idx)
  stats = {k: np.asarray(v) for k, v in out.stats.items()}
  return initial, delta, stats, out


def tff_weights(model):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  return tff.learning.models.ModelWeights.from_model(model)


def tff_sgd():
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  return tff.learning.optimizers.build_sgdm(learning_rate=_LR)


def _assert_step(delta, want_gradients):
  for name, grads in want_gradients.items():
    for got, want in zip(delta[name], grads):
      np.testing.assert_allclose(got, _LR * want, rtol=2e-4, atol=1e-6,
                                 err_msg=name)


def _aligned(keras_model):
  """Head m = the fusion head's rows for m: uni and fused pull together."""
  fusion = keras_model.get_layer('head_fusion')
  for i, m in enumerate(_DIMS):
    head = keras_model.get_layer(f'head_{m}')
    head.kernel.assign(fusion.kernel[i * _FEATURES:(i + 1) * _FEATURES])
    head.bias.assign(fusion.bias)


def _forced_conflict(keras_model):
  """Head a = −(the fusion head's rows for a): uni and fused pull apart."""
  fusion = keras_model.get_layer('head_fusion')
  kernel = fusion.kernel.numpy()
  keras_model.get_layer('head_a').kernel.assign(-kernel[:_FEATURES])
  keras_model.get_layer('head_a').bias.assign(np.zeros(_CLASSES))
  fusion.kernel.assign(np.concatenate(
      [kernel[:_FEATURES], np.zeros_like(kernel[_FEATURES:])]))
  fusion.bias.assign(np.zeros(_CLASSES))


@pytest.mark.parametrize('model_edit', [None, _aligned, _forced_conflict])
def test_one_mmpareto_step_matches_numpy(model_edit):
  batch = _batch(0)
  initial, delta, stats, _ = _one_step(balanced.MMPARETO, {'gamma': 1.5},
                                       batch, model_edit=model_edit)
  want, info = _np_mmpareto_step(initial, batch, 1.5)
  _assert_step(delta, want)
  np.testing.assert_allclose(stats['k_f'], [info[m][0] for m in _DIMS],
                             atol=1e-5)
  np.testing.assert_array_equal(stats['conflicts'],
                                [info[m][1] for m in _DIMS])
  if model_edit is _forced_conflict:
    assert info['a'][1] == 1.0  # The edit did force a conflict.


def _summed_gradient_step(initial, batch):
  """Every variable's gradient of Σ_h L_h (the ½/½ rule with γ = 1)."""
  _, grads = _np_gradients(initial, batch)
  want = {'head_fusion': grads['fusion']['head_fusion']}
  for m in _DIMS:
    want[f'head_{m}'] = grads[m][f'head_{m}']
    want[f'encoder_{m}'] = tuple(
        f + u for f, u in zip(grads['fusion'][f'encoder_{m}'],
                              grads[m][f'encoder_{m}']))
  return want


def test_mmpareto_without_conflict_is_the_summed_gradient():
  batch = _batch(0)
  initial, delta, stats, _ = _one_step(balanced.MMPARETO, {'gamma': 1.0},
                                       batch, model_edit=_aligned)
  np.testing.assert_array_equal(stats['conflicts'], [0.0, 0.0])
  _assert_step(delta, _summed_gradient_step(initial, batch))


def test_mmpareto_forced_conflict_moves_k_f_and_the_update():
  batch = _batch(0)
  initial, delta, stats, _ = _one_step(balanced.MMPARETO, {'gamma': 1.0},
                                       batch, model_edit=_forced_conflict)
  assert stats['conflicts'][0] == 1.0
  assert abs(stats['k_f'][0] - 0.5) > 0.05
  summed = _summed_gradient_step(initial, batch)['encoder_a']
  gap = max(np.max(np.abs(d - _LR * s))
            for d, s in zip(delta['encoder_a'], summed))
  assert gap > 1e-3 * max(np.max(np.abs(_LR * s)) for s in summed)


def test_one_ogm_step_matches_numpy():
  batch = _batch(1)
  hparams = dict(_OGM_OFF, alpha=0.7)
  initial, delta, stats, _ = _one_step(balanced.OGM, hparams, batch)
  want, ratios, coefficients = _np_ogm_step(initial, batch, 0.7)
  _assert_step(delta, want)
  np.testing.assert_allclose(stats['ratio'], ratios, rtol=1e-4)
  np.testing.assert_allclose(stats['coefficient'], coefficients, rtol=1e-4)
  assert min(coefficients) < 0.9  # Something was modulated.


def test_ogm_modulates_only_in_its_rounds():
  batch = _batch(1)
  hparams = dict(_OGM_OFF, alpha=0.7, start_round=2.0, end_round=4.0)
  initial = None
  for round_num, modulated in ((1, False), (2, True), (3, True), (4, False)):
    initial, delta, stats, _ = _one_step(balanced.OGM, hparams, batch,
                                         round_num=round_num)
    want, _, _ = _np_ogm_step(initial, batch, 0.7 if modulated else 0.0)
    _assert_step(delta, want)
    assert stats['steps'].sum() == (2.0 if modulated else 0.0)


def test_client_without_a_modality_keeps_its_encoder_and_head():
  batch = _batch(2, mask_b=0.0)
  for method, hparams in ((balanced.MMPARETO, {'gamma': 1.5}),
                          (balanced.OGM, dict(_OGM_OFF, noise_scale=1.0))):
    _, delta, stats, _ = _one_step(method, hparams, batch)
    for name in ('encoder_b', 'head_b'):
      for d in delta[name]:
        np.testing.assert_array_equal(d, 0.0, err_msg=f'{method} {name}')
    assert np.abs(delta['encoder_a'][0]).max() > 0
    assert stats['steps'][1] == 0.0  # Not counted in b's metrics.
  # OGM: with one modality present there is no ratio, so a is not slowed.
  _, strong, stats, _ = _one_step(balanced.OGM, dict(_OGM_OFF, alpha=5.0),
                                  batch)
  _, plain, _, _ = _one_step(balanced.OGM, dict(_OGM_OFF, alpha=0.0), batch)
  np.testing.assert_array_equal(stats['steps'], [0.0, 0.0])
  np.testing.assert_array_equal(strong['encoder_a'][0], plain['encoder_a'][0])


def test_ogm_ge_noise_is_reproducible_and_differs_by_batch():
  hparams = dict(_OGM_OFF, noise_scale=1.0)
  first = _one_step(balanced.OGM, hparams, _batch(1))[1]['encoder_a'][0]
  again = _one_step(balanced.OGM, hparams, _batch(1))[1]['encoder_a'][0]
  plain = _one_step(balanced.OGM, _OGM_OFF, _batch(1))[1]['encoder_a'][0]
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - plain).max() > 1e-6


# ---------------------------------------------------------------------------
# The registry's processes on the TFF runtime.
# ---------------------------------------------------------------------------


_CONFIG = algorithms.AlgorithmConfig(
    client_learning_rate=0.05, batch_size=16,
    model=models.ModelConfig(feature_dim=8, hidden_units=16, conv_filters=4))


@pytest.fixture(scope='module')
def basicmotions():
  train_pool, _ = datasets.load('basicmotions', seed=0)

  def federated(scheme):
    parts = partition.make_partition(train_pool, scheme, num_clients=3,
                                     alpha=None, seed=0)
    return client_data.FederatedData(train_pool, parts)
  return federated


def _round(name, federated, config, round_num=0):
  algorithm = algorithms.build_algorithm(name, federated, config)
  state = algorithm.process.initialize()
  data = [algorithm.client_data(cid, round_num)
          for cid in algorithm.client_ids]
  return algorithm.process, algorithm.process.next(state, data)


@pytest.mark.parametrize('name,options', [
    ('ogm', dict(ogm_alpha=0.0)),
    ('ogm_ge', dict(ogm_start_round=1)),  # Round 0 is not modulated.
])
def test_unmodulated_ogm_round_is_fused_fedavg(basicmotions, name, options):
  federated = basicmotions('case_c')
  fedavg_process, fedavg = _round('fedavg', federated, _CONFIG)
  config = dataclasses.replace(_CONFIG, **options)
  process, ours = _round(name, federated, config)
  np.testing.assert_allclose(
      utils.flat(process.get_model_weights(ours.state)),
      utils.flat(fedavg_process.get_model_weights(fedavg.state)), atol=1e-5)
  # The guard has teeth: with modulation on, the round differs.
  modulated = dataclasses.replace(_CONFIG, ogm_alpha=0.8)
  process, other = _round(name, federated, modulated)
  assert np.abs(utils.flat(process.get_model_weights(other.state)) -
                utils.flat(fedavg_process.get_model_weights(
                    fedavg.state))).max() > 1e-4


def test_mechanism_metrics_and_missing_modalities(basicmotions):
  # 1m_b: every client holds one modality, so OGM never finds a ratio and
  # MMPareto trains each encoder only where its modality is.
  federated = basicmotions('1m_b')
  _, out = _round('ogm_ge', federated, _CONFIG)
  ogm = out.metrics['client_work']['ogm']
  assert ogm['steps/accel'] == 0.0 and ogm['steps/gyro'] == 0.0
  _, out = _round('mmpareto', federated, _CONFIG)
  metrics = out.metrics['client_work']['mmpareto']
  steps = {m: metrics[f'steps/{m}'] for m in ('accel', 'gyro')}
  held = {m: sum(federated.num_train_examples(c) + federated.num_val_examples(c)
                 for c in federated.client_ids
                 if m in federated.client_modalities(c)) for m in steps}
  for m in steps:  # One step per batch of the clients holding m.
    assert (steps[m] > 0) == (held[m] > 0)
    assert 0.0 <= metrics[f'conflict_fraction/{m}'] <= 1.0
    assert 0.0 <= metrics[f'k_f/{m}'] <= 1.0
  assert out.metrics['client_work']['num_non_finite_clients'] == 0


def test_mmpareto_round_splits_across_workers(basicmotions):
  algorithm = algorithms.build_algorithm('mmpareto', basicmotions('mixed_b'),
                                         _CONFIG)
  data = [algorithm.client_data(cid, 0) for cid in algorithm.client_ids]
  utils.check_round_splits_across_workers(
      algorithm.process, algorithm.process.initialize(), data)


def test_hyper_parameters_are_flags_and_tunable():
  tunable = config_lib.tunable_fields()
  for field in ('mmpareto_gamma', 'ogm_alpha', 'ogm_noise_scale',
                'ogm_start_round', 'ogm_end_round'):
    assert field in tunable
    assert field in config_lib.extra_algorithm_fields()
  with pytest.raises(ValueError, match='ogm_end_round'):
    algorithms.AlgorithmConfig(ogm_start_round=3, ogm_end_round=2)
  with pytest.raises(ValueError, match='ogm_alpha'):
    algorithms.AlgorithmConfig(ogm_alpha=-1.0)
  with pytest.raises(ValueError, match='no hyper-parameter'):
    balanced.build_balanced_process(
        _tiny_model_fn(), balanced.MMPARETO, alpha=1.0,
        client_optimizer_fn=tff_sgd())
