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
`build_apply_optimizer_finalizer`.
"""

import collections
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

DEFAULT_EPSILON = 1.2
DEFAULT_MAX_DISTANCE = 50.0
DEFAULT_LOOP_IMPLEMENTATION = tff.learning.LoopImplementation.DATASET_REDUCE
# ε is applied by the aggregator, so the default server step is plain SGD with
# learning rate 1.0 (w ← w - ε Σ α Δ), as in TFF's FedAvg.
DEFAULT_SERVER_OPTIMIZER_FN = lambda: tff.learning.optimizers.build_sgdm(  # pylint: disable=g-long-lambda
    learning_rate=1.0)

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

  terms_type = client_terms.type_signature.result
  inner = sum_factory.create(terms_type)
  inner_result_type = inner.next.type_signature.result.result.member
  if not inner_result_type.is_equivalent_to(terms_type):
    raise TypeError(
        '`model_aggregator` must return a value of the type it aggregates; '
        f'got {inner_result_type} for {terms_type}.')

  @tff.tensorflow.computation(inner_result_type)
  def server_step(summed_terms):
    return attention_step(summed_terms, epsilon)

  @tff.tensorflow.computation(inner_result_type)
  def num_excluded(summed_terms):
    return tf.cast(tf.round(summed_terms[EXCLUDED_KEY]), tf.int32)

  @tff.federated_computation
  def init_fn():
    return inner.initialize()

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(value_type, tff.CLIENTS),
      tff.FederatedType(np.float32, tff.CLIENTS))
  def next_fn(state, model_delta, weight):
    terms = tff.federated_map(client_terms, (model_delta, weight))
    output = inner.next(state, terms)
    measurements = tff.federated_zip(collections.OrderedDict(
        model_aggregator=output.measurements,
        num_non_finite_clients=tff.federated_map(num_excluded, output.result)))
    return tff.templates.MeasuredProcessOutput(
        output.state, tff.federated_map(server_step, output.result),
        measurements)

  return tff.templates.AggregationProcess(init_fn, next_fn)


# ----------------------------------------------------------------------------
# The learning process.
# ----------------------------------------------------------------------------


def _check_positive_float(value, name):
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f'`{name}` must be a float; got {value!r}.')
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
  """Builds a `tff.learning.templates.LearningProcess` running FedAttn.

  Each round the server model w is broadcast; client k trains it with
  `client_optimizer_fn` over its dataset (one step per batch; repeat the
  dataset for several local epochs) and returns Δ_k = w - w_k; the server
  computes, per trainable tensor l, ε Σ_k softmax_k(‖Δ_k^l‖) Δ_k^l from one sum
  (see the module docstring) and applies it with `server_optimizer_fn` (by
  default SGD with learning rate 1.0: w ← w - ε Σ_k α_k Δ_k). Clients are not
  weighted by their number of examples (as in the paper). A client whose delta
  has a non-finite entry is excluded from the attention and counted.

  The process has the methods of `tff.learning.templates.LearningProcess`:

  *   `initialize`: `( -> S@SERVER)`, `S` a
      `tff.learning.templates.LearningAlgorithmState`.
  *   `next`: `(<S@SERVER, {B*}@CLIENTS> -> <state=S@SERVER, metrics=M@SERVER>)`
      where `B` is the model's `input_spec` and `M` is
      `<distributor=<>, client_work=<train=<model metrics>>,
      aggregator=<model_aggregator=..., num_non_finite_clients=int32>,
      finalizer=<update_non_finite=int32>>`.
  *   `get_model_weights`: `(S -> W)`; `set_model_weights`: `(<S, W> -> S)`,
      `W` the `tff.learning.models.ModelWeights` of the model.
  *   `get_hparams` / `set_hparams`: client and server optimizer
      hyperparameters.

  Args:
    model_fn: A no-arg function returning a new
      `tff.learning.models.VariableModel` on each call (it must not capture
      TensorFlow tensors or variables).
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
    metrics_aggregator: As in `tff.learning.algorithms.build_weighted_fed_avg`.
      Default: `tff.learning.metrics.sum_then_finalize`.
    loop_implementation: A `tff.learning.LoopImplementation` for the local
      training loop.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    TypeError: If an argument is not of the documented type.
    ValueError: If `epsilon` or `max_distance` is not a positive finite number,
      or `max_distance` would overflow float32 in exp.
  """
  if not callable(model_fn):
    raise TypeError('`model_fn` must be a no-arg callable returning a '
                    f'`tff.learning.models.VariableModel`; got {type(model_fn)}.')
  if not isinstance(client_optimizer_fn, tff.learning.optimizers.Optimizer):
    raise TypeError('`client_optimizer_fn` must be a '
                    '`tff.learning.optimizers.Optimizer`; got '
                    f'{type(client_optimizer_fn)}.')
  if server_optimizer_fn is None:
    server_optimizer_fn = DEFAULT_SERVER_OPTIMIZER_FN()
  if not isinstance(server_optimizer_fn, tff.learning.optimizers.Optimizer):
    raise TypeError('`server_optimizer_fn` must be a '
                    '`tff.learning.optimizers.Optimizer`; got '
                    f'{type(server_optimizer_fn)}.')
  _check_positive_float(epsilon, 'epsilon')
  _check_positive_float(max_distance, 'max_distance')
  if max_distance > _FLOAT32_MAX_EXP_ARGUMENT:
    raise ValueError(f'`max_distance`={max_distance} overflows float32 in '
                     f'exp; use at most {_FLOAT32_MAX_EXP_ARGUMENT}.')
  if model_aggregator is None:
    model_aggregator = tff.aggregators.SumFactory()
  if not isinstance(model_aggregator,
                    tff.aggregators.UnweightedAggregationFactory):
    raise TypeError('`model_aggregator` must be a '
                    '`tff.aggregators.UnweightedAggregationFactory`; got '
                    f'{type(model_aggregator)}.')
  if metrics_aggregator is None:
    metrics_aggregator = tff.learning.metrics.sum_then_finalize
  if not callable(metrics_aggregator):
    raise TypeError('`metrics_aggregator` must be callable; got '
                    f'{type(metrics_aggregator)}.')
  if not isinstance(loop_implementation, tff.learning.LoopImplementation):
    raise TypeError('`loop_implementation` must be a '
                    '`tff.learning.LoopImplementation`; got '
                    f'{loop_implementation!r}.')

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    model = model_fn()
    if not isinstance(model, tff.learning.models.VariableModel):
      raise TypeError('`model_fn` must return a '
                      '`tff.learning.models.VariableModel`; got '
                      f'{type(model)}.')
    return tff.learning.models.ModelWeights.from_model(model)

  model_weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(
      model_weights_type)
  client_work = tff.learning.templates.build_model_delta_client_work(
      model_fn, client_optimizer_fn,
      client_weighting=tff.learning.ClientWeighting.UNIFORM,
      metrics_aggregator=metrics_aggregator,
      loop_implementation=loop_implementation)
  aggregator = _build_aggregator(
      model_weights_type.trainable, epsilon=float(epsilon),
      max_distance=float(max_distance), sum_factory=model_aggregator)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer_fn, model_weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, distributor, client_work, aggregator,
      finalizer)
