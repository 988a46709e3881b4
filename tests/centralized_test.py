"""Centralised reference trainer: real training on a small synthetic data set.

The data: two vector modalities, 'good' (class prototypes plus noise, so it
predicts the label) and 'noise' (pure per-example noise, independent of the
label); 4 balanced classes, so chance is 0.25.
"""

import numpy as np
import pytest

from tff_hgb import centralized
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib

NUM_CLASSES = 4
POOL = 1000
TRAIN_ROWS = np.arange(0, 800)
TEST_ROWS = np.arange(800, POOL)
CONFIG = models.ModelConfig(hidden_units=32, feature_dim=16, seed=3)
MODALITIES = ['good', 'noise']


def _pool(seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(POOL) % NUM_CLASSES)
  prototypes = rng.normal(0.0, 1.0, (NUM_CLASSES, 8))
  good = prototypes[labels] + 0.6 * rng.standard_normal((POOL, 8))
  noise = rng.standard_normal((POOL, 64))
  return dataset_lib.MultiModalDataset(
      name='toy',
      modalities=[dataset_lib.ModalitySpec('good', dataset_lib.VECTOR, (8,)),
                  dataset_lib.ModalitySpec('noise', dataset_lib.VECTOR, (64,))],
      features={'good': good.astype(np.float32),
                'noise': noise.astype(np.float32)},
      labels=labels.astype(np.int64),
      class_names=[f'c{i}' for i in range(NUM_CLASSES)],
      # The row in the pool, to check which rows end up where.
      client_ids=np.arange(POOL),
  )


@pytest.fixture(scope='module')
def data():
  pool = _pool()
  return pool.subset(TRAIN_ROWS, 'toy/train'), pool.subset(TEST_ROWS,
                                                           'toy/test')


def _train(data, **kwargs):
  train, test = data
  kwargs.setdefault('epochs', 4)
  return centralized.train_centralized(train, test, model_config=CONFIG,
                                       **kwargs)


@pytest.fixture(scope='module')
def fused(data):
  return _train(data)


def _head_variable_indices(result, head):
  names = [v.name for v in result.keras_model.trainable_variables]
  indices = [i for i, n in enumerate(names) if n.startswith(f'head_{head}/')]
  assert len(indices) == 2, names  # kernel and bias
  return indices


def test_fused_only_learns_well_above_chance(fused):
  assert fused.heads == ['good', 'noise', 'fusion']
  np.testing.assert_array_equal(fused.head_weights, [0.0, 0.0, 1.0])
  assert fused.final_accuracy > 0.8, fused.history
  assert fused.history[0]['test/fusion/accuracy'] < fused.final_accuracy
  assert fused.history[-1]['train_loss'] < fused.history[0]['train_loss']
  assert [h['epoch'] for h in fused.history] == [1, 2, 3, 4]
  for entry in fused.history:
    assert entry['evaluated']
    assert entry['head_weights'] == [0.0, 0.0, 1.0]
    for prefix in ('train', 'val', 'test'):
      for head in fused.heads:
        assert f'{prefix}/{head}/accuracy' in entry
        assert f'{prefix}/{head}/loss' in entry


def test_best_accuracy_is_selected_on_validation_not_test(fused):
  best = max(fused.history,
             key=lambda h: (h['val/fusion/accuracy'], -h['val/fusion/loss'],
                            -h['epoch']))
  assert fused.best_epoch == best['epoch']
  assert fused.best_accuracy == best['test/fusion/accuracy']
  assert fused.final_accuracy == fused.history[-1]['test/fusion/accuracy']


def test_same_seed_gives_identical_history(data, fused):
  again = _train(data)
  assert again.history == fused.history
  for a, b in zip(again.final_weights, fused.final_weights):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(again.validation_indices,
                                fused.validation_indices)


def test_fused_only_leaves_unimodal_heads_untouched(fused):
  for head in MODALITIES:
    for i in _head_variable_indices(fused, head):
      np.testing.assert_array_equal(fused.final_weights[i],
                                    fused.initial_weights[i])
  # The fusion head and the encoders (through it) do train.
  for i in _head_variable_indices(fused, 'fusion'):
    assert not np.array_equal(fused.final_weights[i], fused.initial_weights[i])
  assert sum(not np.array_equal(a, b) for a, b in zip(
      fused.final_weights, fused.initial_weights)) > 2


def test_equal_head_weights_train_every_head_and_eval_every(data):
  weights = models.equal_head_weights(MODALITIES)
  result = _train(data, head_weights=weights, epochs=3, eval_every=2)
  for head in MODALITIES + ['fusion']:
    for i in _head_variable_indices(result, head):
      assert not np.array_equal(result.final_weights[i],
                                result.initial_weights[i]), head
  np.testing.assert_allclose(result.head_weights, weights)
  assert [h['evaluated'] for h in result.history] == [False, True, True]
  assert 'test/fusion/accuracy' not in result.history[0]
  assert result.best_epoch in (2, 3)
  # The informative modality's own head learns; the noise head stays near
  # chance on the test set.
  assert result.history[-1]['test/good/accuracy'] > 0.45
  assert result.history[-1]['test/noise/accuracy'] < 0.4


def test_validation_split_is_from_train_disjoint_from_test(data, fused):
  train, test = data
  val, kept = fused.validation_indices, fused.train_indices
  assert len(val) == round(0.1 * len(train))
  assert not set(val) & set(kept)
  assert sorted(set(val) | set(kept)) == list(range(len(train)))
  val_rows = set(train.client_ids[val])
  assert not val_rows & set(test.client_ids)
  assert not val_rows & set(TEST_ROWS)
  # Stratified: every class gets its share of the validation split.
  counts = np.bincount(train.labels[val], minlength=NUM_CLASSES)
  expected = np.bincount(train.labels, minlength=NUM_CLASSES) * 0.1
  assert np.all(np.abs(counts - expected) <= 1), counts
  # Another seed, another split.
  _, other = centralized.stratified_split(train.labels, 0.1, seed=1)
  assert not np.array_equal(other, val)


def test_offline_gblend_prefers_the_informative_modality(data):
  result = _train(data, blend='offline_gblend', gblend_warmup_epochs=2)
  z = result.head_weights
  assert z.shape == (3,)
  assert np.all(z >= 0) and np.all(np.isfinite(z))
  np.testing.assert_allclose(z.sum(), 1.0, rtol=1e-5)
  good, noise = result.heads.index('good'), result.heads.index('noise')
  assert z[good] > z[noise], result.gblend
  np.testing.assert_array_equal(result.gblend['z'], z)
  assert result.gblend['warmup_epochs'] == 2
  # By default the probe is the whole training part (never validation).
  np.testing.assert_array_equal(result.gblend['probe_indices'],
                                result.train_indices)
  for entry in result.history:
    np.testing.assert_allclose(entry['head_weights'], z)
  # The main run restarts from the initial weights: it equals a fixed-weight
  # run with the estimated z and the same seed.
  fixed = _train(data, head_weights=z)
  assert fixed.history == result.history


@pytest.mark.parametrize('kwargs, message', [
    (dict(epochs=0), 'epochs must be an integer ≥ 1'),
    (dict(epochs=2.5), 'epochs must be an integer ≥ 1'),
    (dict(head_weights=[0.5, 0.5]), 'head_weights needs 3 entries'),
    (dict(head_weights=[0.5, 0.5, 0.0, 0.0]), 'head_weights needs 3 entries'),
    (dict(head_weights=[-1.0, 1.0, 1.0]), 'finite and ≥ 0'),
    (dict(head_weights=[0.0, 0.0, 0.0]), 'positive sum'),
    (dict(blend='online'), "Unknown blend 'online'"),
    (dict(blend='offline_gblend', head_weights=[0.2, 0.2, 0.6]),
     "head_weights is for blend='fixed'"),
    (dict(validation_fraction=0.0), 'validation_fraction'),
    (dict(validation_fraction=1.0), 'validation_fraction'),
    (dict(batch_size=0), 'batch_size'),
    (dict(learning_rate=0.0), 'learning_rate'),
    (dict(eval_every=0), 'eval_every'),
    (dict(gblend_warmup_epochs=0), 'gblend_warmup_epochs'),
    (dict(blend='offline_gblend', gblend_probe_size=0), 'gblend_probe_size'),
    (dict(eval_batch_size=0), 'eval_batch_size'),
    (dict(gblend_fusion_floor=1.5), 'gblend_fusion_floor'),
])
def test_bad_arguments_raise_value_error(data, kwargs, message):
  with pytest.raises(ValueError, match=message.replace('[', r'\[')):
    _train(data, **kwargs)


def test_test_set_must_match_train_modalities(data):
  train, test = data
  with pytest.raises(ValueError, match='lacks the modalities'):
    centralized.train_centralized(train, test.with_modalities(['good']),
                                  epochs=1)


def test_offline_gblend_probe_of_validation_size(data):
  result = _train(data, blend='offline_gblend', epochs=1,
                  gblend_warmup_epochs=1,
                  gblend_probe_size=round(0.1 * len(data[0])),
                  gblend_fusion_floor=0.5)
  probe = result.gblend['probe_indices']
  assert len(probe) == len(result.validation_indices)
  assert set(probe) <= set(result.train_indices)
  np.testing.assert_allclose(result.head_weights.sum(), 1.0, rtol=1e-5)
  assert result.head_weights[-1] >= 0.5 - 1e-6
  np.testing.assert_allclose(result.gblend['z_ogr'].sum(), 1.0, rtol=1e-5)
