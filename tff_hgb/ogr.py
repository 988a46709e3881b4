"""Overfitting-to-generalization ratio maths (ALGORITHM.md §3–§4), plain TF.

All functions take per-head float vectors (order of `losses.head_names`) or
scalars, so they are testable without TFF and usable for the blended loss too.

Between two checkpoints a → b, with training loss L^T and validation loss L^V:
  O = L^V − L^T,  ΔG = L^V(a) − L^V(b),  ΔO = O(b) − O(a),  OGR = |ΔO / ΔG|.
The optimal blend weight of a head is proportional to ΔG / ΔO². Guards, always:
ΔG ← max(ΔG, 0); ΔO² ← max(ΔO², ε); anything non-finite → 0.
"""

from __future__ import annotations

import tensorflow as tf

from tff_hgb import hgb_config

DEFAULT_EPSILON = hgb_config.DEFAULT_EPSILON
DEFAULT_DELTA = hgb_config.DEFAULT_DELTA


def finite_or_zero(x: tf.Tensor) -> tf.Tensor:
  x = tf.convert_to_tensor(x, tf.float32)
  return tf.where(tf.math.is_finite(x), x, tf.zeros_like(x))


def generalization_and_overfitting(train_a, val_a, train_b, val_b):
  """Raw (ΔG, ΔO) between checkpoints a and b (no guards)."""
  train_a, val_a, train_b, val_b = (
      tf.convert_to_tensor(t, tf.float32)
      for t in (train_a, val_a, train_b, val_b))
  delta_g = val_a - val_b
  delta_o = (val_b - train_b) - (val_a - train_a)
  return delta_g, delta_o


def guarded_gain_and_squared_overfitting(train_a, val_a, train_b, val_b, *,
                                         epsilon=DEFAULT_EPSILON,
                                         relative_floor=None,
                                         present=None):
  """(max(ΔG, 0), max(ΔO², floor)) with non-finite entries → 0 gain.

  Args:
    train_a, val_a, train_b, val_b: losses at the two checkpoints.
    epsilon: absolute floor of ΔO².
    relative_floor: optional κ: ΔO² is also floored at κ · (mean ΔO² over the
      present heads), so one head whose overfitting barely moved cannot take
      all the weight (ALGORITHM.md §5b `delta_o_floor = relative`).
    present: optional 0/1 vector of heads that apply (for the relative mean).

  Returns:
    (gain, squared_overfitting), both float32, gain ≥ 0 and finite,
    squared_overfitting ≥ epsilon and finite.
  """
  delta_g, delta_o = generalization_and_overfitting(train_a, val_a, train_b,
                                                    val_b)
  finite = tf.math.logical_and(tf.math.is_finite(delta_g),
                               tf.math.is_finite(delta_o))
  gain = tf.where(finite, tf.maximum(delta_g, 0.0), tf.zeros_like(delta_g))
  squared = tf.where(finite, tf.square(delta_o), tf.zeros_like(delta_o))
  # Squaring a huge finite ΔO can overflow to inf; the ratio then is 0, as it
  # should be, but keep the value finite for downstream sums.
  squared = tf.minimum(squared, tf.float32.max)
  floor = tf.cast(epsilon, tf.float32)
  if relative_floor is not None:
    weights = (tf.ones_like(squared) if present is None else
               tf.cast(present, tf.float32))
    # Divide before summing: a sum of near-float32-max squares would overflow
    # to an infinite floor (and so an infinite ΔO² for every head).
    mean = tf.reduce_sum(
        tf.math.divide_no_nan(squared * weights, tf.reduce_sum(weights)))
    floor = tf.minimum(tf.maximum(floor, relative_floor * mean),
                       tf.float32.max)
  return gain, tf.maximum(squared, floor)


def ogr(train_a, val_a, train_b, val_b, *, epsilon=DEFAULT_EPSILON):
  """OGR = |ΔO / ΔG| (diagnostic; 0 where ΔG ≤ 0 or anything is non-finite)."""
  delta_g, delta_o = generalization_and_overfitting(train_a, val_a, train_b,
                                                    val_b)
  ratio = tf.math.divide_no_nan(tf.abs(delta_o),
                                tf.maximum(tf.abs(delta_g), epsilon))
  return finite_or_zero(tf.where(delta_g > 0, ratio, tf.zeros_like(ratio)))


def uniform_over(present):
  """Equal weights over the present heads (0/1 vector); 0s if none is."""
  present = tf.cast(present, tf.float32)
  return tf.math.divide_no_nan(present, tf.reduce_sum(present))


def normalize_over(weights, present, fallback):
  """weights / Σ over present heads; `fallback` where that sum is 0."""
  present = tf.cast(present, tf.float32)
  weights = finite_or_zero(weights) * present
  # Scale by the largest weight first so that the sum cannot overflow.
  weights = tf.math.divide_no_nan(weights, tf.reduce_max(tf.abs(weights)))
  total = tf.reduce_sum(weights)
  fallback = tf.convert_to_tensor(fallback, tf.float32)
  return tf.cond(total > 0, lambda: weights / total, lambda: fallback)


def restrict_prior(prior, present):
  """The prior z̄ restricted to a client's heads and renormalised.

  A prior that puts no mass on the client's heads falls back to uniform over
  them (e.g. a client holding only a modality no one else holds yet).
  """
  return normalize_over(prior, present, uniform_over(present))


def modality_blend_weights(train_a, val_a, train_b, val_b, present, fallback,
                           *, epsilon=DEFAULT_EPSILON, relative_floor=None):
  """M-GB: z_h ∝ ΔG_h / ΔO_h² over present heads; `fallback` if all ΔG = 0."""
  gain, squared = guarded_gain_and_squared_overfitting(
      train_a, val_a, train_b, val_b, epsilon=epsilon,
      relative_floor=relative_floor, present=present)
  # A finite gain over a tiny floor may overflow float32: such a head should
  # dominate, so saturate rather than let the non-finite guard zero it.
  return normalize_over(tf.minimum(gain / squared, tf.float32.max), present,
                        fallback)


def stabilize_blend(z, present, *, smoothing=0.0, fusion_floor=0.0):
  """Optional stabilisers of ALGORITHM.md §5b (both off by default).

  smoothing γ: z ← (1 − γ)·z + γ·uniform over present heads.
  fusion_floor: z_fusion ≥ floor (the fusion head is the last entry); the other
  heads share the rest in proportion to their weights.
  """
  z = tf.convert_to_tensor(z, tf.float32)
  smoothing = tf.cast(smoothing, tf.float32)
  z = (1.0 - smoothing) * z + smoothing * uniform_over(present)
  # Branch-free so that tensors may be passed as hyper-parameters.
  fusion, others = z[-1], z[:-1]
  others_total = tf.reduce_sum(others)
  # Without any uni-modal weight there is nothing to move to the fusion head.
  new_fusion = tf.where(others_total > 0,
                        tf.maximum(fusion, tf.cast(fusion_floor, tf.float32)),
                        fusion)
  scale = tf.math.divide_no_nan(tf.reduce_sum(z) - new_fusion, others_total)
  return tf.concat([others * scale, [new_fusion]], axis=0)


def client_weight(train_a, val_a, train_c, val_c, num_examples, *,
                  epsilon=DEFAULT_EPSILON, delta=DEFAULT_DELTA):
  """C-GB: u_k = ΔG^k / (2·(ΔO^k)²) + δ·n_k on the blended loss, A → C."""
  gain, squared = guarded_gain_and_squared_overfitting(
      train_a, val_a, train_c, val_c, epsilon=epsilon)
  u = gain / (2.0 * squared) + delta * tf.cast(num_examples, tf.float32)
  return finite_or_zero(u)
