"""MMPareto and OGM-GE as federated `LearningProcess`es (ALGORITHM.md §9).

Both change only a client's local step on the multi-modal model
(`tff_hgb.models`); the server is FedAvg (one n_k-weighted mean per round, so
rounds split across workers). The step maths are `tff_hgb.balancing`'s plain
TF functions; here they meet the model (`local_step`) and TFF (a client work
composed with `tff_hgb.process_utils`, as FedNova and FedAttn are).

*   `MMPARETO`: per step, every head gets the gradient of its own loss; each
    encoder m gets `balancing.mmpareto_direction` of its fused-loss and
    uni-modal-loss gradients (γ = `gamma`). Metrics per modality: the
    fraction of steps with a conflict (cos ≤ 0), the mean k_f and cosine.
*   `OGM`: per step, the fused loss's gradient, with encoder m's kernel
    gradients scaled by OGM's coefficient k_m (α = `alpha`) plus Gaussian
    noise of `noise_scale`·std(g) (OGM-GE; 0 = plain OGM), in rounds
    `start_round` ≤ r < `end_round` (0 = no end). Metrics per modality: mean
    coefficient and confidence ratio.

A step counts for a modality's metrics only when the modality is in the batch
(and, for OGM, another one is too, and the round is modulated).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import balancing
from tff_hgb import losses
from tff_hgb import models
from tff_hgb import process_utils

MMPARETO = 'mmpareto'
OGM = 'ogm'
METHODS = (MMPARETO, OGM)
# MMPareto's γ in the authors' code.
DEFAULT_GAMMA = 1.5
DEFAULT_HPARAMS = {
    MMPARETO: collections.OrderedDict(gamma=DEFAULT_GAMMA),
    OGM: collections.OrderedDict(alpha=0.5, noise_scale=1.0, start_round=0.0,
                                 end_round=0.0),
}
# Per-modality sums a client reports, per method (see `_summarize`).
_STAT_NAMES = {MMPARETO: ('steps', 'conflicts', 'k_f', 'cosine'),
               OGM: ('steps', 'coefficient', 'ratio')}


class ModelParts(NamedTuple):
  """Where each part of a `MultiModalModel` sits among its trainable variables.

  Attributes:
    modalities: modality names, in head order.
    encoders: per modality, the indices of encoder m's variables.
    heads: per modality, the indices of uni-modal head m's variables.
    fusion_kernel, fusion_bias: indices of the fusion head's kernel and bias.
    feature_sizes: d_m, the features encoder m gives the fusion head.
    with_fused_features: a Keras model of the same layers returning
      (logits, the fusion head's input [B, Σ d_m]).
  """
  modalities: list[str]
  encoders: list[list[int]]
  heads: list[list[int]]
  fusion_kernel: int
  fusion_bias: int
  feature_sizes: list[int]
  with_fused_features: tf.keras.Model


def model_parts(model: models.MultiModalModel) -> ModelParts:
  """The `ModelParts` of a model from `models.build_keras_model`."""
  if not isinstance(model, models.MultiModalModel):
    raise TypeError('MMPareto and OGM need a tff_hgb.models.MultiModalModel '
                    f'(per-head losses); model_fn returned {type(model).__name__}.')
  keras_model = model.keras_model
  index = {id(v): i for i, v in enumerate(keras_model.trainable_variables)}

  def indices(layer_name):
    return [index[id(v)]
            for v in keras_model.get_layer(layer_name).trainable_variables]

  names = model.modalities
  fusion = keras_model.get_layer(models.HEAD_PREFIX + models.FUSION)
  fusion_kernel, fusion_bias = (index[id(fusion.kernel)],
                                index[id(fusion.bias)])
  sizes = [int(keras_model.get_layer(models.ENCODER_PREFIX + m).output_shape[-1])
           for m in names]
  with_features = tf.keras.Model(keras_model.inputs,
                                 [keras_model.output, fusion.input])
  return ModelParts(names, [indices(models.ENCODER_PREFIX + m) for m in names],
                    [indices(models.HEAD_PREFIX + m) for m in names],
                    fusion_kernel, fusion_bias, sizes, with_features)


def _zeros_for_none(gradients, variables):
  return [tf.zeros_like(v) if g is None else g
          for v, g in zip(variables, gradients)]


def _regularization(model):
  losses_list = model.keras_model.losses
  return tf.add_n(losses_list) if losses_list else 0.0


def mmpareto_gradients(model, parts: ModelParts, trainable, batch, hparams):
  """One MMPareto step's gradients and statistics (plain TF).

  Returns:
    (gradients per trainable variable, (loss_sum, correct, count) of the
    batch's heads, per-modality stats {steps, conflicts, k_f, cosine}).
  """
  with tf.GradientTape(persistent=True) as tape:
    _, loss_sum, correct, count = model.head_statistics(batch, training=True)
    head_losses = losses.mean_head_losses(loss_sum, count)
    fused_loss = head_losses[-1] + _regularization(model)
    # Sliced inside the tape, so their gradients are recorded.
    uni_losses = [head_losses[i] for i in range(len(parts.modalities))]
  gradients = _zeros_for_none(tape.gradient(fused_loss, trainable), trainable)
  stats = collections.defaultdict(list)
  for i, (encoder, head) in enumerate(zip(parts.encoders, parts.heads)):
    own = [trainable[j] for j in encoder + head]
    uni = _zeros_for_none(tape.gradient(uni_losses[i], own), own)
    g_f = [gradients[j] for j in encoder]
    g_m = uni[:len(encoder)]
    k_f, conflict, cos = balancing.mmpareto_weight(g_f, g_m)
    direction = balancing.mmpareto_direction(g_f, g_m, k_f, hparams['gamma'])
    for j, g in zip(encoder + head, direction + uni[len(encoder):]):
      gradients[j] = g
    present = tf.cast(count[i] > 0, tf.float32)
    for name, value in (('steps', 1.0), ('conflicts', conflict),
                        ('k_f', k_f), ('cosine', cos)):
      stats[name].append(present * value)
  del tape
  return gradients, (loss_sum, correct, count), {
      k: tf.stack(v) for k, v in stats.items()}


def ogm_active(round_num, hparams) -> tf.Tensor:
  """Whether round r (0-based) is modulated: start ≤ r < end (end 0: never)."""
  r = tf.cast(round_num, tf.float32)
  end = hparams['end_round']
  return tf.logical_and(r >= hparams['start_round'],
                        tf.logical_or(end <= 0.0, r < end))


def ogm_gradients(model, parts: ModelParts, trainable, batch, hparams,
                  active, seed_fn):
  """One OGM(-GE) step's gradients and statistics (plain TF).

  Args:
    active: whether this round modulates (`ogm_active`).
    seed_fn: returns the int32 [2] stateless seed of this step's noise
      (called only when there is noise: OGM pays for neither).

  Returns:
    As `mmpareto_gradients`, with stats {steps, coefficient, ratio}.
  """
  with tf.GradientTape() as tape:
    logits, fused_features = parts.with_fused_features(
        models.keras_inputs(batch), training=True)
    loss_sum, correct, count = losses.head_statistics(
        logits, batch['y'], batch['mask'], parts.modalities)
    fused_loss = (losses.mean_head_losses(loss_sum, count)[-1] +
                  _regularization(model))
  gradients = _zeros_for_none(tape.gradient(fused_loss, trainable), trainable)
  out = balancing.modality_logits(
      tf.stop_gradient(fused_features), trainable[parts.fusion_kernel],
      trainable[parts.fusion_bias], parts.feature_sizes)
  presence = losses.head_masks(batch['mask'], parts.modalities)[:, :-1]
  present = tf.cast(count[:-1] > 0, tf.float32)
  scores = balancing.confidence_scores(out, batch['y'], presence)
  ratios, defined = balancing.confidence_ratios(scores, present)
  counted = defined * tf.cast(active, tf.float32)
  coefficients = tf.where(counted > 0, balancing.ogm_coefficients(
      ratios, defined, hparams['alpha']), 1.0)
  owners = [(i, j) for i, encoder in enumerate(parts.encoders)
            for j in encoder]

  def modulated(with_noise):
    seed = seed_fn() if with_noise else None
    # A zero gradient (m absent from the batch) has std 0, so gets no noise:
    # a client without m keeps θ_m (the authors' std + 1e-8 would move it).
    return [balancing.modulate_gradient(
        gradients[j], coefficients[i], hparams['noise_scale'],
        None if seed is None else
        seed + tf.constant([0, 7919], tf.int32) * (j + 1))
            for i, j in owners]

  noisy = tf.logical_and(active, hparams['noise_scale'] > 0)
  for (_, j), g in zip(owners, tf.cond(noisy, lambda: modulated(True),
                                       lambda: modulated(False))):
    gradients[j] = g
  stats = dict(steps=counted, coefficient=counted * coefficients,
               ratio=counted * ratios)
  return gradients, (loss_sum, correct, count), stats


def noise_seed(base_seed: int, round_num, step, batch) -> tf.Tensor:
  """A stateless seed per (run seed, round, step, batch contents).

  The batch's fingerprint makes clients differ (TFF gives a client no id);
  everything is a function of the run's inputs, so runs reproduce.
  """
  labels = tf.reshape(tf.cast(batch['y'], tf.int64), [-1, 1])
  bytes_ = tf.cast(tf.fingerprint(labels), tf.int32)
  features = [tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
              for x in batch['x'].values()]
  bytes_ += tf.cast(tf.fingerprint(tf.concat(features, axis=1)), tf.int32)
  fingerprint = tf.reduce_sum(bytes_ * tf.range(1, 9, dtype=tf.int32))
  return tf.stack([
      tf.cast(base_seed, tf.int32) * 1_000_003 + tf.cast(round_num, tf.int32),
      fingerprint * 7919 + tf.cast(step, tf.int32)])


class ClientOutput(NamedTuple):
  """One client's round: its result, model metrics, stats, non-finite flag."""
  result: tff.learning.templates.ClientResult
  model_output: Any
  stats: Any
  non_finite: tf.Tensor


def build_client_update(model_fn: Callable[[], models.MultiModalModel],
                        method: str, *, seed: int = 0):
  """`client_update(optimizer, weights, data, opt_hparams, hparams, round)`.

  A `tf.function` running `method`'s step over every batch of `data` with the
  client optimizer, returning a `ClientOutput` (update Δ = initial − trained
  weights, weight n = examples seen; 0 and zeros if Δ is not finite).
  """
  model = model_fn()
  parts = model_parts(model)
  num_modalities = len(parts.modalities)

  @tf.function
  def client_update(optimizer, initial_weights, data, optimizer_hparams,
                    hparams, round_num):
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), model_weights,
                          initial_weights)
    trainable = tuple(tf.nest.flatten(model_weights.trainable))
    optimizer_state = optimizer.set_hparams(optimizer.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)),
                                            optimizer_hparams)
    totals = {k: tf.zeros([num_modalities]) for k in _STAT_NAMES[method]}
    active = ogm_active(round_num, hparams) if method == OGM else None
    num_examples = tf.constant(0, tf.int64)
    step = tf.constant(0, tf.int32)
    # Over an iterator, not the dataset: autograph turns `for b in dataset`
    # into a dataset reduce, whose function TF re-instantiates and optimises
    # on every call (as TFF's DATASET_REDUCE loop; algorithms.BASELINE_LOOP).
    for batch in iter(data):
      if method == MMPARETO:
        gradients, head_stats, stats = mmpareto_gradients(
            model, parts, trainable, batch, hparams)
      else:
        gradients, head_stats, stats = ogm_gradients(
            model, parts, trainable, batch, hparams, active,
            lambda: noise_seed(seed, round_num, step, batch))
      optimizer_state, updated = optimizer.next(optimizer_state, trainable,
                                                tuple(gradients))
      for variable, value in zip(trainable, updated):
        variable.assign(value)
      batch_size = tf.shape(batch['y'])[0]
      model.update_metrics(*head_stats, batch_size)
      totals = {k: totals[k] + stats[k] for k in totals}
      num_examples += tf.cast(batch_size, tf.int64)
      step += 1
    update, non_finite = process_utils.zero_all_if_any_non_finite(
        tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                              model_weights.trainable))
    if non_finite > 0:
      model.reset_metrics()
    weight = tf.where(non_finite > 0, 0.0, tf.cast(num_examples, tf.float32))
    return ClientOutput(
        tff.learning.templates.ClientResult(update, weight),
        model.report_local_unfinalized_metrics(),
        collections.OrderedDict(sorted(totals.items())), non_finite)

  return client_update


def _summarize(method, totals, modalities):
  """Server side: the round's mechanism metrics from the clients' sums."""
  metrics = collections.OrderedDict()
  steps = totals['steps']
  names = ({'conflict_fraction': 'conflicts', 'k_f': 'k_f',
            'cosine': 'cosine'} if method == MMPARETO else
           {'coefficient': 'coefficient', 'ratio': 'ratio'})
  for metric, key in names.items():
    for i, m in enumerate(modalities):
      metrics[f'{metric}/{m}'] = tf.math.divide_no_nan(totals[key][i],
                                                      steps[i])
  for i, m in enumerate(modalities):
    metrics[f'steps/{m}'] = steps[i]
  return metrics


# ---------------------------------------------------------------------------
# The TFF client work and the learning process.
# ---------------------------------------------------------------------------


def _build_client_work(model_fn, method: str, optimizer, hparams, seed: int,
                       metrics_aggregator) -> tff.learning.templates.ClientWorkProcess:
  """The client work of `method`.

  State: `<round_num=int32, optimizer=<client optimizer hparams>,
  balance=<method hparams>>@SERVER`; `get_hparams`/`set_hparams` reach
  `optimizer` and `balance`. `next` runs `build_client_update` on every
  client and reports `<train=<model metrics>, <method>=<mechanism metrics>,
  num_non_finite_clients=int32>`.
  """
  with tf.Graph().as_default():
    model = model_fn()
    modalities = model_parts(model).modalities
    aggregate_metrics = metrics_aggregator(model.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
    weights_type = tff.learning.models.weights_type_from_model(model)
  initial_state = collections.OrderedDict(
      round_num=np.int32(0),
      optimizer=process_utils.optimizer_hparams(optimizer),
      balance=collections.OrderedDict(
          (k, np.float32(v)) for k, v in hparams.items()))

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_state, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type, weights_type, data_type)
  def client_update_comp(state, weights, data):
    update_fn = build_client_update(model_fn, method, seed=seed)
    return tuple(update_fn(optimizer, weights, data, state['optimizer'],
                           state['balance'], state['round_num']))

  stats_type = client_update_comp.type_signature.result[2]

  @tff.tensorflow.computation(stats_type)
  def summarize_comp(totals):
    return _summarize(method, totals, modalities)

  @tff.tensorflow.computation(state_type)
  def next_state(state):
    return collections.OrderedDict(round_num=state['round_num'] + 1,
                                   optimizer=state['optimizer'],
                                   balance=state['balance'])

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    result, model_outputs, stats, non_finite = tff.federated_map(
        client_update_comp,
        (tff.federated_broadcast(state), weights, client_data))
    measurements = tff.federated_zip(collections.OrderedDict([
        ('train', aggregate_metrics(model_outputs)),
        (method, tff.federated_map(summarize_comp, tff.federated_sum(stats))),
        ('num_non_finite_clients', tff.federated_sum(non_finite)),
    ]))
    return tff.templates.MeasuredProcessOutput(
        tff.federated_map(next_state, state), result, measurements)

  @tff.tensorflow.computation(state_type)
  def get_hparams_fn(state):
    return collections.OrderedDict(optimizer=state['optimizer'],
                                   balance=state['balance'])

  @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
  def set_hparams_fn(state, new_hparams):
    return collections.OrderedDict(round_num=state['round_num'],
                                   optimizer=new_hparams['optimizer'],
                                   balance=new_hparams['balance'])

  return tff.learning.templates.ClientWorkProcess(
      init_fn, next_fn, get_hparams_fn=get_hparams_fn,
      set_hparams_fn=set_hparams_fn)


def build_balanced_process(
    model_fn: Callable[[], models.MultiModalModel],
    method: str,
    *,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    metrics_aggregator: Optional[Callable[..., tff.Computation]] = None,
    seed: int = 0,
    **hparams,
) -> tff.learning.templates.LearningProcess:
  """MMPareto (`method='mmpareto'`) or OGM(-GE) (`'ogm'`) with FedAvg's server.

  Each round the server model is broadcast; every client runs `method`'s
  local steps (module docstring) over its dataset with `client_optimizer_fn`
  and sends Δ_k with weight n_k (examples seen; 0 if Δ_k is not finite, then
  counted); one weighted mean (`model_aggregator`, default
  `tff.aggregators.MeanFactory()`) is applied with `server_optimizer_fn`
  (default SGD, learning rate 1: w ← w − Δ).

  The process has the methods and types of
  `process_utils.compose_broadcast_process`, with the metrics
  `<distributor=<>, client_work=<train=<model metrics>, <method>=<per-modality
  mechanism metrics>, num_non_finite_clients=int32>, aggregator=<...>,
  finalizer=<update_non_finite=int32>>`.

  Args:
    model_fn: returns a `tff_hgb.models.MultiModalModel` (new variables per
      call), e.g. from `models.build_model_fn`.
    method: `MMPARETO` or `OGM`.
    client_optimizer_fn, server_optimizer_fn, metrics_aggregator: as in
      `process_utils.check_process_arguments`.
    model_aggregator: a `tff.aggregators.WeightedAggregationFactory`.
    seed: seeds OGM-GE's noise (with the round, step and batch).
    **hparams: the method's hyper-parameters, defaults `DEFAULT_HPARAMS`:
      MMPareto `gamma`; OGM `alpha`, `noise_scale` (0 = plain OGM),
      `start_round`, `end_round` (0 = no end).

  Raises:
    TypeError: for an argument of the wrong type.
    ValueError: for an unknown method or hyper-parameter, or one out of range.
  """
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}.')
  unknown = sorted(set(hparams) - set(DEFAULT_HPARAMS[method]))
  if unknown:
    raise ValueError(f'{method} has no hyper-parameter {unknown}; it has '
                     f'{list(DEFAULT_HPARAMS[method])}.')
  hparams = collections.OrderedDict(DEFAULT_HPARAMS[method], **hparams)
  negative = [k for k, v in hparams.items() if not float(v) >= 0]
  if negative:
    raise ValueError(f'{method} hyper-parameters {negative} must be ≥ 0.')
  args = process_utils.check_process_arguments(
      model_fn, client_optimizer_fn=client_optimizer_fn,
      server_optimizer_fn=server_optimizer_fn,
      metrics_aggregator=metrics_aggregator,
      loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR)
  model_aggregator = process_utils.model_aggregator_or_default(
      model_aggregator, tff.aggregators.WeightedAggregationFactory,
      tff.aggregators.MeanFactory)
  initial_model_weights_fn = process_utils.initial_model_weights_computation(
      model_fn)
  client_work = _build_client_work(model_fn, method, args.client_optimizer,
                                   hparams, seed, args.metrics_aggregator)
  aggregator = model_aggregator.create(
      initial_model_weights_fn.type_signature.result.trainable,
      tff.TensorType(np.float32))
  return process_utils.compose_broadcast_process(
      initial_model_weights_fn, client_work, aggregator, args.server_optimizer)
