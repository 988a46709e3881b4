"""Multi-modal Keras model and its TFF VariableModel (tff_hgb/models.py, ALGORITHM.md §2)."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import losses
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib

SMALL = models.ModelConfig(feature_dim=6, hidden_units=8, conv_filters=2,
                           seed=0)
NUM_CLASSES = 3

KIND_SHAPES = {
    dataset_lib.VECTOR: (8,),
    dataset_lib.TIMESERIES: (20, 3),
    dataset_lib.SPECTROGRAM: (16, 8),
    dataset_lib.IMAGE: (8, 8, 3),
    dataset_lib.FRAMES: (4, 8, 8, 3),
    dataset_lib.FLOW: (4, 8, 8, 2),
}


def spec(name, kind):
  return dataset_lib.ModalitySpec(name, kind, KIND_SHAPES[kind])


TWO = [spec('vec', dataset_lib.VECTOR), spec('ts', dataset_lib.TIMESERIES)]


def make_batch(specs, batch, rng, masks=None, zero_fill=True):
  """One batch in the element structure of tff_hgb.data.dataset."""
  if masks is None:
    masks = {s.name: (rng.random(batch) < 0.6).astype(np.float32)
             for s in specs}
  x = collections.OrderedDict()
  for s in specs:
    values = rng.normal(size=(batch,) + s.shape).astype(np.float32)
    if zero_fill:
      values *= masks[s.name].reshape((-1,) + (1,) * len(s.shape))
    x[s.name] = values
  return collections.OrderedDict(
      x=x,
      mask=collections.OrderedDict(
          (s.name, np.asarray(masks[s.name], np.float32)) for s in specs),
      y=rng.integers(0, NUM_CLASSES, size=batch).astype(np.int32))


def keras_inputs(batch):
  return models.keras_inputs(batch)


def np_cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64)
  top = logits.max(axis=1, keepdims=True)
  lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
  return lse - logits[np.arange(len(labels)), labels]


def np_head_means(logits, batch, names):
  """Per-head (loss sum, correct, count) by NumPy over where each head applies."""
  present = np.stack([batch['mask'][m] > 0 for m in names], axis=1)
  applies = np.concatenate([present, present.any(axis=1, keepdims=True)], 1)
  out = []
  for j, h in enumerate(names + ['fusion']):
    rows = applies[:, j]
    lg = np.asarray(logits[h])[rows]
    y = batch['y'][rows]
    out.append((np_cross_entropy(lg, y).sum() if rows.any() else 0.0,
                float((lg.argmax(1) == y).sum()), float(rows.sum())))
  return np.array(out)  # [H, 3]


# ----------------------------------------------------------------------------
# build_keras_model.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('kind', sorted(KIND_SHAPES))
def test_each_kind_gives_one_logits_tensor_per_head(kind):
  specs = [spec('m', kind)]
  model = models.build_keras_model(specs, NUM_CLASSES, config=SMALL)
  batch = make_batch(specs, 3, np.random.default_rng(0))
  out = model(keras_inputs(batch))
  assert list(out) == ['m', 'fusion']
  for logits in out.values():
    assert logits.shape == (3, NUM_CLASSES)
    assert np.all(np.isfinite(logits.numpy()))


def test_all_kinds_together_heads_in_modality_order():
  kinds = [dataset_lib.FLOW, dataset_lib.VECTOR, dataset_lib.IMAGE,
           dataset_lib.SPECTROGRAM, dataset_lib.FRAMES, dataset_lib.TIMESERIES]
  specs = [spec(f'{k}_in', k) for k in kinds]
  model = models.build_keras_model(specs, 5, config=SMALL)
  batch = make_batch(specs, 2, np.random.default_rng(1))
  out = model(keras_inputs(batch))
  assert list(out) == [s.name for s in specs] + ['fusion']
  assert all(v.shape == (2, 5) for v in out.values())
  # Fusion head reads the concatenation of every encoder's features.
  fusion = model.get_layer('head_fusion')
  assert fusion.kernel.shape == (len(specs) * SMALL.feature_dim, 5)


def test_model_rejects_bad_configurations():
  with pytest.raises(ValueError, match='fusion'):
    models.build_keras_model([spec('fusion', dataset_lib.VECTOR)], 2,
                             config=SMALL)
  with pytest.raises(ValueError, match='at least one modality'):
    models.build_keras_model([], 2, config=SMALL)


def test_user_encoder_replaces_the_default():
  calls = []

  def encoder(x, feature_dim, seed):
    calls.append((feature_dim, seed))
    h = tf.keras.layers.Flatten(name='my_flatten')(x)
    return tf.keras.layers.Dense(
        feature_dim, name='my_encoder',
        kernel_initializer=tf.keras.initializers.GlorotUniform(seed))(h)

  specs = [spec('img', dataset_lib.IMAGE), spec('vec', dataset_lib.VECTOR)]
  model = models.build_keras_model(specs, NUM_CLASSES, config=SMALL,
                                   encoders={'img': encoder})
  assert len(calls) == 1 and calls[0][0] == SMALL.feature_dim

  def all_layers(layer):
    for sub in getattr(layer, 'layers', []):
      yield sub
      yield from all_layers(sub)

  layers = list(all_layers(model))
  names = [layer.name for layer in layers]
  assert 'my_encoder' in names and 'my_flatten' in names
  # The default image encoder (Conv2D) is gone; the vector default stays.
  assert not any(isinstance(l, tf.keras.layers.Conv2D) for l in layers)
  assert sum(isinstance(l, tf.keras.layers.Dense) for l in layers) == (
      1 + 2 + 3)  # user encoder + vector encoder + three heads.
  my_encoder = next(l for l in layers if l.name == 'my_encoder')
  assert my_encoder.kernel.shape == (8 * 8 * 3, SMALL.feature_dim)
  # Functionally: the image head reads the user's encoder. Zero it and the
  # image head's logits are its bias (zero) for any input.
  batch = make_batch(specs, 2, np.random.default_rng(2),
                     masks={'img': np.ones(2, np.float32),
                            'vec': np.ones(2, np.float32)})
  out = model(keras_inputs(batch))
  assert list(out) == ['img', 'vec', 'fusion']
  assert np.any(out['img'].numpy() != 0)
  for v in my_encoder.trainable_variables:
    v.assign(tf.zeros_like(v))
  out = model(keras_inputs(batch))
  np.testing.assert_array_equal(out['img'].numpy(), 0.0)
  assert np.any(out['vec'].numpy() != 0)


def test_encoder_for_unknown_modality_raises():
  with pytest.raises(ValueError, match=r"unknown modalities \['audio'\]"):
    models.build_keras_model(
        TWO, NUM_CLASSES, config=SMALL,
        encoders={'audio': lambda x, d, s: tf.keras.layers.Dense(d)(x)})


def test_absent_modality_input_does_not_change_fusion_logits():
  model = models.build_keras_model(TWO, NUM_CLASSES, config=SMALL)
  rng = np.random.default_rng(3)
  masks = {'vec': np.array([1, 0, 1, 0], np.float32),
           'ts': np.array([0, 1, 1, 0], np.float32)}
  batch = make_batch(TWO, 4, rng, masks=masks, zero_fill=False)
  base = {h: v.numpy() for h, v in model(keras_inputs(batch)).items()}

  # Change 'vec' only where it is absent (rows 1 and 3).
  changed = {'x': dict(batch['x']), 'mask': batch['mask']}
  vec = batch['x']['vec'].copy()
  vec[[1, 3]] = rng.normal(size=vec[[1, 3]].shape) * 10
  changed['x']['vec'] = vec
  out = {h: v.numpy() for h, v in model(keras_inputs(changed)).items()}
  np.testing.assert_array_equal(out['fusion'], base['fusion'])
  np.testing.assert_array_equal(out['ts'], base['ts'])
  # (The masked uni-modal head still sees its input; its loss is masked.)
  assert not np.allclose(out['vec'][[1, 3]], base['vec'][[1, 3]])

  # Change 'vec' where it is present (rows 0 and 2): fusion changes there.
  vec = batch['x']['vec'].copy()
  vec[[0, 2]] = rng.normal(size=vec[[0, 2]].shape) * 10
  changed['x']['vec'] = vec
  out = {h: v.numpy() for h, v in model(keras_inputs(changed)).items()}
  assert not np.allclose(out['fusion'][[0, 2]], base['fusion'][[0, 2]])
  np.testing.assert_array_equal(out['fusion'][[1, 3]], base['fusion'][[1, 3]])

  # Same for the other modality: 'ts' absent in rows 0 and 3.
  ts = batch['x']['ts'].copy()
  ts[[0, 3]] = rng.normal(size=ts[[0, 3]].shape) * 10
  changed = {'x': dict(batch['x'], ts=ts), 'mask': batch['mask']}
  out = {h: v.numpy() for h, v in model(keras_inputs(changed)).items()}
  np.testing.assert_array_equal(out['fusion'], base['fusion'])


def _initial_weights(config, specs=TWO):
  return [w.copy() for w in
          models.build_keras_model(specs, NUM_CLASSES,
                                   config=config).get_weights()]


def test_same_seed_same_initial_weights_different_seed_different():
  specs = [spec('img', dataset_lib.IMAGE)] + TWO
  a = _initial_weights(SMALL, specs)
  b = _initial_weights(SMALL, specs)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  c = _initial_weights(models.ModelConfig(feature_dim=6, hidden_units=8,
                                          conv_filters=2, seed=1), specs)
  kernels = [(x, y) for x, y in zip(a, c) if x.ndim > 1]
  assert kernels and all(not np.array_equal(x, y) for x, y in kernels)
  # Different modalities in one model are not initialised identically.
  same_shape = [w for w in a if w.shape == (SMALL.feature_dim, NUM_CLASSES)]
  assert len(same_shape) >= 3
  assert not np.array_equal(same_shape[0], same_shape[1])


# ----------------------------------------------------------------------------
# MultiModalModel.
# ----------------------------------------------------------------------------


def make_model(head_weights=None, specs=TWO):
  keras_model = models.build_keras_model(specs, NUM_CLASSES, config=SMALL)
  return models.MultiModalModel(keras_model, specs, head_weights=head_weights)


def test_weight_helpers():
  np.testing.assert_array_equal(models.fused_only_weights(['a', 'b']),
                                [0, 0, 1])
  np.testing.assert_allclose(models.equal_head_weights(['a', 'b']),
                             [1 / 3] * 3)


def test_forward_pass_default_is_fused_loss_only():
  model = make_model()
  assert model.heads == ['vec', 'ts', 'fusion']
  assert model.modalities == ['vec', 'ts']
  rng = np.random.default_rng(4)
  batch = make_batch(TWO, 8, rng, masks={
      'vec': np.array([1, 1, 0, 0, 1, 0, 1, 0], np.float32),
      'ts': np.array([0, 1, 1, 0, 1, 0, 0, 1], np.float32)})
  logits = model.keras_model(keras_inputs(batch), training=False)
  loss_sum, _, count = losses.head_statistics(logits, batch['y'],
                                              batch['mask'], model.modalities)
  per_head = losses.mean_head_losses(loss_sum, count).numpy()
  ref = np_head_means(logits, batch, model.modalities)
  np.testing.assert_allclose(per_head, ref[:, 0] / ref[:, 2], rtol=1e-5)

  out = model.forward_pass(batch, training=False)
  assert int(out.num_examples) == 8
  np.testing.assert_allclose(float(out.loss), per_head[-1], rtol=1e-5)
  # The fused head averages over the 6 rows that have any modality.
  assert count.numpy()[-1] == 6
  assert list(out.predictions) == model.heads
  np.testing.assert_allclose(out.predictions['fusion'].numpy(),
                             logits['fusion'].numpy(), rtol=1e-6)


def test_forward_pass_equal_head_weights_blends_heads_equally():
  model = make_model(models.equal_head_weights(['vec', 'ts']))
  batch = make_batch(TWO, 8, np.random.default_rng(5))
  logits = model.keras_model(keras_inputs(batch), training=False)
  ref = np_head_means(logits, batch, model.modalities)
  means = np.where(ref[:, 2] > 0, ref[:, 0] / np.maximum(ref[:, 2], 1), 0.0)
  out = model.forward_pass(batch, training=False)
  np.testing.assert_allclose(float(out.loss), means.mean(), rtol=1e-5)
  # Any fixed weights.
  model = make_model([0.5, 0.0, 0.5])
  logits = model.keras_model(keras_inputs(batch), training=False)
  ref = np_head_means(logits, batch, model.modalities)
  means = np.where(ref[:, 2] > 0, ref[:, 0] / np.maximum(ref[:, 2], 1), 0.0)
  out = model.forward_pass(batch, training=False)
  np.testing.assert_allclose(float(out.loss), 0.5 * means[0] + 0.5 * means[2],
                             rtol=1e-5)


def test_forward_pass_with_no_modality_present_is_finite_zero():
  model = make_model(models.equal_head_weights(['vec', 'ts']))
  batch = make_batch(TWO, 4, np.random.default_rng(6),
                     masks={'vec': np.zeros(4, np.float32),
                            'ts': np.zeros(4, np.float32)})
  out = model.forward_pass(batch, training=False)
  assert float(out.loss) == 0.0


def test_forward_pass_gradients_reach_every_encoder():
  model = make_model(models.equal_head_weights(['vec', 'ts']))
  batch = make_batch(TWO, 8, np.random.default_rng(7),
                     masks={'vec': np.ones(8, np.float32),
                            'ts': np.ones(8, np.float32)})
  with tf.GradientTape() as tape:
    loss = model.forward_pass(batch).loss
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_metrics_over_two_batches_and_reset():
  model = make_model()
  rng = np.random.default_rng(8)
  b1 = make_batch(TWO, 6, rng)
  b2 = make_batch(TWO, 5, rng)
  totals = np.zeros((3, 3))
  for batch in (b1, b2):
    logits = model.keras_model(keras_inputs(batch), training=False)
    totals += np_head_means(logits, batch, model.modalities)
    model.forward_pass(batch, training=False)

  unfinalized = model.report_local_unfinalized_metrics()
  finalizers = model.metric_finalizers()
  assert set(unfinalized) == set(finalizers)
  assert list(unfinalized) == [
      'vec/loss', 'vec/accuracy', 'ts/loss', 'ts/accuracy', 'fusion/loss',
      'fusion/accuracy', 'num_examples', 'num_batches']
  final = {k: float(finalizers[k](unfinalized[k])) for k in unfinalized}
  for j, head in enumerate(model.heads):
    loss_sum, correct, count = totals[j]
    want_loss = loss_sum / count if count else 0.0
    want_acc = correct / count if count else 0.0
    np.testing.assert_allclose(final[f'{head}/loss'], want_loss, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(final[f'{head}/accuracy'], want_acc,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(unfinalized[f'{head}/loss'][1]), count)
  assert final['num_examples'] == 11
  assert final['num_batches'] == 2

  model.reset_metrics()
  unfinalized = model.report_local_unfinalized_metrics()
  for k, values in unfinalized.items():
    assert all(float(v) == 0 for v in tf.nest.flatten(values)), k
    assert float(finalizers[k](values)) == 0.0, k
  for v in model.local_variables:
    assert np.all(v.numpy() == 0)


def test_wrong_head_weights_length_raises():
  keras_model = models.build_keras_model(TWO, NUM_CLASSES, config=SMALL)
  with pytest.raises(ValueError, match='head_weights needs 3'):
    models.MultiModalModel(keras_model, TWO, head_weights=[0.5, 0.5])
  with pytest.raises(ValueError, match='head_weights needs 3'):
    models.MultiModalModel(keras_model, TWO, head_weights=[[1.0, 0.0, 0.0]])


def test_input_spec_matches_pipeline_and_a_real_dataset_runs():
  model = make_model()
  spec_ = model.input_spec
  assert spec_['x']['ts'].shape.as_list() == [None, 20, 3]
  assert spec_['mask']['vec'].shape.as_list() == [None]
  assert spec_['y'].dtype == tf.int32
  rng = np.random.default_rng(9)
  n = 10
  ds = dataset_lib.MultiModalDataset(
      name='toy', modalities=TWO,
      features={'vec': rng.normal(size=(n, 8)).astype(np.float32),
                'ts': rng.normal(size=(n, 20, 3)).astype(np.float32)},
      labels=rng.integers(0, NUM_CLASSES, size=n),
      class_names=['a', 'b', 'c'],
      presence={'vec': (rng.random(n) < 0.5).astype(np.float32),
                'ts': np.ones(n, np.float32)})
  data = dataset_lib.to_tf_dataset(ds).batch(4)
  tf.nest.assert_same_structure(data.element_spec, spec_)
  for batch in data:
    assert spec_['x']['vec'].is_compatible_with(batch['x']['vec'])
    out = model.forward_pass(batch)
    assert np.isfinite(float(out.loss))
  assert int(model.report_local_unfinalized_metrics()['num_examples'][0]) == n


def test_model_weights_from_model():
  model = make_model()
  weights = tff.learning.models.ModelWeights.from_model(model)
  assert len(weights.trainable) == len(model.keras_model.trainable_variables)
  assert len(weights.trainable) > 0
  for w, v in zip(weights.trainable, model.keras_model.trainable_variables):
    np.testing.assert_array_equal(np.asarray(w), v.numpy())
  # Round trip into a second model.
  other = make_model()
  for v in other.trainable_variables:
    v.assign(tf.zeros_like(v))
  weights.assign_weights_to(other)
  for a, b in zip(model.trainable_variables, other.trainable_variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_build_model_fn_returns_fresh_variables():
  model_fn = models.build_model_fn(TWO, NUM_CLASSES, config=SMALL,
                                   head_weights=models.equal_head_weights(
                                       ['vec', 'ts']))
  a, b = model_fn(), model_fn()
  assert isinstance(a, models.MultiModalModel)
  assert a.heads == b.heads == ['vec', 'ts', 'fusion']
  ids_a = {id(v) for v in a.trainable_variables + a.local_variables}
  ids_b = {id(v) for v in b.trainable_variables + b.local_variables}
  assert not ids_a & ids_b
  # Same seed: same initial values; changing one leaves the other alone.
  for x, y in zip(a.trainable_variables, b.trainable_variables):
    np.testing.assert_array_equal(x.numpy(), y.numpy())
  before = [v.numpy().copy() for v in b.trainable_variables]
  for v in a.trainable_variables:
    v.assign_add(tf.ones_like(v))
  for v, want in zip(b.trainable_variables, before):
    np.testing.assert_array_equal(v.numpy(), want)
  # The head weights passed through: equal blend.
  batch = make_batch(TWO, 6, np.random.default_rng(10))
  logits = b.keras_model(keras_inputs(batch), training=False)
  ref = np_head_means(logits, batch, b.modalities)
  means = np.where(ref[:, 2] > 0, ref[:, 0] / np.maximum(ref[:, 2], 1), 0.0)
  np.testing.assert_allclose(float(b.forward_pass(batch, training=False).loss),
                             means.mean(), rtol=1e-5)
