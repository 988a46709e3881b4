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
