"""Per-head masked losses (tff_hgb/losses.py) against NumPy (ALGORITHM.md §2)."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tff_hgb import losses


def np_cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64)
  top = logits.max(axis=1, keepdims=True)
  lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
  return lse - logits[np.arange(len(labels)), labels]


def np_head_statistics(logits, labels, masks, modalities):
  """Reference: per head, sums over the examples where the head applies."""
  heads = list(modalities) + ['fusion']
  present = np.stack([np.asarray(masks[m]) > 0 for m in modalities], axis=1)
  applies = np.concatenate([present, present.any(axis=1, keepdims=True)], 1)
  loss_sum, correct, count = [], [], []
  for j, h in enumerate(heads):
    rows = applies[:, j]
    lg = np.asarray(logits[h], np.float64)[rows]
    y = np.asarray(labels)[rows]
    loss_sum.append(np_cross_entropy(lg, y).sum() if rows.any() else 0.0)
    correct.append(float((lg.argmax(axis=1) == y).sum()))
    count.append(float(rows.sum()))
  return np.array(loss_sum), np.array(correct), np.array(count)


def random_batch(rng, modalities, batch, num_classes, p_present=0.6):
  logits = collections.OrderedDict(
      (h, rng.normal(0, 3, size=(batch, num_classes)).astype(np.float32))
      for h in losses.head_names(modalities))
  masks = collections.OrderedDict(
      (m, (rng.random(batch) < p_present).astype(np.float32))
      for m in modalities)
  labels = rng.integers(0, num_classes, size=batch).astype(np.int32)
  return logits, labels, masks


def test_head_names_order_and_fusion_last():
  assert losses.head_names(['rgb', 'audio', 'flow']) == [
      'rgb', 'audio', 'flow', 'fusion']
  assert losses.head_names(('b', 'a')) == ['b', 'a', 'fusion']
  assert losses.head_names(['x']) == ['x', 'fusion']
  assert losses.FUSION == 'fusion'


def test_head_names_rejects_a_modality_named_fusion():
  with pytest.raises(ValueError, match='fusion'):
    losses.head_names(['rgb', 'fusion'])
  with pytest.raises(ValueError, match='fusion'):
    losses.head_names(['fusion'])


def test_head_masks():
  masks = {'a': tf.constant([1.0, 0.0, 1.0, 0.0]),
           'b': tf.constant([1.0, 1.0, 0.0, 0.0])}
  out = losses.head_masks(masks, ['a', 'b']).numpy()
  np.testing.assert_array_equal(out, [[1, 1, 1], [0, 1, 1], [1, 0, 1],
                                      [0, 0, 0]])
  # Order follows `modalities`, not the mapping.
  out = losses.head_masks(masks, ['b', 'a']).numpy()
  np.testing.assert_array_equal(out[:, 0], [1, 1, 0, 0])
  # Single modality: fusion equals that modality's mask.
  out = losses.head_masks({'a': tf.constant([0.0, 1.0])}, ['a']).numpy()
  np.testing.assert_array_equal(out, [[0, 0], [1, 1]])


def test_head_statistics_matches_numpy_reference():
  rng = np.random.default_rng(0)
  for trial in range(40):
    m = int(rng.integers(1, 4))
    modalities = [f'm{i}' for i in range(m)]
    batch = int(rng.integers(1, 17))
    k = int(rng.integers(2, 7))
    logits, labels, masks = random_batch(rng, modalities, batch, k,
                                         p_present=rng.choice([0.0, 0.5, 1.0]))
    loss_sum, correct, count = losses.head_statistics(logits, labels, masks,
                                                      modalities)
    ref = np_head_statistics(logits, labels, masks, modalities)
    for got, want in zip((loss_sum, correct, count), ref):
      assert got.shape == (m + 1,), trial
      np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_absent_entries_contribute_nothing_even_with_non_finite_logits():
  rng = np.random.default_rng(1)
  modalities = ['a', 'b']
  logits, labels, masks = random_batch(rng, modalities, 8, 4)
  masks['a'] = np.array([1, 0, 1, 0, 1, 0, 1, 1], np.float32)
  masks['b'] = np.array([0, 0, 1, 1, 1, 0, 0, 1], np.float32)
  ref = np_head_statistics(logits, labels, masks, modalities)
  # Rows 1 and 5 lack both modalities (absent for fusion too).
  poisoned = {h: v.copy() for h, v in logits.items()}
  for h, rows in (('a', masks['a'] == 0), ('b', masks['b'] == 0),
                  ('fusion', (masks['a'] + masks['b']) == 0)):
    bad = np.array([np.inf, -np.inf, np.nan, 1e30], np.float32)
    poisoned[h][rows] = bad[:poisoned[h].shape[1]]
    poisoned[h][np.flatnonzero(rows)[:1]] = 3e38  # Huge and finite.
  stats = losses.head_statistics(poisoned, labels, masks, modalities)
  for got, want in zip(stats, ref):
    assert np.all(np.isfinite(got.numpy()))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)

  # Gradients too: an absent entry gets exactly zero gradient, not NaN.
  variables = {h: tf.Variable(v) for h, v in poisoned.items()}
  with tf.GradientTape() as tape:
    loss_sum, _, count = losses.head_statistics(variables, labels, masks,
                                                modalities)
    loss = losses.blended_loss(losses.mean_head_losses(loss_sum, count),
                               tf.constant([0.25, 0.25, 0.5]))
  grads = tape.gradient(loss, variables)
  assert np.isfinite(loss.numpy())
  for h, g in grads.items():
    g = g.numpy()
    assert np.all(np.isfinite(g)), h
    rows = ((masks[h] == 0) if h != 'fusion' else
            ((masks['a'] + masks['b']) == 0))
    np.testing.assert_array_equal(g[rows], 0.0)
    assert np.any(g[~rows] != 0.0), h


def test_head_statistics_gradient_matches_numpy():
  # d(mean CE over present rows)/d logits = (softmax − onehot) / count.
  rng = np.random.default_rng(2)
  logits, labels, masks = random_batch(rng, ['a'], 6, 3)
  masks['a'] = np.array([1, 1, 0, 1, 0, 1], np.float32)
  variable = tf.Variable(logits['a'])
  with tf.GradientTape() as tape:
    loss_sum, _, count = losses.head_statistics(
        {'a': variable, 'fusion': logits['fusion']}, labels, masks, ['a'])
    loss = losses.mean_head_losses(loss_sum, count)[0]
  g = tape.gradient(loss, variable).numpy()
  lg = logits['a'].astype(np.float64)
  p = np.exp(lg - lg.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  p[np.arange(6), labels] -= 1
  want = p * masks['a'][:, None] / masks['a'].sum()
  np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_head_statistics_inside_tf_function_and_int64_labels():
  rng = np.random.default_rng(3)
  modalities = ['a', 'b']
  logits, labels, masks = random_batch(rng, modalities, 5, 3)
  fn = tf.function(lambda lg, y, mk: losses.head_statistics(lg, y, mk,
                                                            modalities))
  stats = fn(logits, tf.constant(labels, tf.int64), masks)
  for got, want in zip(stats, np_head_statistics(logits, labels, masks,
                                                 modalities)):
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_mean_head_losses():
  out = losses.mean_head_losses(tf.constant([3.0, 0.0, 5.0]),
                                tf.constant([2.0, 0.0, 4.0])).numpy()
  np.testing.assert_allclose(out, [1.5, 0.0, 1.25])
  assert np.all(np.isfinite(out))


def test_empty_heads_have_zero_mean_loss():
  # Nobody has modality 'b': its loss is 0, not NaN.
  rng = np.random.default_rng(4)
  logits, labels, masks = random_batch(rng, ['a', 'b'], 4, 3)
  masks['a'] = np.ones(4, np.float32)
  masks['b'] = np.zeros(4, np.float32)
  loss_sum, _, count = losses.head_statistics(logits, labels, masks,
                                              ['a', 'b'])
  mean = losses.mean_head_losses(loss_sum, count).numpy()
  assert count.numpy()[1] == 0 and mean[1] == 0.0
  np.testing.assert_allclose(
      mean[[0, 2]],
      [np_cross_entropy(logits['a'], labels).mean(),
       np_cross_entropy(logits['fusion'], labels).mean()], rtol=1e-5)


def test_blended_loss():
  head = tf.constant([1.0, 2.0, 4.0])
  np.testing.assert_allclose(
      losses.blended_loss(head, [0.5, 0.25, 0.25]).numpy(), 2.0)
  np.testing.assert_allclose(
      losses.blended_loss(head, np.array([0, 0, 1], np.float64)).numpy(), 4.0)
  rng = np.random.default_rng(5)
  for _ in range(20):
    h = int(rng.integers(1, 6))
    l = rng.random(h).astype(np.float32) * 5
    z = rng.random(h).astype(np.float32)
    np.testing.assert_allclose(losses.blended_loss(l, z).numpy(),
                               float(np.dot(l.astype(np.float64), z)),
                               rtol=1e-5)
