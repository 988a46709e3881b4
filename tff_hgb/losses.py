"""Per-head masked losses and the blended loss (ALGORITHM.md §2), plain TF.

Heads are ordered as `head_names(modalities)`: one uni-modal head per modality,
then the fusion head. Head quantities travel as float32 vectors in that order.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import tensorflow as tf

FUSION = 'fusion'


def head_names(modalities: Sequence[str]) -> list[str]:
  """Heads H = {1..M, f}, in the order every head vector uses."""
  if FUSION in modalities:
    raise ValueError(f'A modality may not be named {FUSION!r}: that name is '
                     'the fusion head.')
  return list(modalities) + [FUSION]


def head_masks(masks: Mapping[str, tf.Tensor],
               modalities: Sequence[str]) -> tf.Tensor:
  """[batch, H] float mask: where each head's loss counts.

  A uni-modal head counts where its modality is present; the fusion head counts
  for every example that has at least one modality.
  """
  per_modality = [tf.cast(masks[m], tf.float32) for m in modalities]
  stacked = tf.stack(per_modality, axis=1)
  fusion = tf.cast(tf.reduce_max(stacked, axis=1, keepdims=True) > 0,
                   tf.float32)
  return tf.concat([stacked, fusion], axis=1)


def head_statistics(logits: Mapping[str, tf.Tensor], labels: tf.Tensor,
                    masks: Mapping[str, tf.Tensor],
                    modalities: Sequence[str]):
  """Sums over a batch, per head: (loss_sum [H], correct [H], count [H])."""
  heads = head_names(modalities)
  weight = head_masks(masks, modalities)
  labels = tf.cast(labels, tf.int32)
  # Zero the logits of masked-out entries before the cross-entropy: a
  # non-finite logit there would otherwise give a NaN gradient (0 · NaN),
  # even though its loss is dropped below.
  losses = tf.stack([
      tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=labels,
          logits=tf.where(weight[:, i:i + 1] > 0,
                          tf.cast(logits[h], tf.float32), 0.0))
      for i, h in enumerate(heads)
  ], axis=1)
  correct = tf.stack([
      tf.cast(tf.equal(tf.argmax(logits[h], axis=-1, output_type=tf.int32),
                       labels), tf.float32) for h in heads
  ], axis=1)
  # Zero the loss of masked-out entries explicitly (0 * inf would be NaN).
  loss_sum = tf.reduce_sum(tf.where(weight > 0, losses, 0.0), axis=0)
  return (loss_sum, tf.reduce_sum(correct * weight, axis=0),
          tf.reduce_sum(weight, axis=0))


def mean_head_losses(loss_sum: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
  """L_h = mean over the examples where h applies; 0 where none does."""
  return tf.math.divide_no_nan(loss_sum, count)


def blended_loss(head_losses: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
  """L_z = Σ_h z_h · L_h."""
  return tf.reduce_sum(tf.cast(z, tf.float32) * head_losses)
