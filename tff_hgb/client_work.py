"""HGB client work: local training on the OGR-blended loss (ALGORITHM.md §4.2).

`build_hgb_client_update` is the plain-TF local procedure (snapshots A, B, C,
warm-up, modality weights z^k, client weight u_k); `build_hgb_client_work` is a
thin TFF wrapper that gives it placements and types.

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
import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import losses
from tff_hgb import models
from tff_hgb import ogr
from tff_hgb import process_utils

# How the heads' losses are weighted during local training.
BLEND_OGR = 'ogr'          # M-GB: z^k from ΔG/ΔO² after the warm-up.
BLEND_PRIOR = 'prior'      # The global prior z̄ (restricted to H_k) throughout.
BLEND_UNIFORM = 'uniform'  # Equal weights over H_k (C-GB only; fixed aux heads).
BLEND_FUSED = 'fused'      # The fusion head only (the paper's FedAvg).
BLENDS = (BLEND_OGR, BLEND_PRIOR, BLEND_UNIFORM, BLEND_FUSED)

# How the server weights this client's update.
WEIGHT_OGR = 'ogr'                    # C-GB: u_k = ΔG/(2ΔO²) + δ·n_k.
WEIGHT_NUM_EXAMPLES = 'num_examples'  # FedAvg's weighting.
WEIGHTINGS = (WEIGHT_OGR, WEIGHT_NUM_EXAMPLES)


@dataclasses.dataclass(frozen=True)
class HGBHParams:
  """Numeric hyper-parameters; they live in the process state (set_hparams).

  Attributes:
    local_epochs: E, local epochs per round.
    warmup_fraction: φ, warm-up steps as a fraction of one local epoch.
    epsilon: floor of ΔO² (§3).
    delta: δ in u_k = ΔG/(2ΔO²) + δ·n_k (fallback to example counts).
    blend_smoothing: γ, z ← (1−γ)·z + γ·uniform (§5b; 0 = paper).
    fusion_weight_floor: z_fusion ≥ floor (§5b; 0 = paper).
    blend_scale: the blended loss is multiplied by this (§5b; 1 = sum to 1).
    delta_o_relative_floor: κ, ΔO² ≥ κ·mean over heads (§5b; 0 = absolute only).
    prior_momentum: η, z̄ ← (1−η)·z̄ + η·(this round's mean z^k): an EMA of the
      blend across rounds (§5b; 1 = paper, the round's mean replaces z̄).
  """

  local_epochs: int = 1
  warmup_fraction: float = 0.5
  epsilon: float = ogr.DEFAULT_EPSILON
  delta: float = ogr.DEFAULT_DELTA
  blend_smoothing: float = 0.0
  fusion_weight_floor: float = 0.0
  blend_scale: float = 1.0
  delta_o_relative_floor: float = 0.0
  prior_momentum: float = 1.0

  def __post_init__(self):
    if self.local_epochs < 1:
      raise ValueError(f'local_epochs must be ≥ 1, got {self.local_epochs}.')
    if not 0.0 <= self.warmup_fraction <= 1.0:
      raise ValueError('warmup_fraction must lie in [0, 1], got '
                       f'{self.warmup_fraction}.')
    if not 0.0 <= self.blend_smoothing <= 1.0:
      raise ValueError('blend_smoothing must lie in [0, 1], got '
                       f'{self.blend_smoothing}.')
    if not 0.0 <= self.prior_momentum <= 1.0:
      raise ValueError('prior_momentum must lie in [0, 1], got '
                       f'{self.prior_momentum}.')
    if not 0.0 <= self.fusion_weight_floor <= 1.0:
      raise ValueError('fusion_weight_floor must lie in [0, 1], got '
                       f'{self.fusion_weight_floor}.')
    for name in ('epsilon', 'delta', 'blend_scale', 'delta_o_relative_floor'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be ≥ 0, got {getattr(self, name)}.')

  def as_state(self) -> collections.OrderedDict:
    return collections.OrderedDict(
        local_epochs=np.int32(self.local_epochs),
        warmup_fraction=np.float32(self.warmup_fraction),
        epsilon=np.float32(self.epsilon),
        delta=np.float32(self.delta),
        blend_smoothing=np.float32(self.blend_smoothing),
        fusion_weight_floor=np.float32(self.fusion_weight_floor),
        blend_scale=np.float32(self.blend_scale),
        delta_o_relative_floor=np.float32(self.delta_o_relative_floor),
        prior_momentum=np.float32(self.prior_momentum),
    )


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


def build_hgb_client_update(model_fn: Callable[[], models.MultiModalModel],
                            *, blend: str, weighting: str,
                            client_weight_temper: Optional[float] = None,
                            structured_weight: bool = False):
  """The local procedure of one HGB client, as a `tf.function`.

  Args:
    model_fn: returns a `MultiModalModel`.
    blend: one of BLENDS.
    weighting: one of WEIGHTINGS.
    client_weight_temper: β; when set, the OGR weight is n_k·u_k^β (the
      normaliser ū of §5b cancels out), flattening concentrated weights.
    structured_weight: report OrderedDict(num_examples, ogr, modalities) as the
      update weight, for `tff_hgb.aggregation.build_structured_mean`.

  Returns:
    `client_update(optimizer, initial_weights, prior, hparams, optimizer_hparams,
    data)` → (ClientResult, model metrics, OrderedDict of HGB statistics).
  """
  model = model_fn()
  heads = model.heads
  num_heads = len(heads)

  def evaluate(batch):
    """Inference-mode per-head (loss_sum, correct, count) over a whole set.

    One forward pass per EVAL_CHUNK examples (one pass for the usual few
    dozen), so activations stay bounded however large a held-out set is.
    """
    size = tf.shape(batch['y'])[0]
    zeros = tf.zeros([num_heads], tf.float32)
    totals = (zeros, zeros, zeros)
    for start in tf.range(0, size, EVAL_CHUNK):
      chunk = tf.nest.map_structure(
          lambda t, start=start: t[start:start + EVAL_CHUNK], batch)
      _, loss_sum, correct, count = model.head_statistics(chunk,
                                                          training=False)
      totals = (totals[0] + loss_sum, totals[1] + correct, totals[2] + count)
    return totals

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

    # Snapshot A: the received global model.
    probe_a = evaluate(held_out['probe'])
    val_a = evaluate(held_out['val'])
    train_loss_a = losses.mean_head_losses(probe_a[0], probe_a[2])
    val_loss_a = losses.mean_head_losses(val_a[0], val_a[2])
    present = tf.cast(
        tf.logical_and(probe_a[2] > 0, val_a[2] > 0), tf.float32)
    uniform = tf.math.divide_no_nan(present, tf.reduce_sum(present))

    if blend == BLEND_FUSED:
      warmup_z = tf.one_hot(num_heads - 1, num_heads)
    elif blend == BLEND_UNIFORM:
      warmup_z = uniform
    else:
      warmup_z = ogr.restrict_prior(prior, present)

    steps_per_epoch = _num_batches(data['train'])
    total_steps = steps_per_epoch * hparams['local_epochs']
    warmup_steps = tf.minimum(
        tf.cast(tf.floor(hparams['warmup_fraction'] *
                         tf.cast(steps_per_epoch, tf.float32)), tf.int32),
        total_steps)
    # One iterator over all E epochs, so the steps after the warm-up continue
    # exactly where it stopped (same batches as an uninterrupted loop).
    iterator = iter(data['train'].repeat(
        tf.cast(hparams['local_epochs'], tf.int64)))

    def train_steps(num_steps, z, optimizer_state, num_examples):
      for _ in tf.range(num_steps):
        batch = iterator.get_next()
        with tf.GradientTape() as tape:
          _, loss_sum, correct, count = model.head_statistics(batch,
                                                              training=True)
          loss = hparams['blend_scale'] * losses.blended_loss(
              losses.mean_head_losses(loss_sum, count), z)
          if model.keras_model.losses:
            loss += tf.add_n(model.keras_model.losses)
        gradients = tape.gradient(loss, trainable)
        gradients = tuple(
            tf.zeros_like(v) if g is None else g
            for v, g in zip(trainable, gradients))
        optimizer_state, updated = optimizer.next(optimizer_state, trainable,
                                                  gradients)
        for variable, value in zip(trainable, updated):
          variable.assign(value)
        batch_size = tf.shape(batch['y'])[0]
        model.update_metrics(loss_sum, correct, count, batch_size)
        num_examples += tf.cast(batch_size, tf.int64)
      return optimizer_state, num_examples

    optimizer_state = optimizer.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
    optimizer_state = optimizer.set_hparams(optimizer_state, optimizer_hparams)
    num_examples = tf.constant(0, tf.int64)
    optimizer_state, num_examples = train_steps(warmup_steps, warmup_z,
                                                optimizer_state, num_examples)

    # Snapshot B and modality-level blending.
    if blend == BLEND_OGR:
      probe_b = evaluate(held_out['probe'])
      val_b = evaluate(held_out['val'])
      z = ogr.modality_blend_weights(
          train_loss_a, val_loss_a,
          losses.mean_head_losses(probe_b[0], probe_b[2]),
          losses.mean_head_losses(val_b[0], val_b[2]),
          present, warmup_z, epsilon=hparams['epsilon'],
          relative_floor=hparams['delta_o_relative_floor'])
      z = ogr.stabilize_blend(z, present,
                              smoothing=hparams['blend_smoothing'],
                              fusion_floor=hparams['fusion_weight_floor'])
    else:
      z = warmup_z
    optimizer_state, num_examples = train_steps(total_steps - warmup_steps, z,
                                                optimizer_state, num_examples)

    # Snapshot C and the client-level weight on the blended loss A → C.
    probe_c = evaluate(held_out['probe'])
    val_c = evaluate(held_out['val'])
    train_loss_c = losses.mean_head_losses(probe_c[0], probe_c[2])
    val_loss_c = losses.mean_head_losses(val_c[0], val_c[2])
    blended = [losses.blended_loss(x, z) for x in
               (train_loss_a, val_loss_a, train_loss_c, val_loss_c)]
    # n_k: training examples (examples trained on, divided by E).
    num_train_examples = tf.cast(num_examples, tf.float32) / tf.cast(
        hparams['local_epochs'], tf.float32)
    u = ogr.client_weight(*blended, num_train_examples,
                          epsilon=hparams['epsilon'], delta=hparams['delta'])
    if client_weight_temper:  # None or 0 = off.
      u = ogr.finite_or_zero(num_train_examples * tf.pow(u, client_weight_temper))
    delta_g, delta_o = ogr.generalization_and_overfitting(*blended)

    update = tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                                   model_weights.trainable)
    update, non_finite = process_utils.zero_all_if_any_non_finite(update)
    rejected = tf.cast(non_finite, tf.float32)
    accepted = 1.0 - rejected
    example_weight = tf.cast(num_examples, tf.float32) * accepted
    ogr_weight = u * accepted
    if structured_weight:
      held = tf.cast(model.trained_head_counts()[:-1] > 0, tf.float32)
      weight = collections.OrderedDict(num_examples=example_weight,
                                       ogr=ogr_weight,
                                       modalities=held * accepted)
    elif weighting == WEIGHT_OGR:
      weight = ogr_weight
    else:
      weight = example_weight
    if non_finite > 0:
      model.reset_metrics()
    stats = collections.OrderedDict(
        z_sum=z * num_train_examples * accepted,
        z_weight=num_train_examples * accepted,
        n=example_weight,
        n_squared=example_weight * example_weight,
        u=ogr_weight,
        u_squared=ogr_weight * ogr_weight,
        n_u=example_weight * ogr_weight,
        delta_g=ogr.finite_or_zero(delta_g) * accepted,
        delta_o=ogr.finite_or_zero(delta_o) * accepted,
        rejected=rejected,
        clients=tf.constant(1.0),
        val_loss_sum=val_a[0],
        val_correct=val_a[1],
        val_count=val_a[2],
        probe_loss_sum=probe_a[0],
        probe_count=probe_a[2],
    )
    return (tff.learning.templates.ClientResult(update=update,
                                                update_weight=weight),
            model.report_local_unfinalized_metrics(), stats)

  return client_update


def _num_batches(dataset):
  """Batches in one pass: the cardinality when TF knows it, else a count."""
  cardinality = tf.cast(dataset.cardinality(), tf.int32)
  return tf.cond(
      cardinality >= 0, lambda: cardinality,
      lambda: dataset.reduce(tf.constant(0, tf.int32), lambda n, _: n + 1))


def build_hgb_client_work(
    model_fn: Callable[[], models.MultiModalModel],
    optimizer: tff.learning.optimizers.Optimizer,
    *,
    blend: str = BLEND_OGR,
    weighting: str = WEIGHT_OGR,
    hparams: HGBHParams = HGBHParams(),
    metrics_aggregator=None,
    client_weight_mix: Optional[float] = None,
    client_weight_temper: Optional[float] = None,
    structured_weight: bool = False,
) -> tff.learning.templates.ClientWorkProcess:
  """HGB's `tff.learning.templates.ClientWorkProcess`.

  Type signatures (H = number of heads, W = model weights, D = the model's
  batched input type):
    initialize: ( -> <prior=float32[H], optimizer=<hparams>, hgb=<hparams>>@SERVER)
    next: (<state@SERVER, W@CLIENTS,
            <train=D*,held_out=<probe=D,val=D>*>@CLIENTS> ->
           <state=state@SERVER, result=<update=W.trainable,
            update_weight=float32>@CLIENTS, measurements=<train=...,
            hgb=...>@SERVER>)

  `client_weight_mix` (λ), `client_weight_temper` (β) and `structured_weight`
  are described in `build_hgb_client_update` and `tff_hgb.aggregation`; they
  only change what the metrics report as the clients' shares when λ is given
  (p_k = (1−λ)·n_k/Σn + λ·u_k/Σu).

  The state carries the global blending prior z̄ (the n_k-weighted mean of the
  clients' z^k, kept unchanged when no client reports), the client optimizer's
  hyper-parameters and HGB's numeric hyper-parameters.
  """
  if blend not in BLENDS:
    raise ValueError(f'blend must be one of {BLENDS}, got {blend!r}.')
  if weighting not in WEIGHTINGS:
    raise ValueError(f'weighting must be one of {WEIGHTINGS}, got '
                     f'{weighting!r}.')
  if client_weight_mix is None:
    client_weight_mix = 1.0 if weighting == WEIGHT_OGR else 0.0
  if not 0.0 <= client_weight_mix <= 1.0:
    raise ValueError('client_weight_mix must lie in [0, 1], got '
                     f'{client_weight_mix}.')
  with tf.Graph().as_default():
    model = model_fn()
    if not isinstance(model, models.MultiModalModel):
      raise TypeError('HGB needs a tff_hgb.models.MultiModalModel (per-head '
                      f'losses); model_fn returned {type(model).__name__}.')
    heads = model.heads
    element_type = tff.types.tensorflow_to_type(model.input_spec)
    weights_type = tff.learning.models.weights_type_from_model(model)
    metric_finalizers = model.metric_finalizers()
    unfinalized_type = tff.types.tensorflow_to_type(
        tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, t.dtype),
            model.report_local_unfinalized_metrics()))
  num_heads = len(heads)
  held_out_type = tff.types.StructWithPythonType(
      [('probe', element_type), ('val', element_type)], collections.OrderedDict)
  data_type = tff.types.StructWithPythonType(
      [('train', tff.SequenceType(element_type)),
       ('held_out', tff.SequenceType(held_out_type))], collections.OrderedDict)
  if metrics_aggregator is None:
    metrics_aggregator = tff.learning.metrics.sum_then_finalize
  aggregate_metrics = metrics_aggregator(metric_finalizers, unfinalized_type)

  optimizer_hparams = optimizer.get_hparams(
      optimizer.initialize(tf.TensorSpec((), tf.float32)))
  initial_state = collections.OrderedDict(
      prior=np.full([num_heads], 1.0 / num_heads, np.float32),
      optimizer=optimizer_hparams,
      hgb=hparams.as_state(),
  )

  @tff.federated_computation
  def init_fn():
    return tff.federated_value(initial_state, tff.SERVER)

  state_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(state_type.prior, state_type.hgb,
                              state_type.optimizer, weights_type, data_type)
  def client_update_comp(prior, hgb_hparams, opt_hparams, weights, data):
    update_fn = build_hgb_client_update(
        model_fn, blend=blend, weighting=weighting,
        client_weight_temper=client_weight_temper,
        structured_weight=structured_weight)
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
    return _summarize(prior, momentum, totals, extremes, heads,
                      client_weight_mix)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
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
