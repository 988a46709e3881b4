"""FedAttn (attentive aggregation) as a composable TFF `LearningProcess`.

FedAttn is proposed in:

Learning Private Neural Language Modeling with Attentive Aggregation
    Shaoxiong Ji, Shirui Pan, Guodong Long, Xue Li, Jing Jiang, Zi Huang.
    IJCNN 2019. https://arxiv.org/abs/1812.07108

The server weighs the clients of a round separately for every layer (here:
every trainable variable tensor) by an attention over the distance between the
server model and each client model:

```
Δ_k^l = w^l - w_k^l                          (layer l of client k's delta)
d_k^l = ‖Δ_k^l‖_F                            (Frobenius norm)
α_k^l = softmax_k(d_k^l) = exp(d_k^l) / Σ_j exp(d_j^l)
w^l  ←  w^l - ε Σ_k α_k^l Δ_k^l              (ε: server step size, default 1.2)
```

The paper's optional Gaussian noise on the update (for differential privacy)
is not part of this process; use a noising `model_aggregator` if needed.

The round uses a single aggregation: each client sends, per layer,
`(exp(d_k^l) Δ_k^l, exp(d_k^l))`; one sum over clients arrives at the server,
which divides the two parts and scales by ε. No aggregation depends on another,
so TFF's mergeable execution context can split a round's clients across
workers.

Why the distances are clipped: the numerically usual softmax subtracts
max_k d_k before exponentiating, but that maximum is itself an aggregation the
sum would depend on (so the round could no longer be split across workers).
Without it, exp(d) overflows float32 for d > 88.7. Since d ≥ 0, exp(d) ≥ 1 and
the denominator cannot underflow; only overflow needs guarding, so each d_k^l
is clipped at `max_distance` (default `DEFAULT_MAX_DISTANCE` = 50:
exp(50) ≈ 5.2e21 leaves float32 (max 3.4e38) room for Σ_k |Δ_k| up to ~6e16).
The result is the exact softmax whenever all distances are below the clip; a
client farther away than the clip ties with the others beyond it.

The maths are plain TensorFlow functions (`layer_distances`,
`attention_terms`, `attention_step`); the TFF plumbing composes TFF's broadcast
distributor, TFF's model-delta client work (uniform weighting: weight 1, or 0
for a client whose delta is non-finite), an attention aggregator and TFF's
`build_apply_optimizer_finalizer` (argument checks and composition:
`tff_hgb.process_utils`, shared with FedNova).
"""

import collections
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import process_utils

DEFAULT_EPSILON = 1.2
DEFAULT_MAX_DISTANCE = 50.0
DEFAULT_LOOP_IMPLEMENTATION = tff.learning.LoopImplementation.DATASET_REDUCE

WEIGHTED_DELTA_KEY = 'weighted_delta'
SCORE_KEY = 'score'
EXCLUDED_KEY = 'excluded'
# exp(d) is finite in float32 for d < 88.7.
_FLOAT32_MAX_EXP_ARGUMENT = 88.0


# ----------------------------------------------------------------------------
# The maths (plain TensorFlow, no TFF).
# ----------------------------------------------------------------------------


def layer_distances(model_delta: Any) -> list[tf.Tensor]:
  """d^l = ‖Δ^l‖_F for every tensor of the (flattened) delta structure."""
  return [tf.norm(tf.reshape(d, [-1])) for d in tf.nest.flatten(model_delta)]


def attention_terms(model_delta: Any, weight: tf.Tensor,
                    max_distance: float = DEFAULT_MAX_DISTANCE) -> Any:
  """Client side: the per-layer terms `(exp(d) Δ, exp(d))` that are summed.

  Args:
    model_delta: Δ_k, a structure of float tensors.
    weight: float32 scalar; 1 for a client that takes part, 0 for an excluded
      one (its terms are all zero, whatever its delta holds). Other values
      scale the client's attention logits multiplicatively.
    max_distance: distances are clipped here before exponentiating (see the
      module docstring).

  Returns:
    `OrderedDict(weighted_delta=<exp(d^l) Δ^l, structure of model_delta>,
    score=<exp(d^l) per layer, tuple>, excluded=1.0 if weight == 0 else 0.0)`.
  """
  include = weight > 0
  flat = tf.nest.flatten(model_delta)
  scores = []
  weighted = []
  for delta, distance in zip(flat, layer_distances(model_delta)):
    score = tf.exp(tf.minimum(distance, max_distance)) * weight
    score = tf.where(include, score, tf.zeros_like(score))
    scores.append(score)
    weighted.append(tf.where(include, tf.cast(score, delta.dtype) * delta,
                             tf.zeros_like(delta)))
  return collections.OrderedDict([
      (WEIGHTED_DELTA_KEY, tf.nest.pack_sequence_as(model_delta, weighted)),
      (SCORE_KEY, tuple(scores)),
      (EXCLUDED_KEY, tf.where(include, 0.0, 1.0)),
  ])


def attention_step(summed_terms: Any, epsilon: float) -> Any:
  """Server side: ε Σ_k α_k^l Δ_k^l = ε Σ exp(d) Δ / Σ exp(d), per layer.

  Args:
    summed_terms: the sum over clients of `attention_terms` outputs.
    epsilon: the server step size ε.

  Returns:
    The server model delta (w ← w - delta), with the structure of
    `weighted_delta`; zero for a layer no client contributed to.
  """
  weighted = summed_terms[WEIGHTED_DELTA_KEY]
  flat = [
      tf.cast(epsilon, d.dtype) * tf.math.divide_no_nan(d, tf.cast(s, d.dtype))
      for d, s in zip(tf.nest.flatten(weighted),
                      tf.nest.flatten(summed_terms[SCORE_KEY]))
  ]
  return tf.nest.pack_sequence_as(weighted, flat)


# ----------------------------------------------------------------------------
# Aggregator: one sum of the per-layer terms, then the server division.
# ----------------------------------------------------------------------------


def _build_aggregator(
    value_type: tff.Type,
    *,
    epsilon: float,
    max_distance: float,
    sum_factory: tff.aggregators.UnweightedAggregationFactory,
) -> tff.templates.AggregationProcess:
  """`(<S@SERVER, Δ@CLIENTS, float32@CLIENTS> -> <S, Δ@SERVER, measurements>)`.

  The weight is 1 for a client that takes part and 0 for one that is excluded
  (TFF's model-delta client work with uniform weighting gives 0 exactly to the
  clients whose delta is non-finite). Measurements: those of `sum_factory` and
  `num_non_finite_clients` (clients of weight 0).
  """

  @tff.tensorflow.computation(value_type, np.float32)
  def client_terms(model_delta, weight):
    return attention_terms(model_delta, weight, max_distance)

  inner, inner_result_type = process_utils.create_type_preserving_aggregation(
      sum_factory, client_terms.type_signature.result)

  @tff.tensorflow.computation(inner_result_type)
  def server_step(summed_terms):
    return attention_step(summed_terms, epsilon)

  @tff.tensorflow.computation(inner_result_type)
  def num_excluded(summed_terms):
    return tf.cast(tf.round(summed_terms[EXCLUDED_KEY]), tf.int32)

  return process_utils.build_aggregation_with_server_step(
      inner, value_type, client_step=client_terms, server_step=server_step,
      measurement_name='num_non_finite_clients', measurement=num_excluded)


# ----------------------------------------------------------------------------
# The learning process.
# ----------------------------------------------------------------------------


def _check_positive_float(value, name):
  process_utils.check_float(value, name)
  if not np.isfinite(value) or value <= 0:
    raise ValueError(f'`{name}` must be a positive finite number; got {value}.')


def build_fedattn_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    epsilon: float = DEFAULT_EPSILON,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    model_aggregator: Optional[
        tff.aggregators.UnweightedAggregationFactory] = None,
    metrics_aggregator: Optional[Callable[..., tff.Computation]] = None,
    loop_implementation: tff.learning.LoopImplementation = DEFAULT_LOOP_IMPLEMENTATION,
) -> tff.learning.templates.LearningProcess:
  """Returns a `tff.learning.templates.LearningProcess` running FedAttn.

  Each round the server model w is broadcast; client k trains it with
  `client_optimizer_fn` over its dataset (one step per batch; repeat the
  dataset for several local epochs) and returns Δ_k = w - w_k; the server
  computes, per trainable tensor l, ε Σ_k softmax_k(‖Δ_k^l‖) Δ_k^l from one sum
  (see the module docstring) and applies it with `server_optimizer_fn` (by
  default SGD with learning rate 1.0: w ← w - ε Σ_k α_k Δ_k). Clients are not
  weighted by their number of examples (as in the paper). A client whose delta
  has a non-finite entry is excluded from the attention and counted.

  The process has the methods and types listed in
  `tff_hgb.process_utils.compose_broadcast_process`, with the metrics
  `M = <distributor=<>, client_work=<train=<model metrics>>,
  aggregator=<model_aggregator=..., num_non_finite_clients=int32>,
  finalizer=<update_non_finite=int32>>`.

  Args:
    model_fn: Returns a new `tff.learning.models.VariableModel` per call.
    client_optimizer_fn: A `tff.learning.optimizers.Optimizer` for local
      training.
    epsilon: ε > 0, the step size of the attentive server update.
    server_optimizer_fn: A `tff.learning.optimizers.Optimizer` applying the
      attentive update ε Σ α Δ at the server. Default: SGD with learning rate
      1.0.
    max_distance: > 0; layer distances are clipped here before the softmax
      (guards float32 overflow without a second aggregation; see the module
      docstring).
    model_aggregator: A `tff.aggregators.UnweightedAggregationFactory` summing
      the per-layer struct `(exp(d) Δ, exp(d))` over clients. Default:
      `tff.aggregators.SumFactory()`.
    metrics_aggregator: See `tff_hgb.process_utils.check_process_arguments`.
    loop_implementation: See `tff_hgb.process_utils.check_process_arguments`.

  Raises:
    TypeError: If an argument is not of the documented type.
    ValueError: If `epsilon` or `max_distance` is not a positive finite number,
      or `max_distance` would overflow float32 in exp.
  """
  args = process_utils.check_process_arguments(
      model_fn, client_optimizer_fn=client_optimizer_fn,
      server_optimizer_fn=server_optimizer_fn,
      metrics_aggregator=metrics_aggregator,
      loop_implementation=loop_implementation)
  _check_positive_float(epsilon, 'epsilon')
  _check_positive_float(max_distance, 'max_distance')
  if max_distance > _FLOAT32_MAX_EXP_ARGUMENT:
    raise ValueError(f'`max_distance`={max_distance} overflows float32 in '
                     f'exp; use at most {_FLOAT32_MAX_EXP_ARGUMENT}.')
  model_aggregator = process_utils.model_aggregator_or_default(
      model_aggregator, tff.aggregators.UnweightedAggregationFactory,
      tff.aggregators.SumFactory)

  initial_model_weights_fn = process_utils.initial_model_weights_computation(
      model_fn)
  client_work = tff.learning.templates.build_model_delta_client_work(
      model_fn, args.client_optimizer,
      client_weighting=tff.learning.ClientWeighting.UNIFORM,
      metrics_aggregator=args.metrics_aggregator,
      loop_implementation=loop_implementation)
  aggregator = _build_aggregator(
      initial_model_weights_fn.type_signature.result.trainable,
      epsilon=float(epsilon), max_distance=float(max_distance),
      sum_factory=model_aggregator)
  return process_utils.compose_broadcast_process(
      initial_model_weights_fn, client_work, aggregator, args.server_optimizer)
