"""What every learning-process builder of ours does the same way.

Small plain functions, each the one place for its idea:

*   argument checks: `as_optimizer`, `check_float`, `check_process_arguments`
    (model_fn, optimizers, metrics aggregator, loop implementation),
    `model_aggregator_or_default`;
*   `optimizer_hparams`: an optimizer's initial hyperparameters;
*   `zero_all_if_any_non_finite`: a client's update, or zeros if any entry of
    it is not finite (the client is then left out, as in TFF's FedAvg);
*   `create_type_preserving_aggregation`: a model aggregator's process, checked
    to return the type it aggregates, and `build_aggregation_with_server_step`:
    that one aggregation followed by the algorithm's server step;
*   `initial_model_weights_computation` and `compose_broadcast_process`: the
    `compose_learning_process` plumbing around an algorithm's own client work
    and aggregator (TFF's broadcast distributor, a server optimizer finalizer),
    shared by HGB (`tff_hgb.hgb`), FedNova and FedAttn;
*   `DEFAULT_SERVER_OPTIMIZER_FN` and `OptimizerArg`, the server optimizer
    default and the optimizer argument type of every builder.

This module must not import `tff_hgb.algorithms` (that package imports
`tff_hgb.client_work`, which imports this module).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

# A server SGD step of learning rate 1.0 adds the aggregated delta to the
# server model (w ← w - Δ), as in TFF's `build_weighted_fed_avg`.
DEFAULT_SERVER_OPTIMIZER_FN = lambda: tff.learning.optimizers.build_sgdm(  # pylint: disable=g-long-lambda
    learning_rate=1.0)

OptimizerArg = Union[tff.learning.optimizers.Optimizer,
                     Callable[[], tff.learning.optimizers.Optimizer]]


# ----------------------------------------------------------------------------
# Argument checks.
# ----------------------------------------------------------------------------


def as_optimizer(optimizer: OptimizerArg, name: str, *,
                 allow_callable: bool = True
                 ) -> tff.learning.optimizers.Optimizer:
  """The `tff.learning.optimizers.Optimizer` an optimizer argument stands for.

  Args:
    optimizer: an `Optimizer`, or (when `allow_callable`) a no-argument
      callable returning one.
    name: the argument's name, for the error message.
    allow_callable: whether a callable returning an `Optimizer` is accepted.

  Returns:
    `optimizer`, or what calling it returned.

  Raises:
    TypeError: for anything else (e.g. a Keras optimizer, which TFF 0.87's
      composable processes do not take).
  """
  if isinstance(optimizer, tff.learning.optimizers.Optimizer):
    return optimizer
  if not allow_callable:
    raise TypeError(f'`{name}` must be a `tff.learning.optimizers.Optimizer`; '
                    f'got {type(optimizer)}.')
  if callable(optimizer):
    built = optimizer()
    if isinstance(built, tff.learning.optimizers.Optimizer):
      return built
  raise TypeError(f'{name} must be a tff.learning.optimizers.Optimizer or a '
                  'no-argument callable returning one (Keras optimizers are '
                  'not supported by TFF 0.87), got '
                  f'{type(optimizer).__name__}.')


def check_float(value: Any, name: str) -> None:
  """Raises TypeError unless `value` is a Python int or float (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f'`{name}` must be a float; got {value!r}.')


def optimizer_hparams(optimizer: tff.learning.optimizers.Optimizer):
  """The hyperparameters `optimizer` starts with (e.g. `learning_rate`)."""
  return optimizer.get_hparams(
      optimizer.initialize(tf.TensorSpec((), tf.float32)))


class ProcessArguments(NamedTuple):
  """The checked arguments of a learning-process builder, defaults filled in."""
  client_optimizer: tff.learning.optimizers.Optimizer
  server_optimizer: tff.learning.optimizers.Optimizer
  metrics_aggregator: Callable[..., tff.Computation]


def check_process_arguments(
    model_fn: Any,
    *,
    client_optimizer_fn: Any,
    server_optimizer_fn: Any,
    metrics_aggregator: Any,
    loop_implementation: Any,
) -> ProcessArguments:
  """Checks the arguments every process builder of ours takes.

  Optimizers must be `tff.learning.optimizers.Optimizer` instances (not
  callables). The model aggregator, whose type depends on the algorithm, is
  checked by `model_aggregator_or_default`.

  Args:
    model_fn: A no-arg function returning a new
      `tff.learning.models.VariableModel` on each call (it must not capture
      TensorFlow tensors or variables). Only its being callable is checked
      here; what it returns, by `initial_model_weights_computation`.
    client_optimizer_fn: the client `Optimizer`.
    server_optimizer_fn: the server `Optimizer`, or None for
      `DEFAULT_SERVER_OPTIMIZER_FN()`.
    metrics_aggregator: As in `tff.learning.algorithms.build_weighted_fed_avg`
      (a callable), or None for `tff.learning.metrics.sum_then_finalize`.
    loop_implementation: the `tff.learning.LoopImplementation` of the local
      training loop.

  Returns:
    The `ProcessArguments`.

  Raises:
    TypeError: naming the first argument that is not of its documented type.
  """
  if not callable(model_fn):
    raise TypeError('`model_fn` must be a no-arg callable returning a '
                    '`tff.learning.models.VariableModel`; got '
                    f'{type(model_fn)}.')
  client_optimizer = as_optimizer(client_optimizer_fn, 'client_optimizer_fn',
                                  allow_callable=False)
  if server_optimizer_fn is None:
    server_optimizer_fn = DEFAULT_SERVER_OPTIMIZER_FN()
  server_optimizer = as_optimizer(server_optimizer_fn, 'server_optimizer_fn',
                                  allow_callable=False)
  if metrics_aggregator is None:
    metrics_aggregator = tff.learning.metrics.sum_then_finalize
  if not callable(metrics_aggregator):
    raise TypeError('`metrics_aggregator` must be callable; got '
                    f'{type(metrics_aggregator)}.')
  if not isinstance(loop_implementation, tff.learning.LoopImplementation):
    raise TypeError('`loop_implementation` must be a '
                    '`tff.learning.LoopImplementation`; got '
                    f'{loop_implementation!r}.')
  return ProcessArguments(client_optimizer, server_optimizer,
                          metrics_aggregator)


def model_aggregator_or_default(
    model_aggregator: Any,
    factory_type: type[Any],
    default: Callable[[], Any],
) -> tff.aggregators.AggregationFactory:
  """`model_aggregator`, or `default()` if it is None, checked to be a factory.

  Args:
    model_aggregator: the `model_aggregator` argument of a process builder.
    factory_type: `tff.aggregators.WeightedAggregationFactory` or
      `tff.aggregators.UnweightedAggregationFactory`.
    default: builds the default factory, e.g. `tff.aggregators.MeanFactory`.

  Raises:
    TypeError: if the factory is not a `factory_type`.
  """
  if model_aggregator is None:
    model_aggregator = default()
  if not isinstance(model_aggregator, factory_type):
    raise TypeError('`model_aggregator` must be a '
                    f'`tff.aggregators.{factory_type.__name__}`; got '
                    f'{type(model_aggregator)}.')
  return model_aggregator


# ----------------------------------------------------------------------------
# Client side.
# ----------------------------------------------------------------------------


def zero_all_if_any_non_finite(structure: Any) -> tuple[Any, tf.Tensor]:
  """`(structure, 0)`, or `(zeros like it, 1)` if any entry is not finite.

  The flag is an int32 scalar tensor; an empty structure counts as finite.
  """
  flat = tf.nest.flatten(structure)
  if not flat:
    return structure, tf.constant(0, tf.int32)
  all_finite = tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(t)) for t in flat])
  return tf.cond(
      all_finite,
      lambda: (structure, tf.constant(0, tf.int32)),
      lambda: (tf.nest.map_structure(tf.zeros_like, structure),
               tf.constant(1, tf.int32)))


# ----------------------------------------------------------------------------
# Aggregation and the composed learning process.
# ----------------------------------------------------------------------------


def create_type_preserving_aggregation(
    factory: tff.aggregators.AggregationFactory,
    value_type: tff.Type,
    *weight_type: tff.Type,
) -> tuple[tff.templates.AggregationProcess, tff.Type]:
  """`factory.create(value_type, *weight_type)` and the type it returns.

  Raises:
    TypeError: if the process does not return a value of `value_type` (the
      algorithm's server step reads the aggregate's structure).
  """
  process = factory.create(value_type, *weight_type)
  result_type = process.next.type_signature.result.result.member
  if not result_type.is_equivalent_to(value_type):
    raise TypeError(
        '`model_aggregator` must return a value of the type it aggregates; '
        f'got {result_type} for {value_type}.')
  return process, result_type


def build_aggregation_with_server_step(
    inner: tff.templates.AggregationProcess,
    value_type: tff.Type,
    *,
    server_step: tff.Computation,
    measurement_name: str,
    measurement: tff.Computation,
    client_step: Optional[tff.Computation] = None,
) -> tff.templates.AggregationProcess:
  """One aggregation of the clients' values, then a step at the server.

  `(<S@SERVER, V@CLIENTS, float32@CLIENTS> -> <S, R@SERVER, measurements>)`,
  `V` = `value_type`. Each client's value and weight go into `inner` as they
  are (`inner` weighted), or as `client_step(value, weight)` (`inner`
  unweighted); the server's result is `server_step(aggregate)`. `inner` is the
  round's only aggregation, so TFF's mergeable execution context can split a
  round's clients across workers.

  Args:
    inner: the aggregation process, e.g. from
      `create_type_preserving_aggregation`.
    value_type: the type of a client's value.
    server_step: a computation on the aggregate, giving the result.
    measurement_name: the name of the second measurement.
    measurement: a computation on the aggregate, giving that measurement.
    client_step: None, or a computation `(value, weight) -> what inner takes`.

  Returns:
    The `tff.templates.AggregationProcess`; its measurements are
    `<model_aggregator=<inner's>, measurement_name=measurement(aggregate)>`.
  """

  @tff.federated_computation
  def init_fn():
    return inner.initialize()

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(value_type, tff.CLIENTS),
      tff.FederatedType(np.float32, tff.CLIENTS))
  def next_fn(state, value, weight):
    if client_step is None:
      output = inner.next(state, value, weight)
    else:
      output = inner.next(state,
                          tff.federated_map(client_step, (value, weight)))
    measurements = tff.federated_zip(collections.OrderedDict([
        ('model_aggregator', output.measurements),
        (measurement_name, tff.federated_map(measurement, output.result)),
    ]))
    return tff.templates.MeasuredProcessOutput(
        output.state, tff.federated_map(server_step, output.result),
        measurements)

  return tff.templates.AggregationProcess(init_fn, next_fn)


def initial_model_weights_computation(
    model_fn: Callable[[], tff.learning.models.VariableModel],
) -> tff.Computation:
  """`( -> ModelWeights)`: the weights of a new model from `model_fn`.

  Raises:
    TypeError: if `model_fn` does not return a
      `tff.learning.models.VariableModel`.
  """

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    model = model_fn()
    if not isinstance(model, tff.learning.models.VariableModel):
      raise TypeError('`model_fn` must return a '
                      '`tff.learning.models.VariableModel`; got '
                      f'{type(model)}.')
    return tff.learning.models.ModelWeights.from_model(model)

  return initial_model_weights_fn


def compose_broadcast_process(
    initial_model_weights_fn: tff.Computation,
    client_work: tff.learning.templates.ClientWorkProcess,
    aggregator: tff.templates.AggregationProcess,
    server_optimizer: tff.learning.optimizers.Optimizer,
) -> tff.learning.templates.LearningProcess:
  """The learning process: broadcast → client work → aggregator → optimizer.

  The distributor is TFF's `build_broadcast_process` and the finalizer TFF's
  `build_apply_optimizer_finalizer` with `server_optimizer`, both of the type
  `initial_model_weights_fn` returns. The process has the methods of
  `tff.learning.templates.LearningProcess`:

  *   `initialize`: `( -> S@SERVER)`, `S` a
      `tff.learning.templates.LearningAlgorithmState`.
  *   `next`: `(<S@SERVER, {B*}@CLIENTS> -> <state=S@SERVER, metrics=M@SERVER>)`
      where `B` is the model's `input_spec` and `M` is
      `<distributor=<>, client_work=..., aggregator=...,
      finalizer=<update_non_finite=int32>>` (the measurements of the client
      work and of the aggregator).
  *   `get_model_weights`: `(S -> W)`; `set_model_weights`: `(<S, W> -> S)`,
      `W` the `tff.learning.models.ModelWeights` of the model.
  *   `get_hparams` / `set_hparams`: the hyperparameters of the client work
      (`client_work`) and of the server optimizer (`finalizer`).
  """
  model_weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(
      model_weights_type)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer, model_weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, distributor, client_work, aggregator,
      finalizer)
