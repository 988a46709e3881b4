"""OGR-weighted aggregation beyond one scalar weight (ALGORITHM.md §5, §5b).

The default HGB process hands each client's delta and its scalar weight u_k (or
n_k) to any `tff.aggregators.WeightedAggregationFactory`. Two options need more
than a scalar, so the client reports a structured weight
`OrderedDict(num_examples=n_k, ogr=u_k, modalities=float32[M] 0/1)` and this
module's aggregation combines them:

* client-weight mixing λ (§5b): p_k ∝ (1−λ)·n_k/Σn + λ·u_k/Σu;
* modality-aware averaging (§5): the variables of encoder m and head m are
  averaged only over the clients that hold m, so clients without m do not
  dilute its update; shared variables (fusion head) over every client.

Both are one `federated_sum` of a struct (Σ n g Δ, Σ u g Δ, Σ n g, Σ u g per
variable group g) followed by server-side division: no aggregation depends on
another, so TFF's mergeable context can still split the round across workers.
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def structured_weight_type(num_modalities: int) -> tff.Type:
  return tff.types.StructWithPythonType(
      [('num_examples', tff.TensorType(np.float32)),
       ('ogr', tff.TensorType(np.float32)),
       ('modalities', tff.TensorType(np.float32, [num_modalities]))],
      collections.OrderedDict)


def _group_factors(weight, variable_groups):
  """Per variable: 1 for shared ones, 1[client holds m] for modality m's."""
  return [tf.constant(1.0) if group is None else weight['modalities'][group]
          for group in variable_groups]


def client_contribution(delta, weight, variable_groups):
  """Plain TF: one client's terms of the four sums."""
  factors = _group_factors(weight, variable_groups)
  n, u = weight['num_examples'], weight['ogr']
  return collections.OrderedDict(
      n_delta=[n * f * d for f, d in zip(factors, delta)],
      u_delta=[u * f * d for f, d in zip(factors, delta)],
      n=[n * f for f in factors],
      u=[u * f for f in factors])


def combine(totals, mix):
  """Plain TF: Δ̄ per variable = (1−λ)·ΣnΔ/Σn + λ·ΣuΔ/Σu (0 where no weight)."""
  return [
      (1.0 - mix) * tf.math.divide_no_nan(n_delta, n) +
      mix * tf.math.divide_no_nan(u_delta, u)
      for n_delta, u_delta, n, u in zip(totals['n_delta'], totals['u_delta'],
                                        totals['n'], totals['u'])
  ]


def build_structured_mean(
    value_type: tff.Type,
    num_modalities: int,
    *,
    client_weight_mix: float = 1.0,
    variable_groups: Optional[Sequence[Optional[int]]] = None,
) -> tff.templates.AggregationProcess:
  """An aggregation of deltas with structured client weights.

  Args:
    value_type: the (unplaced) type of a client's delta: a struct of tensors in
      the order of the model's trainable variables.
    num_modalities: M, the length of the weight's `modalities` vector.
    client_weight_mix: λ ∈ [0, 1]; 1 weights clients by u_k (the paper), 0 by
      n_k.
    variable_groups: for each variable, the index of its modality (encoder or
      uni-modal head) or None for shared variables; None for every variable
      turns modality-aware averaging off.

  Returns:
    A `tff.templates.AggregationProcess` with
      initialize: ( -> <>@SERVER)
      next: (<<>@SERVER, value_type@CLIENTS, weight@CLIENTS> ->
             <state=<>@SERVER, result=value_type@SERVER, measurements=<>@SERVER>)
  """
  if not 0.0 <= client_weight_mix <= 1.0:
    raise ValueError('client_weight_mix must lie in [0, 1], got '
                     f'{client_weight_mix}.')
  num_variables = len(value_type)
  if variable_groups is None:
    variable_groups = [None] * num_variables
  variable_groups = list(variable_groups)
  if len(variable_groups) != num_variables:
    raise ValueError(f'variable_groups has {len(variable_groups)} entries for '
                     f'{num_variables} variables.')
  weight_type = structured_weight_type(num_modalities)

  @tff.federated_computation
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.tensorflow.computation(value_type, weight_type)
  def contribute(delta, weight):
    return client_contribution(list(delta), weight, variable_groups)

  @tff.tensorflow.computation(contribute.type_signature.result)
  def finish(totals):
    return combine(totals, client_weight_mix)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(value_type, tff.CLIENTS),
                             tff.FederatedType(weight_type, tff.CLIENTS))
  def next_fn(state, value, weight):
    totals = tff.federated_sum(tff.federated_map(contribute, (value, weight)))
    mean = tff.federated_map(finish, totals)
    return tff.templates.MeasuredProcessOutput(
        state=state, result=mean,
        measurements=tff.federated_value((), tff.SERVER))

  return tff.templates.AggregationProcess(init_fn, next_fn)


# ---------------------------------------------------------------------------
# Capping any client's share of the mean (§5b `max_client_share`).
# ---------------------------------------------------------------------------

# Water-filling passes: exact whenever at most this many minus one clients
# exceed the cap (each pass finds at least one more such client, or stops).
DEFAULT_CAP_PASSES = 6


def water_filling_step(threshold, weighted_below, count_at_or_above,
                       max_share):
  """Plain TF: the next threshold t of the cap's water-filling.

  With capped weights min(w_k, t), a share t/Σ_k min(w_k, t) equal to the cap c
  for every capped client needs t = c·U/(1 − c·|C|), U the sum of the weights
  below t and |C| the number at or above it. Starting from t = ∞, t only falls
  and the capped set only grows, so it converges in at most K steps. A step
  that would make t non-positive (c·|C| ≥ 1: the cap cannot be met, e.g.
  c < 1/K) keeps t, which leaves the capped clients equal.
  """
  denominator = 1.0 - max_share * count_at_or_above
  proposed = tf.math.divide_no_nan(max_share * weighted_below, denominator)
  return tf.where((denominator > 0.0) & (proposed > 0.0), proposed, threshold)


class CappedMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """A weighted mean in which no client's share exceeds a cap (§5b).

  Weights w_k become min(w_k, t), with t found by water-filling so that every
  capped client has share exactly `max_share` (when that is feasible) and the
  others keep their relative weights; the capped weights then go to `inner`
  (default `tff.aggregators.MeanFactory()`), so the result is a mean of the
  values with shares ≤ max_share.

  The cap needs the round's total weight before any client's weight is known,
  so each water-filling pass is a `federated_sum` followed by a
  `federated_broadcast` of the new threshold: the aggregation depends on an
  earlier aggregation. TFF's single-machine contexts run this; a context that
  splits one round's clients across worker machines cannot (use λ-mixing or
  tempering there, which are single sums).

  The process's `next` has type
    (<inner_state@SERVER, value@CLIENTS, float32@CLIENTS> ->
     <state=inner_state@SERVER, result=value@SERVER,
      measurements=<mean=inner_measurements, capped_clients=float32,
                    max_share=float32>@SERVER>).
  """

  def __init__(self, max_share: Optional[float] = None, *,
               max_share_over_uniform: Optional[float] = None,
               inner: Optional[tff.aggregators.WeightedAggregationFactory] = None,
               passes: int = DEFAULT_CAP_PASSES):
    """Either an absolute cap or one relative to the uniform share 1/K.

    Args:
      max_share: the cap c ∈ (0, 1] on any client's share.
      max_share_over_uniform: the cap as a multiple r ≥ 1 of 1/K, K the
        round's number of clients (c = r/K; r = 2 is the 2/K of ALGORITHM.md
        §5b whatever the clients per round).
      inner: the weighted aggregation receiving the capped weights.
      passes: water-filling passes (≥ 1).
    """
    if (max_share is None) == (max_share_over_uniform is None):
      raise ValueError('give exactly one of max_share and '
                       'max_share_over_uniform.')
    if max_share is not None and not 0.0 < max_share <= 1.0:
      raise ValueError(f'max_share must lie in (0, 1], got {max_share}.')
    if max_share_over_uniform is not None and max_share_over_uniform < 1.0:
      raise ValueError('max_share_over_uniform must be ≥ 1 (a cap below the '
                       f'uniform share 1/K), got {max_share_over_uniform}.')
    if passes < 1:
      raise ValueError(f'passes must be ≥ 1, got {passes}.')
    if inner is not None and not isinstance(
        inner, tff.aggregators.WeightedAggregationFactory):
      raise TypeError('inner must be a WeightedAggregationFactory, got '
                      f'{type(inner).__name__}.')
    self._max_share = max_share
    self._over_uniform = max_share_over_uniform
    self._inner = inner or tff.aggregators.MeanFactory()
    self._passes = passes

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type, weight_type)
    weight_dtype = weight_type.dtype.type
    absolute, over_uniform = self._max_share, self._over_uniform

    @tff.tensorflow.computation(weight_type, weight_type)
    def below_stats(weight, threshold):
      below = tf.cast(weight < threshold, weight.dtype)
      return collections.OrderedDict(
          weighted_below=weight * below, at_or_above=1.0 - below,
          clients=tf.ones_like(weight))

    stats_type = below_stats.type_signature.result

    @tff.tensorflow.computation(stats_type)
    def cap_of(stats):
      if absolute is not None:
        return tf.constant(absolute, weight_dtype)
      return tf.cast(over_uniform, weight_dtype) / tf.maximum(
          stats['clients'], 1.0)

    @tff.tensorflow.computation(weight_type, stats_type, weight_type)
    def step(threshold, stats, cap):
      return water_filling_step(threshold, stats['weighted_below'],
                                stats['at_or_above'], cap)

    @tff.tensorflow.computation(weight_type, weight_type)
    def is_capped(weight, threshold):
      return tf.cast(weight >= threshold, weight.dtype)

    @tff.tensorflow.computation(weight_type, weight_type)
    def capped(weight, threshold):
      return tf.minimum(weight, threshold)

    @tff.federated_computation(inner.initialize.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS),
                               tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      threshold = tff.federated_value(np.finfo(weight_dtype).max, tff.SERVER)
      cap = None
      for _ in range(self._passes):
        stats = tff.federated_sum(tff.federated_map(
            below_stats, (weight, tff.federated_broadcast(threshold))))
        if cap is None:
          cap = tff.federated_map(cap_of, stats)  # t = ∞: every client below.
        threshold = tff.federated_map(step, (threshold, stats, cap))
      final_threshold = tff.federated_broadcast(threshold)
      capped_weight = tff.federated_map(capped, (weight, final_threshold))
      capped_clients = tff.federated_sum(
          tff.federated_map(is_capped, (weight, final_threshold)))
      output = inner.next(state, value, capped_weight)
      measurements = tff.federated_zip(collections.OrderedDict(
          mean=output.measurements, capped_clients=capped_clients,
          max_share=cap))
      return tff.templates.MeasuredProcessOutput(
          state=output.state, result=output.result, measurements=measurements)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)
