"""FedNova (normalized averaging) as a composable TFF `LearningProcess`.

FedNova is proposed in:

Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization
    Jianyu Wang, Qinghua Liu, Hao Liang, Gauri Joshi, H. Vincent Poor.
    NeurIPS 2020. https://arxiv.org/abs/2007.07481

When clients run different numbers of local steps, FedAvg's weighted mean of
model deltas lets clients with many steps pull the model towards their own
local optimum ("objective inconsistency"). FedNova divides each client's delta
by its normalizing factor `a_k` (its effective number of steps) before averaging
and rescales the mean by the average effective number of steps:

```
Δ_k  = w - w_k                                      (model delta of client k)
a_k  = Σ_{t=1..τ_k} (1 - ρ^t) / (1 - ρ)             (τ_k local steps, momentum ρ)
p_k  = n_k / Σ_j n_j                                (n_k local examples)
Δ    = (Σ_k p_k a_k) · Σ_k p_k Δ_k / a_k            (server model delta)
```

With ρ = 0, a_k = τ_k. When every client takes the same number of steps, Δ is
exactly FedAvg's Σ_k p_k Δ_k.

The round uses a single aggregation: clients send the struct
`(Δ_k / a_k, a_k)` with weight `n_k`, one weighted mean of that struct
(`tff.aggregators.MeanFactory` by default, i.e. the sums of `n_k Δ_k / a_k`,
`n_k a_k` and `n_k`) arrives at the server, and the server multiplies its two
parts. No aggregation depends on another, so TFF's mergeable execution context
can split a round's clients across workers.

The maths are plain TensorFlow functions (`normalizing_factor`,
`normalize_update`, `denormalize_update`); the TFF plumbing composes TFF's
broadcast distributor, a client work that counts local steps, a FedNova
aggregator and TFF's `build_apply_optimizer_finalizer` (argument checks and
composition: `tff_hgb.process_utils`, shared with FedAttn).
"""

import collections
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.learning import loop_builder

from tff_hgb import process_utils

DEFAULT_CLIENT_MOMENTUM = 0.0
DEFAULT_LOOP_IMPLEMENTATION = tff.learning.LoopImplementation.DATASET_REDUCE

NORMALIZED_DELTA_KEY = 'normalized_delta'
NORMALIZING_FACTOR_KEY = 'normalizing_factor'
_MOMENTUM_HPARAM = 'momentum'


# ----------------------------------------------------------------------------
# The maths (plain TensorFlow, no TFF).
# ----------------------------------------------------------------------------


def normalizing_factor(num_steps, momentum) -> tf.Tensor:
  """FedNova's a_k = Σ_{t=1..τ} (1 - ρ^t) / (1 - ρ), in closed form.

  Σ_{t=1..τ} (1 - ρ^t) = τ - ρ (1 - ρ^τ) / (1 - ρ), so
  a = (τ - ρ (1 - ρ^τ) / (1 - ρ)) / (1 - ρ); a = τ when ρ = 0. It is the
  factor by which heavy-ball momentum SGD (`v ← ρ v + g; w ← w - η v`, v₀ = 0,
  as `tff.learning.optimizers.build_sgdm`) scales a constant gradient over τ
  steps: w_τ = w_0 - η a g. Computed in float64 (the closed form subtracts
  nearly equal numbers when ρ is close to 1).

  Args:
    num_steps: τ, number of local optimizer steps (integer tensor, >= 0).
    momentum: ρ in [0, 1).

  Returns:
    A float32 scalar tensor a (0 when τ = 0).
  """
  tau = tf.cast(num_steps, tf.float64)
  rho = tf.cast(momentum, tf.float64)
  geometric = rho * (1.0 - tf.pow(rho, tau)) / (1.0 - rho)
  return tf.cast((tau - geometric) / (1.0 - rho), tf.float32)


def normalize_update(model_delta: Any, factor: tf.Tensor) -> Any:
  """Client side: the struct `(Δ_k / a_k, a_k)` that is averaged with weight n_k.

  Args:
    model_delta: Δ_k, a structure of float tensors.
    factor: a_k (float32 scalar). A client without steps (a_k = 0) has a zero
      normalized delta.

  Returns:
    `OrderedDict(normalized_delta=Δ_k / a_k, normalizing_factor=a_k)`.
  """
  return collections.OrderedDict([
      (NORMALIZED_DELTA_KEY, tf.nest.map_structure(
          lambda d: tf.math.divide_no_nan(d, tf.cast(factor, d.dtype)),
          model_delta)),
      (NORMALIZING_FACTOR_KEY, tf.cast(factor, tf.float32)),
  ])


def denormalize_update(mean_update: Any) -> Any:
  """Server side: Δ = (Σ p_k a_k) · Σ p_k Δ_k / a_k from the weighted mean.

  Args:
    mean_update: the n_k-weighted mean of `normalize_update` outputs, i.e.
      `normalized_delta = Σ p_k Δ_k / a_k`, `normalizing_factor = Σ p_k a_k`.

  Returns:
    The server model delta Δ, with the structure of `normalized_delta`.
  """
  factor = mean_update[NORMALIZING_FACTOR_KEY]
  return tf.nest.map_structure(lambda d: d * tf.cast(factor, d.dtype),
                               mean_update[NORMALIZED_DELTA_KEY])


# ----------------------------------------------------------------------------
# Client work: local training that also counts steps.
# ----------------------------------------------------------------------------


class LocalTrainingOutput(NamedTuple):
  """What one client's local training produced.

  Attributes:
    model_delta: Δ_k = initial trainable weights - trained ones; all zeros if
      any entry was non-finite.
    num_examples: n_k (int64).
    num_steps: τ_k, number of optimizer steps = batches seen (int64).
    non_finite: 1 if Δ_k had a non-finite entry (and was zeroed), else 0.
    model_output: the model's unfinalized metrics (reset if non-finite, so a
      diverged client does not pollute the training metrics, as in TFF FedAvg).
  """
  model_delta: Any
  num_examples: tf.Tensor
  num_steps: tf.Tensor
  non_finite: tf.Tensor
  model_output: Any


def _build_local_training_fn(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    loop_implementation: tff.learning.LoopImplementation,
):
  """A `tf.function` running the client optimizer over the client dataset.

  Same loop as TFF's `build_model_delta_update_with_tff_optimizer` (so it
  reproduces FedAvg's client update exactly), plus a step counter.
  """
  model = model_fn()
  training_loop = loop_builder.build_training_loop(
      loop_implementation=loop_implementation)

  @tf.function
  def local_training(optimizer, initial_weights, data, optimizer_hparams):
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), model_weights,
                          initial_weights)

    def reduce_fn(state, batch):
      num_examples, num_steps, optimizer_state = state
      with tf.GradientTape() as tape:
        output = model.forward_pass(batch, training=True)
      gradients = tape.gradient(output.loss, model_weights.trainable)
      optimizer_state, updated = optimizer.next(
          optimizer_state, tuple(tf.nest.flatten(model_weights.trainable)),
          tuple(tf.nest.flatten(gradients)))
      updated = tf.nest.pack_sequence_as(model_weights.trainable, updated)
      tf.nest.map_structure(lambda v, t: v.assign(t), model_weights.trainable,
                            updated)
      if output.num_examples is None:
        num_examples += tf.shape(output.predictions, out_type=tf.int64)[0]
      else:
        num_examples += tf.cast(output.num_examples, tf.int64)
      return num_examples, num_steps + 1, optimizer_state

    def initial_state():
      specs = tf.nest.map_structure(
          lambda v: tf.TensorSpec(v.shape, v.dtype),
          tuple(tf.nest.flatten(model_weights.trainable)))
      optimizer_state = optimizer.set_hparams(
          optimizer.initialize(specs), optimizer_hparams)
      return (tf.constant(0, tf.int64), tf.constant(0, tf.int64),
              optimizer_state)

    num_examples, num_steps, _ = training_loop(reduce_fn, data, initial_state)
    model_delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                                        model_weights.trainable)
    model_delta, non_finite = process_utils.zero_all_if_any_non_finite(
        model_delta)
    if non_finite > 0:
      model.reset_metrics()
    return LocalTrainingOutput(model_delta, num_examples, num_steps,
                               non_finite,
                               model.report_local_unfinalized_metrics())

  return local_training


def _build_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    optimizer: tff.learning.optimizers.Optimizer,
    momentum: float,
    metrics_aggregator: Callable[..., tff.Computation],
    loop_implementation: tff.learning.LoopImplementation,
) -> tff.learning.templates.ClientWorkProcess:
  """FedNova client work.

  State: the client optimizer's hyperparameters (as TFF's model-delta client
  work, so `get_hparams`/`set_hparams` of the learning process reach them).

  `next`: `(<H@SERVER, M@CLIENTS, {B*}@CLIENTS> ->
  <state=H@SERVER, result=ClientResult(update=U, update_weight=float32)@CLIENTS,
  measurements=<train=..., mean_local_steps=float32,
  num_non_finite_clients=int32>@SERVER>)`, where `U` is
  `<normalized_delta=Δ_k/a_k, normalizing_factor=a_k>` and the update weight is
  n_k (0 for a client whose delta is non-finite).
  """
  with tf.Graph().as_default():
    model = model_fn()
    metrics_aggregation_fn = metrics_aggregator(model.metric_finalizers())
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  weights_type = tff.learning.models.weights_type_from_model(model)

  initial_hparams = process_utils.optimizer_hparams(optimizer)

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_hparams, tff.SERVER)

  hparams_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(hparams_type)
  def get_hparams_fn(state):
    return state

  @tff.tensorflow.computation(hparams_type, hparams_type)
  def set_hparams_fn(state, hparams):
    del state
    return hparams

  @tff.tensorflow.computation(hparams_type, weights_type, data_type)
  def client_update(hparams, initial_weights, dataset):
    local_training = _build_local_training_fn(model_fn, loop_implementation)
    out = local_training(optimizer, initial_weights, dataset, hparams)
    update = normalize_update(out.model_delta,
                              normalizing_factor(out.num_steps, momentum))
    weight = tf.where(out.non_finite > 0, 0.0,
                      tf.cast(out.num_examples, tf.float32))
    return (tff.learning.templates.ClientResult(update, weight),
            out.model_output, tf.cast(out.num_steps, tf.float32),
            out.non_finite)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    state_at_clients = tff.federated_broadcast(state)
    client_result, model_outputs, num_steps, non_finite = tff.federated_map(
        client_update, (state_at_clients, weights, client_data))
    measurements = tff.federated_zip(collections.OrderedDict(
        train=metrics_aggregation_fn(model_outputs),
        mean_local_steps=tff.federated_mean(num_steps),
        num_non_finite_clients=tff.federated_sum(non_finite)))
    return tff.templates.MeasuredProcessOutput(state, client_result,
                                               measurements)

  return tff.learning.templates.ClientWorkProcess(
      init_fn, next_fn, get_hparams_fn=get_hparams_fn,
      set_hparams_fn=set_hparams_fn)


# ----------------------------------------------------------------------------
# Aggregator: one weighted mean of (Δ_k / a_k, a_k), then the server product.
# ----------------------------------------------------------------------------


def _build_aggregator(
    model_aggregator: tff.aggregators.WeightedAggregationFactory,
    update_type: tff.Type,
) -> tff.templates.AggregationProcess:
  """`(<S@SERVER, U@CLIENTS, float32@CLIENTS> -> <S, Δ@SERVER, measurements>)`.

  `model_aggregator` averages the struct U = (Δ_k / a_k, a_k) with weights n_k;
  the server then returns `denormalize_update` of the mean, of the trainable
  weights' type. Measurements: those of `model_aggregator` and the mean
  normalizing factor Σ p_k a_k (the effective number of local steps).
  """
  inner, inner_result_type = process_utils.create_type_preserving_aggregation(
      model_aggregator, update_type, tff.TensorType(np.float32))

  @tff.tensorflow.computation(inner_result_type)
  def server_delta(mean_update):
    return denormalize_update(mean_update)

  @tff.tensorflow.computation(inner_result_type)
  def mean_factor(mean_update):
    return mean_update[NORMALIZING_FACTOR_KEY]

  return process_utils.build_aggregation_with_server_step(
      inner, update_type, server_step=server_delta,
      measurement_name='mean_normalizing_factor', measurement=mean_factor)


# ----------------------------------------------------------------------------
# The learning process.
# ----------------------------------------------------------------------------


def build_fednova_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    *,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    client_momentum: float = DEFAULT_CLIENT_MOMENTUM,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    metrics_aggregator: Optional[Callable[..., tff.Computation]] = None,
    loop_implementation: tff.learning.LoopImplementation = DEFAULT_LOOP_IMPLEMENTATION,
) -> tff.learning.templates.LearningProcess:
  """Returns a `tff.learning.templates.LearningProcess` running FedNova.

  Each round the server model w is broadcast; client k trains it with
  `client_optimizer_fn` over its dataset (one optimizer step per batch; repeat
  the dataset for several local epochs), counting its steps τ_k and examples
  n_k, and sends `(Δ_k / a_k, a_k)` with weight n_k (see the module docstring);
  the server computes Δ = (Σ p_k a_k) Σ p_k Δ_k / a_k from one weighted mean
  and applies it with `server_optimizer_fn` (by default SGD with learning rate
  1.0: w ← w - Δ). A client whose delta has a non-finite entry gets weight 0
  (as in TFF's FedAvg) and is counted.

  The process has the methods and types listed in
  `tff_hgb.process_utils.compose_broadcast_process`, with the metrics
  `M = <distributor=<>, client_work=<train=<model metrics>,
  mean_local_steps=float32, num_non_finite_clients=int32>,
  aggregator=<model_aggregator=..., mean_normalizing_factor=float32>,
  finalizer=<update_non_finite=int32>>`.

  Args:
    model_fn: Returns a new `tff.learning.models.VariableModel` per call.
    client_optimizer_fn: A `tff.learning.optimizers.Optimizer` for local
      training, e.g. `tff.learning.optimizers.build_sgdm(0.1, momentum=ρ)`.
    server_optimizer_fn: A `tff.learning.optimizers.Optimizer` applying Δ at
      the server. Default: SGD with learning rate 1.0.
    client_momentum: ρ in [0, 1), the heavy-ball momentum of the client
      optimizer, used in a_k. Must equal the client optimizer's `momentum`
      hyperparameter when it has one (a_k uses this constant: changing the
      client momentum with `set_hparams` does not change a_k).
    model_aggregator: A `tff.aggregators.WeightedAggregationFactory` that
      averages the struct `(Δ_k / a_k, a_k)` with weights n_k. Default:
      `tff.aggregators.MeanFactory()`.
    metrics_aggregator: See `tff_hgb.process_utils.check_process_arguments`.
    loop_implementation: See `tff_hgb.process_utils.check_process_arguments`.

  Raises:
    TypeError: If an argument is not of the documented type.
    ValueError: If `client_momentum` is outside [0, 1) or disagrees with the
      client optimizer's momentum.
  """
  args = process_utils.check_process_arguments(
      model_fn, client_optimizer_fn=client_optimizer_fn,
      server_optimizer_fn=server_optimizer_fn,
      metrics_aggregator=metrics_aggregator,
      loop_implementation=loop_implementation)
  process_utils.check_float(client_momentum, 'client_momentum')
  if not 0.0 <= client_momentum < 1.0:
    raise ValueError(
        f'`client_momentum` must be in [0, 1); got {client_momentum}.')
  hparams = process_utils.optimizer_hparams(args.client_optimizer)
  optimizer_momentum = float(hparams.get(_MOMENTUM_HPARAM, 0.0))
  if not np.isclose(optimizer_momentum, client_momentum, rtol=0, atol=1e-7):
    raise ValueError(
        f'`client_momentum`={client_momentum} but the client optimizer uses '
        f'momentum {optimizer_momentum}; FedNova needs the momentum the '
        'clients really use to compute a_k.')
  model_aggregator = process_utils.model_aggregator_or_default(
      model_aggregator, tff.aggregators.WeightedAggregationFactory,
      tff.aggregators.MeanFactory)

  initial_model_weights_fn = process_utils.initial_model_weights_computation(
      model_fn)
  client_work = _build_client_work(model_fn, args.client_optimizer,
                                   float(client_momentum),
                                   args.metrics_aggregator, loop_implementation)
  update_type = client_work.next.type_signature.result.result.member.update
  aggregator = _build_aggregator(model_aggregator, update_type)
  return process_utils.compose_broadcast_process(
      initial_model_weights_fn, client_work, aggregator, args.server_optimizer)
