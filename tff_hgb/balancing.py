"""MMPareto's and OGM-GE's per-step gradient maths (ALGORITHM.md §9), plain TF.

No model, no TFF: gradients arrive as lists of tensors (one per variable), so
every function here is tested against NumPy (`tests/balancing_test.py`).

*   MMPareto (Y. Wei, D. Hu, ICML 2024), per encoder: `cosine`,
    `min_norm_weight` (the two-task min-norm point), `mmpareto_weight` (½/½
    without conflict, else the min-norm point) and `mmpareto_direction` (the
    per-variable combination, rescaled and multiplied by γ).
*   OGM-GE (X. Peng, Y. Wei, A. Deng, D. Wang, D. Hu, CVPR 2022):
    `modality_logits` (the fusion head's per-modality logits),
    `confidence_scores`, `confidence_ratios`, `ogm_coefficients` (the
    official code's k = 1 − tanh(α·ρ) for a dominant modality) and
    `modulate_gradient` (k·g plus the Gaussian generalisation noise).
"""

from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

Gradients = Sequence[tf.Tensor]


# ---------------------------------------------------------------------------
# MMPareto.
# ---------------------------------------------------------------------------


def flat_dot(a: Gradients, b: Gradients) -> tf.Tensor:
  """a·b of two gradients flattened over all their variables (float32)."""
  return tf.add_n([tf.reduce_sum(tf.cast(x, tf.float32) * tf.cast(y, tf.float32))
                   for x, y in zip(a, b)])


def cosine(a: Gradients, b: Gradients) -> tf.Tensor:
  """cos(a, b) over all variables; 0 when either gradient is zero."""
  norms = tf.sqrt(flat_dot(a, a) * flat_dot(b, b))
  return tf.math.divide_no_nan(flat_dot(a, b), norms)


def min_norm_weight(g_f: Gradients, g_m: Gradients) -> tf.Tensor:
  """k_f of the two-task min-norm point min_k ‖k g_f + (1−k) g_m‖.

  k_f = clip(((g_m − g_f)·g_m) / ‖g_f − g_m‖², 0, 1); ½ when g_f = g_m
  (then every k gives the same point).
  """
  difference = [f - m for f, m in zip(g_f, g_m)]
  squared_distance = flat_dot(difference, difference)
  numerator = -flat_dot(difference, g_m)
  k = tf.math.divide_no_nan(numerator, squared_distance)
  return tf.where(squared_distance > 0, tf.clip_by_value(k, 0.0, 1.0), 0.5)


def mmpareto_weight(g_f: Gradients, g_m: Gradients
                    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(k_f, conflict, cos): ½ if cos(g_f, g_m) > 0, else the min-norm point.

  `conflict` is 1.0 when cos ≤ 0 (the min-norm branch), else 0.0. A zero
  gradient conflicts with nothing: then (½, ½) gives the summed gradient
  (the min-norm point would be 0, and the authors' code, which clips k_f to
  0.999, rescales its 0.002·g back to the summed gradient's norm).
  """
  cos = cosine(g_f, g_m)
  conflict = tf.logical_and(
      cos <= 0.0, tf.logical_and(flat_dot(g_f, g_f) > 0,
                                 flat_dot(g_m, g_m) > 0))
  k_f = tf.where(conflict, min_norm_weight(g_f, g_m), 0.5)
  return k_f, tf.cast(conflict, tf.float32), cos


def mmpareto_direction(g_f: Gradients, g_m: Gradients, k_f,
                       gamma) -> list[tf.Tensor]:
  """Encoder m's update direction, per variable v (the official code's rule).

  new_v = 2 k_f g_f,v + 2 (1 − k_f) g_m,v; if it is shorter than the summed
  gradient g_f,v + g_m,v it is rescaled to that norm; then multiplied by γ.
  A zero new_v stays zero (antiparallel gradients have the min-norm point 0).
  """
  k_f = tf.cast(k_f, tf.float32)
  directions = []
  for f, m in zip(g_f, g_m):
    new = 2.0 * k_f * f + 2.0 * (1.0 - k_f) * m
    scale = tf.math.divide_no_nan(tf.norm(f + m), tf.norm(new))
    new = tf.where(scale > 1.0, scale * new, new)
    directions.append(tf.cast(gamma, tf.float32) * new)
  return directions


# ---------------------------------------------------------------------------
# OGM-GE.
# ---------------------------------------------------------------------------


def modality_logits(fused_features: tf.Tensor, kernel: tf.Tensor,
                    bias: tf.Tensor, feature_sizes: Sequence[int]
                    ) -> list[tf.Tensor]:
  """out_m = h_m W_m + b/M: the fusion head's logits from modality m alone.

  Args:
    fused_features: [B, Σ d_m], the (masked) features the fusion head takes,
      modality m's d_m columns in modality order.
    kernel: the fusion head's kernel [Σ d_m, C]; W_m its rows for m.
    bias: its bias [C].
    feature_sizes: d_m per modality.
  """
  num_modalities = len(feature_sizes)
  features = tf.split(fused_features, list(feature_sizes), axis=-1)
  kernels = tf.split(kernel, list(feature_sizes), axis=0)
  return [h @ w + bias / num_modalities for h, w in zip(features, kernels)]


def confidence_scores(logits: Sequence[tf.Tensor], labels: tf.Tensor,
                      presence: tf.Tensor) -> tf.Tensor:
  """s_m: mean over the examples holding m of softmax(out_m)[y]; [M].

  The official code sums over the batch; with every modality present the
  ratios of means equal its ratios of sums. 0 for a modality absent from
  the whole batch.

  Args:
    logits: out_m per modality, each [B, C].
    labels: [B] integer labels.
    presence: [B, M] 0/1 masks of the modalities.
  """
  labels = tf.cast(labels, tf.int32)
  presence = tf.cast(presence, tf.float32)
  scores = []
  for i, out in enumerate(logits):
    probability = tf.gather(tf.nn.softmax(out), labels, axis=1, batch_dims=1)
    scores.append(tf.math.divide_no_nan(
        tf.reduce_sum(probability * presence[:, i]),
        tf.reduce_sum(presence[:, i])))
  return tf.stack(scores)


def confidence_ratios(scores: tf.Tensor, present: tf.Tensor
                      ) -> tuple[tf.Tensor, tf.Tensor]:
  """(ρ, defined): ρ_m = s_m / mean_{j≠m, j present} s_j.

  For M = 2 this is the official ρ = s_1/s_2 (and its inverse). `defined` is
  1.0 for a present modality with at least one other present modality, else
  0.0 (and ρ is 1 there, so nothing is modulated).

  Args:
    scores: s_m, [M].
    present: [M], 1.0 where the modality is in the batch.
  """
  present = tf.cast(present, tf.float32)
  others_sum = tf.reduce_sum(scores * present) - scores * present
  others_count = tf.reduce_sum(present) - present
  defined = present * tf.cast(others_count > 0, tf.float32)
  others_mean = tf.math.divide_no_nan(others_sum, others_count)
  ratio = tf.math.divide_no_nan(scores, others_mean)
  return tf.where(defined > 0, ratio, 1.0), defined


def ogm_coefficients(ratios: tf.Tensor, defined: tf.Tensor,
                     alpha) -> tf.Tensor:
  """k_m = 1 − tanh(α·ρ_m) for a dominant modality (ρ_m > 1), else 1.

  The official code's form (the paper writes α·(ρ − 1)); DESIGN.md says why.
  """
  dominant = tf.logical_and(defined > 0, ratios > 1.0)
  return tf.where(dominant,
                  1.0 - tf.tanh(tf.cast(alpha, tf.float32) * ratios), 1.0)


def modulate_gradient(gradient: tf.Tensor, coefficient, noise_scale=0.0,
                      seed: Optional[tf.Tensor] = None) -> tf.Tensor:
  """OGM-GE on one kernel gradient: k·g + N(0, (σ·std(g))²), σ = noise_scale.

  Only kernels (rank ≥ 2) are modulated, as in the official code; a bias
  (rank < 2) is returned unchanged. std(g) is that of the unmodulated
  gradient; `seed` is a stateless-RNG seed (int32 [2]); without a seed, no
  noise (plain OGM).
  """
  if gradient.shape.rank is None or gradient.shape.rank < 2:
    return gradient
  if seed is None:
    return tf.cast(coefficient, gradient.dtype) * gradient
  std = tf.math.reduce_std(gradient)
  noise = tf.random.stateless_normal(tf.shape(gradient), seed,
                                     dtype=gradient.dtype)
  return (tf.cast(coefficient, gradient.dtype) * gradient +
          tf.cast(noise_scale, gradient.dtype) * std * noise)
