"""HGB client work: local training on the OGR-blended loss (ALGORITHM.md §4.2).

`build_hgb_client_update` is the plain-TF local procedure, written as its steps
(measure snapshot A → warm-up → B → train → C → client weight → statistics);
`build_hgb_client_work` is a thin TFF wrapper that gives it placements and
types and reads the process's `hgb_config.HGBConfig`.

Client data is two datasets (see
`tff_hgb.data.client_data.FederatedData.client_datasets`, and
`tff_hgb.data.client_data.held_out_dataset` for one's own data):
  OrderedDict(train=<batches of T_k, shuffled>,
              held_out=<one element: OrderedDict(
                  probe=<T'_k ⊂ T_k, |T'_k| = |V_k|, one batch>,
                  val=<V_k, one batch>)>)
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import hgb_config
from tff_hgb import losses
from tff_hgb import models
from tff_hgb import ogr
from tff_hgb import process_utils

# The configuration's names where users of earlier versions import them from;
# the library itself takes them from hgb_config.
Blend = hgb_config.Blend
ClientWeighting = hgb_config.ClientWeighting
HGBHParams = hgb_config.HGBHParams
BLEND_OGR = Blend.OGR
BLEND_PRIOR = Blend.PRIOR
BLEND_UNIFORM = Blend.UNIFORM
BLEND_FUSED = Blend.FUSED
BLENDS = hgb_config.BLENDS
WEIGHT_OGR = ClientWeighting.OGR
WEIGHT_NUM_EXAMPLES = ClientWeighting.NUM_EXAMPLES
WEIGHTINGS = hgb_config.WEIGHTINGS


def _data_options() -> tf.data.Options:
  """No tf.data graph rewrites or autotuning for the client's small datasets.

  Each iterator the local procedure makes (seven per round: the training pass
  and two datasets at each of three snapshots) otherwise runs tf.data's
  Grappler rewrites of the dataset graph when it is created, which took about
  a third of a client's time in the TFF worker (docs/BENCHMARKS.md). The
  pipelines here are slices, shuffles and batches, read sequentially, so the
  rewrites have nothing to gain; they change no element or order.
  """
  options = tf.data.Options()
  options.experimental_optimization.apply_default_optimizations = False
  options.autotune.enabled = False
  return options


_DATA_OPTIONS = _data_options()
# Examples per forward pass when HGB evaluates a held-out set.
EVAL_CHUNK = 256


# ---------------------------------------------------------------------------
# What a client measures and reports (plain TF).
# ---------------------------------------------------------------------------


class HeadStatistics(NamedTuple):
  """Per-head sums over a set of examples, in `losses.head_names` order."""
  loss_sum: tf.Tensor
  correct: tf.Tensor
  count: tf.Tensor

  @property
  def mean_loss(self) -> tf.Tensor:
    return losses.mean_head_losses(self.loss_sum, self.count)


class Snapshot(NamedTuple):
  """A checkpoint (A, B or C) measured in inference mode on the held-out sets.

  `probe` is the training probe T'_k (its mean losses are L^T), `val` the
  validation split V_k (L^V).
  """
  probe: HeadStatistics
  val: HeadStatistics

  @property
  def present(self) -> tf.Tensor:
    """1 for the heads measured on both sets (H_k), else 0."""
    return tf.cast(tf.logical_and(self.probe.count > 0, self.val.count > 0),
                   tf.float32)


class ClientWeights(NamedTuple):
  """A client's candidate weights, both 0 when its update was rejected."""
  accepted: tf.Tensor      # 1, or 0 when the update was not finite.
  num_examples: tf.Tensor  # Examples trained on (E·n_k), as float32.
  ogr: tf.Tensor           # u_k.

  @classmethod
  def of(cls, num_examples, u, rejected) -> ClientWeights:
    accepted = 1.0 - rejected
    return cls(accepted, tf.cast(num_examples, tf.float32) * accepted,
               u * accepted)


def warmup_blend(blend: Blend, prior, present) -> tf.Tensor:
  """The head weights of the warm-up (and of all training unless OGR)."""
  num_heads = int(present.shape[0])
  if blend == Blend.FUSED:
    return tf.one_hot(num_heads - 1, num_heads)
  if blend == Blend.UNIFORM:
    return ogr.uniform_over(present)
  return ogr.restrict_prior(prior, present)


def ogr_blend(a: Snapshot, b: Snapshot, present, fallback, hparams):
  """M-GB: z^k ∝ ΔG/ΔO² per head from A → B, with the §5b stabilisers."""
  z = ogr.modality_blend_weights(
      a.probe.mean_loss, a.val.mean_loss, b.probe.mean_loss, b.val.mean_loss,
      present, fallback, epsilon=hparams['epsilon'],
      relative_floor=hparams['delta_o_relative_floor'])
  return ogr.stabilize_blend(z, present,
                             smoothing=hparams['blend_smoothing'],
                             fusion_floor=hparams['fusion_weight_floor'])


def local_steps(train: tf.data.Dataset, hparams) -> tuple[tf.Tensor, tf.Tensor]:
  """(warm-up steps, total steps): ⌊φ·steps per epoch⌋ of E epochs' steps."""
  steps_per_epoch = _num_batches(train)
  total_steps = steps_per_epoch * hparams['local_epochs']
  warmup_steps = tf.minimum(
      tf.cast(tf.floor(hparams['warmup_fraction'] *
                       tf.cast(steps_per_epoch, tf.float32)), tf.int32),
      total_steps)
  return warmup_steps, total_steps


def _num_batches(dataset):
  """Batches in one pass: the cardinality when TF knows it, else a count."""
  cardinality = tf.cast(dataset.cardinality(), tf.int32)
  return tf.cond(
      cardinality >= 0, lambda: cardinality,
      lambda: dataset.reduce(tf.constant(0, tf.int32), lambda n, _: n + 1))


def client_level_weight(a: Snapshot, c: Snapshot, z, num_train_examples,
                        hparams, temper: Optional[float] = None):
  """C-GB: (u_k, raw ΔG, raw ΔO) on the blended loss A → C.

  With β = `temper` (None or 0 = off), u_k becomes n_k·u_k^β (§5b; the
  normaliser ū cancels out), which flattens concentrated weights.
  """
  blended = [losses.blended_loss(x, z) for x in (
      a.probe.mean_loss, a.val.mean_loss, c.probe.mean_loss, c.val.mean_loss)]
  u = ogr.client_weight(*blended, num_train_examples,
                        epsilon=hparams['epsilon'], delta=hparams['delta'])
  if temper:
    u = ogr.finite_or_zero(num_train_examples * tf.pow(u, temper))
  delta_g, delta_o = ogr.generalization_and_overfitting(*blended)
  return u, delta_g, delta_o


def choose_client_weight(weighting: ClientWeighting, weights: ClientWeights,
                         trained_modalities: Callable[[], tf.Tensor]):
  """The update weight a client reports, as `weighting` asks.

  As TFF's client works choose their weight from a
  `tff.learning.ClientWeighting` (0 for a rejected update); here the weights
  arrive already zeroed for a rejected update. `trained_modalities` gives the
  0/1 modalities the client trained (read only for STRUCTURED).
  """
  if weighting == ClientWeighting.STRUCTURED:
    return collections.OrderedDict(
        num_examples=weights.num_examples, ogr=weights.ogr,
        modalities=trained_modalities() * weights.accepted)
  if weighting == ClientWeighting.OGR:
    return weights.ogr
  if weighting == ClientWeighting.NUM_EXAMPLES:
    return weights.num_examples
  raise ValueError(f'Unexpected client weighting {weighting!r}.')


def round_stats(z, num_train_examples, weights: ClientWeights, rejected,
                delta_g, delta_o, a: Snapshot) -> collections.OrderedDict:
  """What the server sums over the clients (`_summarize` turns it to metrics).

  The blend z^k weighted by n_k, the client-weight moments behind the share
  metrics, the raw ΔG/ΔO, and snapshot A's held-out statistics.
  """
  accepted = weights.accepted
  n, u = weights.num_examples, weights.ogr
  return collections.OrderedDict(
      z_sum=z * num_train_examples * accepted,
      z_weight=num_train_examples * accepted,
      n=n,
      n_squared=n * n,
      u=u,
      u_squared=u * u,
      n_u=n * u,
      delta_g=ogr.finite_or_zero(delta_g) * accepted,
      delta_o=ogr.finite_or_zero(delta_o) * accepted,
      rejected=rejected,
      clients=tf.constant(1.0),
      val_loss_sum=a.val.loss_sum,
      val_correct=a.val.correct,
      val_count=a.val.count,
      probe_loss_sum=a.probe.loss_sum,
      probe_count=a.probe.count,
  )


class _LocalLoop(NamedTuple):
  """What every local step uses: the step, the batches, the loss scale."""
  step: Callable[..., Any]
  iterator: Any
  blend_scale: tf.Tensor


def _compiler(jit_compile: bool) -> Callable[[Callable], Callable]:
  """Wraps a step as an XLA-compiled tf.function, or leaves it inline.

  Inline (no jit), the graph is op for op what it was before compilation
  existed, so uncompiled results do not move.
  """
  if not jit_compile:
    return lambda fn: fn
  return lambda fn: tf.function(fn, jit_compile=True, autograph=False)


def _train_step_fn(model, optimizer, trainable):
  """One local step on blend_scale·Σ_h z_h·L_h: (batch, z, scale, state) →
  the optimizer's new state; updates the variables and the model's metrics."""

  def step(batch, z, blend_scale, optimizer_state):
    with tf.GradientTape() as tape:
      _, loss_sum, correct, count = model.head_statistics(batch, training=True)
      loss = blend_scale * losses.blended_loss(
          losses.mean_head_losses(loss_sum, count), z)
      if model.keras_model.losses:
        loss += tf.add_n(model.keras_model.losses)
    gradients = tape.gradient(loss, trainable)
    gradients = tuple(tf.zeros_like(v) if g is None else g
                      for v, g in zip(trainable, gradients))
    optimizer_state, updated = optimizer.next(optimizer_state, trainable,
                                              gradients)
    for variable, value in zip(trainable, updated):
      variable.assign(value)
    model.update_metrics(loss_sum, correct, count, tf.shape(batch['y'])[0])
    return optimizer_state

  return step


def _start_local_loop(step, optimizer, optimizer_hparams, trainable, train,
                      hparams):
  """The local loop's constants and the optimizer's initial state."""
  # One iterator over all E epochs, so the steps after the warm-up continue
  # exactly where it stopped (same batches as an uninterrupted loop).
  iterator = iter(train.repeat(tf.cast(hparams['local_epochs'], tf.int64)))
  optimizer_state = optimizer.initialize(
      tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
  optimizer_state = optimizer.set_hparams(optimizer_state, optimizer_hparams)
  return _LocalLoop(step, iterator, hparams['blend_scale']), optimizer_state


# ---------------------------------------------------------------------------
# The local procedure.
# ---------------------------------------------------------------------------


def build_hgb_client_update(model_fn: Callable[[], models.MultiModalModel],
                            *, blend: Blend, weighting: ClientWeighting,
                            client_weight_temper: Optional[float] = None):
  """The local procedure of one HGB client, as a `tf.function`.

  Args:
    model_fn: returns a `MultiModalModel`.
    blend: a `Blend` (or its value).
    weighting: a `ClientWeighting` (or its value): what the client reports as
      its update weight, see `choose_client_weight`.
    client_weight_temper: β; when set, the OGR weight is n_k·u_k^β (the
      normaliser ū of §5b cancels out), flattening concentrated weights.

  Returns:
    `client_update(optimizer, initial_weights, prior, hparams, optimizer_hparams,
    data)` → (ClientResult, model metrics, OrderedDict of HGB statistics).
    When the model asks for it (`MultiModalModel.jit_compile`), each training
    step (forward, gradients, optimizer update, metrics) and each snapshot's
    forward pass run as XLA-compiled functions; the datasets are read outside
    them, by the same loop.
  """
  blend, weighting = Blend(blend), ClientWeighting(weighting)
  model = model_fn()
  num_heads = len(model.heads)
  compiled = _compiler(getattr(model, 'jit_compile', False))

  @compiled
  def chunk_statistics(chunk):
    _, loss_sum, correct, count = model.head_statistics(chunk, training=False)
    return loss_sum, correct, count

  def evaluate(batch) -> HeadStatistics:
    """Inference-mode per-head statistics over a whole set.

    One forward pass per EVAL_CHUNK examples (one pass for the usual few
    dozen), so activations stay bounded however large a held-out set is.
    """
    size = tf.shape(batch['y'])[0]
    zeros = tf.zeros([num_heads], tf.float32)
    totals = (zeros, zeros, zeros)
    for start in tf.range(0, size, EVAL_CHUNK):
      chunk = tf.nest.map_structure(
          lambda t, start=start: t[start:start + EVAL_CHUNK], batch)
      loss_sum, correct, count = chunk_statistics(chunk)
      totals = (totals[0] + loss_sum, totals[1] + correct, totals[2] + count)
    return HeadStatistics(*totals)

  def measure(held_out) -> Snapshot:
    return Snapshot(probe=evaluate(held_out['probe']),
                    val=evaluate(held_out['val']))

  def train_steps(loop: _LocalLoop, num_steps, z, optimizer_state,
                  num_examples):
    """`num_steps` steps on blend_scale·Σ_h z_h·L_h; (state, examples seen)."""
    for _ in tf.range(num_steps):
      # The batch is read here: a compiled step cannot iterate a dataset.
      batch = loop.iterator.get_next()
      optimizer_state = loop.step(batch, z, loop.blend_scale, optimizer_state)
      num_examples += tf.cast(tf.shape(batch['y'])[0], tf.int64)
    return optimizer_state, num_examples

  def trained_modalities():
    return tf.cast(model.trained_head_counts()[:-1] > 0, tf.float32)

  @tf.function
  def client_update(optimizer, initial_weights, prior, hparams,
                    optimizer_hparams, data):
    data = tf.nest.map_structure(
        lambda dataset: dataset.with_options(_DATA_OPTIONS), data)
    held_out = data['held_out'].get_single_element()
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), model_weights,
                          initial_weights)
    trainable = tuple(tf.nest.flatten(model_weights.trainable))

    a = measure(held_out)  # Snapshot A: the received global model.
    present = a.present
    warmup_z = warmup_blend(blend, prior, present)
    warmup_steps, total_steps = local_steps(data['train'], hparams)
    loop, optimizer_state = _start_local_loop(
        compiled(_train_step_fn(model, optimizer, trainable)),
        optimizer, optimizer_hparams, trainable, data['train'], hparams)
    optimizer_state, num_examples = train_steps(
        loop, warmup_steps, warmup_z, optimizer_state,
        tf.constant(0, tf.int64))
    z = warmup_z
    if blend == Blend.OGR:  # Snapshot B and modality-level blending.
      z = ogr_blend(a, measure(held_out), present, warmup_z, hparams)
    optimizer_state, num_examples = train_steps(
        loop, total_steps - warmup_steps, z, optimizer_state, num_examples)

    c = measure(held_out)  # Snapshot C: the trained local model.
    # n_k: training examples (examples trained on, divided by E).
    num_train_examples = tf.cast(num_examples, tf.float32) / tf.cast(
        hparams['local_epochs'], tf.float32)
    u, delta_g, delta_o = client_level_weight(
        a, c, z, num_train_examples, hparams, client_weight_temper)
    update, non_finite = process_utils.zero_all_if_any_non_finite(
        tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                              model_weights.trainable))
    rejected = tf.cast(non_finite, tf.float32)
    weights = ClientWeights.of(num_examples, u, rejected)
    weight = choose_client_weight(weighting, weights, trained_modalities)
    if non_finite > 0:
      model.reset_metrics()
    return (tff.learning.templates.ClientResult(update=update,
                                                update_weight=weight),
            model.report_local_unfinalized_metrics(),
            round_stats(z, num_train_examples, weights, rejected, delta_g,
                        delta_o, a))

  return client_update


# ---------------------------------------------------------------------------
# The TFF client work.
# ---------------------------------------------------------------------------


class _ModelTypes(NamedTuple):
  """What the client work's types and metrics need from the model."""
  heads: list[str]
  data: tff.Type
  weights: tff.Type
  metric_finalizers: Any
  unfinalized_metrics: tff.Type


def _model_types(model_fn) -> _ModelTypes:
  """Builds the model once in a graph, for its types; checks its class."""
  with tf.Graph().as_default():
    model = model_fn()
    if not isinstance(model, models.MultiModalModel):
      raise TypeError('HGB needs a tff_hgb.models.MultiModalModel (per-head '
                      f'losses); model_fn returned {type(model).__name__}.')
    element_type = tff.types.tensorflow_to_type(model.input_spec)
    unfinalized_type = tff.types.tensorflow_to_type(
        tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype),
            model.report_local_unfinalized_metrics()))
    held_out_type = tff.types.StructWithPythonType(
        [('probe', element_type), ('val', element_type)],
        collections.OrderedDict)
    data_type = tff.types.StructWithPythonType(
        [('train', tff.SequenceType(element_type)),
         ('held_out', tff.SequenceType(held_out_type))],
        collections.OrderedDict)
    return _ModelTypes(model.heads, data_type,
                       tff.learning.models.weights_type_from_model(model),
                       model.metric_finalizers(), unfinalized_type)


def build_hgb_client_work(
    model_fn: Callable[[], models.MultiModalModel],
    optimizer: tff.learning.optimizers.Optimizer,
    config: hgb_config.HGBConfig = hgb_config.HGBConfig(),
    *,
    metrics_aggregator=None,
) -> tff.learning.templates.ClientWorkProcess:
  """HGB's `tff.learning.templates.ClientWorkProcess`.

  Type signatures (H = number of heads, W = model weights, D = the model's
  batched input type):
    initialize: ( -> <prior=float32[H], optimizer=<hparams>, hgb=<hparams>>@SERVER)
    next: (<state@SERVER, W@CLIENTS,
            <train=D*,held_out=<probe=D,val=D>*>@CLIENTS> ->
           <state=state@SERVER, result=<update=W.trainable,
            update_weight=float32 or structured>@CLIENTS, measurements=<train=...,
            hgb=...>@SERVER>)

  The clients blend by `config.blend` and report the weight
  `config.client_weighting` names; the metrics report the clients' shares
  p_k = (1−λ)·n_k/Σn + λ·u_k/Σu with λ = `config.mix`.

  The state carries the global blending prior z̄ (the n_k-weighted mean of the
  clients' z^k, kept unchanged when no client reports), the client optimizer's
  hyper-parameters and HGB's numeric hyper-parameters (`config.hparams`).
  """
  types = _model_types(model_fn)
  num_heads = len(types.heads)
  if metrics_aggregator is None:
    metrics_aggregator = tff.learning.metrics.sum_then_finalize
  aggregate_metrics = metrics_aggregator(types.metric_finalizers,
                                         types.unfinalized_metrics)
  initial_state = collections.OrderedDict(
      prior=np.full([num_heads], 1.0 / num_heads, np.float32),
      optimizer=process_utils.optimizer_hparams(optimizer),
      hgb=config.hparams.as_state(),
  )

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_state, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type.prior, state_type.hgb,
                              state_type.optimizer, types.weights, types.data)
  def client_update_comp(prior, hgb_hparams, opt_hparams, weights, data):
    update_fn = build_hgb_client_update(
        model_fn, blend=config.blend, weighting=config.client_weighting,
        client_weight_temper=config.client_weight_temper)
    return update_fn(optimizer, weights, prior, hgb_hparams, opt_hparams, data)

  stats_type = client_update_comp.type_signature.result[2]

  extremes_type = tff.types.StructWithPythonType(
      [('max_n', np.float32), ('max_u', np.float32), ('min_n', np.float32),
       ('min_u', np.float32)], collections.OrderedDict)

  @tff.tensorflow.computation(
      (state_type.prior, state_type.hgb.prior_momentum, stats_type,
       extremes_type))
  def summarize_comp(args):
    prior, momentum, totals, extremes = args
    return _summarize(prior, momentum, totals, extremes, types.heads,
                      config.mix)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(types.weights, tff.CLIENTS),
      tff.FederatedType(types.data, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    prior = tff.federated_broadcast(state.prior)
    hgb_hparams = tff.federated_broadcast(state.hgb)
    opt_hparams = tff.federated_broadcast(state.optimizer)
    client_result, model_metrics, stats = tff.federated_map(
        client_update_comp,
        (prior, hgb_hparams, opt_hparams, weights, client_data))
    train_metrics = aggregate_metrics(model_metrics)
    totals = tff.federated_sum(stats)
    extremes = tff.federated_zip(collections.OrderedDict(
        max_n=tff.federated_max(stats.n), max_u=tff.federated_max(stats.u),
        min_n=tff.federated_min(stats.n), min_u=tff.federated_min(stats.u)))
    new_prior, hgb_metrics = tff.federated_map(
        summarize_comp, tff.federated_zip(
            (state.prior, state.hgb.prior_momentum, totals, extremes)))
    new_state = tff.federated_zip(collections.OrderedDict(
        prior=new_prior, optimizer=state.optimizer, hgb=state.hgb))
    measurements = tff.federated_zip(
        collections.OrderedDict(train=train_metrics, hgb=hgb_metrics))
    return tff.templates.MeasuredProcessOutput(new_state, client_result,
                                               measurements)

  @tff.tensorflow.computation(state_type)
  def get_hparams_fn(state):
    return collections.OrderedDict(optimizer=state['optimizer'],
                                   hgb=state['hgb'])

  hparams_type = get_hparams_fn.type_signature.result

  @tff.tensorflow.computation(state_type, hparams_type)
  def set_hparams_fn(state, new_hparams):
    return collections.OrderedDict(prior=state['prior'],
                                   optimizer=new_hparams['optimizer'],
                                   hgb=new_hparams['hgb'])

  return tff.learning.templates.ClientWorkProcess(
      init_fn, next_fn, get_hparams_fn=get_hparams_fn,
      set_hparams_fn=set_hparams_fn)


def _summarize(prior, momentum, totals, extremes, heads, mix):
  """Server side: the new prior z̄ and the round's HGB metrics.

  Client shares are p_k = a·n_k + b·u_k with a = (1−λ)/Σn, b = λ/Σu, so every
  share statistic below comes from sums (exact for λ ∈ {0, 1}; for a mix the
  max/min shares are bounds).
  """
  reported = totals['z_weight'] > 0
  round_mean = totals['z_sum'] / tf.maximum(totals['z_weight'], 1e-30)
  new_prior = tf.where(reported,
                       (1.0 - momentum) * prior + momentum * round_mean, prior)
  a = tf.math.divide_no_nan(1.0 - mix, totals['n'])
  b = tf.math.divide_no_nan(tf.cast(mix, tf.float32), totals['u'])
  sum_p_squared = (a * a * totals['n_squared'] + 2 * a * b * totals['n_u'] +
                   b * b * totals['u_squared'])
  accepted = totals['clients'] - totals['rejected']
  metrics = collections.OrderedDict()
  for i, head in enumerate(heads):
    metrics[f'z/{head}'] = new_prior[i]
  metrics['client_weight/max_share'] = (a * extremes['max_n'] +
                                        b * extremes['max_u'])
  metrics['client_weight/min_share'] = (a * extremes['min_n'] +
                                        b * extremes['min_u'])
  # Effective number of clients 1/Σp_k².
  metrics['client_weight/effective_clients'] = tf.math.divide_no_nan(
      1.0, sum_p_squared)
  metrics['u/max'] = extremes['max_u']
  metrics['delta_g/mean'] = tf.math.divide_no_nan(totals['delta_g'], accepted)
  metrics['delta_o/mean'] = tf.math.divide_no_nan(totals['delta_o'], accepted)
  metrics['u/mean'] = tf.math.divide_no_nan(totals['u'], accepted)
  metrics['rejected_clients'] = totals['rejected']
  for i, head in enumerate(heads):
    metrics[f'val/{head}/loss'] = tf.math.divide_no_nan(
        totals['val_loss_sum'][i], totals['val_count'][i])
    metrics[f'val/{head}/accuracy'] = tf.math.divide_no_nan(
        totals['val_correct'][i], totals['val_count'][i])
    metrics[f'probe/{head}/loss'] = tf.math.divide_no_nan(
        totals['probe_loss_sum'][i], totals['probe_count'][i])
  return new_prior, metrics
