"""Hierarchical Gradient Blending as a `tff.learning.templates.LearningProcess`.

S. Chen, B. Li, "Towards Optimal Multi-Modal Federated Learning on Non-IID Data
with Hierarchical Gradient Blending", IEEE INFOCOM 2022; the OGR estimator is
from W. Wang, D. Tran, M. Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020. This module only composes:
broadcast distributor → HGB client work (`client_work.py`) → a weighted
aggregation of the clients' deltas by their weights → server optimizer.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import aggregation
from tff_hgb import client_work as client_work_lib
from tff_hgb import models
from tff_hgb import process_utils

DEFAULT_SERVER_OPTIMIZER_FN = lambda: tff.learning.optimizers.build_sgdm(  # pylint: disable=g-long-lambda
    learning_rate=1.0)

# mode → (how heads are blended on clients, how the server weights clients).
MODES = {
    # The paper's algorithm, literally (ALGORITHM.md §4, no §5b stabiliser).
    'hgb_paper': (client_work_lib.BLEND_OGR, client_work_lib.WEIGHT_OGR),
    # The default configuration (see DEFAULT_HGB_HPARAMS).
    'hgb': (client_work_lib.BLEND_OGR, client_work_lib.WEIGHT_OGR),
    # Ablations of the paper's Table III.
    'm_gb': (client_work_lib.BLEND_OGR, client_work_lib.WEIGHT_NUM_EXAMPLES),
    'c_gb': (client_work_lib.BLEND_UNIFORM, client_work_lib.WEIGHT_OGR),
    # Blending switched off: fused loss, example-count weights (= FedAvg).
    'fused': (client_work_lib.BLEND_FUSED, client_work_lib.WEIGHT_NUM_EXAMPLES),
    # Fixed, equal head weights with example-count weights.
    'all_heads': (client_work_lib.BLEND_UNIFORM,
                  client_work_lib.WEIGHT_NUM_EXAMPLES),
}

# The literal paper: no stabiliser.
PAPER_HPARAMS = client_work_lib.HGBHParams()
# The default `hgb` configuration, chosen by the study of ALGORITHM.md §5b
# (`make study`, docs/STUDY.md) among four stabilised candidates on validation
# data of htad Mixed-B and the synthetic paper regime in case A only: OGR
# blending of the heads with a floor of ~1/|H| on the fusion head's weight and
# an EMA (η = 0.5) of the blend across rounds, and clients weighted by their
# example counts (λ = 0). Every candidate that kept OGR client weights (λ = 1
# tempered with β = 0.5, or capped at 0.2) scored lower on both settings, as
# the literal C-GB had (docs/HGB_MODES.md).
DEFAULT_HGB_HPARAMS = client_work_lib.HGBHParams(fusion_weight_floor=0.34,
                                                 prior_momentum=0.5)
DEFAULT_CLIENT_WEIGHT_MIX = 0.0
DEFAULT_CLIENT_WEIGHT_TEMPER = 0.0  # 0 = off.
DEFAULT_MAX_CLIENT_SHARE = 0.0  # 0 = off.
DEFAULT_VALIDATION_SOURCE = 'local'

OptimizerArg = Union[tff.learning.optimizers.Optimizer,
                     Callable[[], tff.learning.optimizers.Optimizer]]


def build_hgb_process(
    model_fn: Callable[[], models.MultiModalModel],
    *,
    client_optimizer_fn: OptimizerArg,
    server_optimizer_fn: Optional[OptimizerArg] = None,
    mode: str = 'hgb',
    hparams: Optional[client_work_lib.HGBHParams] = None,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    metrics_aggregator=None,
    client_weight_mix: Optional[float] = None,
    client_weight_temper: Optional[float] = None,
    max_client_share: Optional[float] = None,
    modality_aware: bool = False,
    **hparam_overrides,
) -> tff.learning.templates.LearningProcess:
  """Builds the HGB learning process.

  Args:
    model_fn: no-argument callable returning a `tff_hgb.models.MultiModalModel`
      (new variables on each call), e.g. from `models.build_model_fn`.
    client_optimizer_fn: a `tff.learning.optimizers.Optimizer` (or a callable
      returning one) for local training.
    server_optimizer_fn: optimizer applied to the aggregated delta; default SGD
      with learning rate 1 (w ← w − Δ̄).
    mode: one of `MODES`: 'hgb' (default configuration), 'hgb_paper' (literal),
      'm_gb', 'c_gb', 'fused' (blending off: FedAvg), 'all_heads'.
    hparams: numeric hyper-parameters; defaults depend on the mode.
    model_aggregator: a `tff.aggregators.WeightedAggregationFactory` receiving
      each client's delta with its weight (u_k or n_k); default
      `tff.aggregators.MeanFactory()`. DP, clipping and compression factories
      compose here.
    metrics_aggregator: as in `tff.learning.algorithms.build_weighted_fed_avg`.
    client_weight_mix: λ of ALGORITHM.md §5b, p_k ∝ (1−λ)·n_k/Σn + λ·u_k/Σu
      (default: 1 for modes weighting by u_k, 0 for those weighting by n_k).
      A value strictly between 0 and 1 needs both sums, so it uses
      `tff_hgb.aggregation.build_structured_mean` instead of `model_aggregator`.
    client_weight_temper: β of §5b: the OGR weight becomes n_k·u_k^β (None or
      0 = off).
    max_client_share: c of §5b: no client's share of the round's mean exceeds
      c (water-filling, `tff_hgb.aggregation.CappedMeanFactory` around
      `model_aggregator`; None or 0 = off). Its dependent aggregation runs on
      one machine's runtime, not split across workers.
    modality_aware: average encoder m and head m only over the clients that
      hold m (§5; off by default). Uses the structured aggregation too.
    **hparam_overrides: fields of `HGBHParams` overriding `hparams`.

  Returns:
    A `tff.learning.templates.LearningProcess` with
      initialize: ( -> LearningAlgorithmState@SERVER)
      next: (<LearningAlgorithmState@SERVER,
              {<train=D*,held_out=<probe=D,val=D>*>}@CLIENTS>
             -> <state=LearningAlgorithmState@SERVER, metrics=<distributor=<>,
             client_work=<train=..., hgb=...>, aggregator=..., finalizer=...>@SERVER>)
    where D is the batched element type of the model's input spec; `held_out`
    has one element, the probe and validation sets as whole batches
    (`tff_hgb.data.client_data.held_out_dataset`). The blending
    prior z̄ is `state.client_work['prior']`.
  """
  if mode not in MODES:
    raise ValueError(f'Unknown HGB mode {mode!r}; expected one of '
                     f'{sorted(MODES)}.')
  blend, weighting = MODES[mode]
  if hparams is None:
    hparams = DEFAULT_HGB_HPARAMS if mode == 'hgb' else PAPER_HPARAMS
  if mode == 'hgb':
    if client_weight_mix is None:
      client_weight_mix = DEFAULT_CLIENT_WEIGHT_MIX
    if client_weight_temper is None and DEFAULT_CLIENT_WEIGHT_TEMPER:
      client_weight_temper = DEFAULT_CLIENT_WEIGHT_TEMPER
    if max_client_share is None and DEFAULT_MAX_CLIENT_SHARE:
      max_client_share = DEFAULT_MAX_CLIENT_SHARE
  if hparam_overrides:
    hparams = dataclasses.replace(hparams, **hparam_overrides)
  client_optimizer = process_utils.as_optimizer(client_optimizer_fn,
                                               'client_optimizer_fn')
  server_optimizer = process_utils.as_optimizer(
      server_optimizer_fn or DEFAULT_SERVER_OPTIMIZER_FN, 'server_optimizer_fn')

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  model_weights_type = initial_model_weights_fn.type_signature.result
  distributor = tff.learning.templates.build_broadcast_process(
      model_weights_type)
  if model_aggregator is not None and not isinstance(
      model_aggregator, tff.aggregators.WeightedAggregationFactory):
    raise TypeError('model_aggregator must be a '
                    'tff.aggregators.WeightedAggregationFactory, got '
                    f'{type(model_aggregator).__name__}.')
  structured = modality_aware or (
      client_weight_mix is not None and 0.0 < client_weight_mix < 1.0)
  if structured:
    if model_aggregator is not None or max_client_share:
      raise ValueError(
          'modality_aware and a client_weight_mix strictly between 0 and 1 '
          'use their own aggregation (tff_hgb.aggregation); they cannot be '
          'combined with model_aggregator or max_client_share.')
    with tf.Graph().as_default():
      keras_model = model_fn().keras_model
      modality_index = {m: i for i, m in
                        enumerate(models.model_modalities(keras_model))}
      owners = models.variable_modalities(keras_model)
    groups = ([None if o is None else modality_index[o] for o in owners]
              if modality_aware else None)
    if client_weight_mix is None:
      client_weight_mix = 1.0 if weighting == client_work_lib.WEIGHT_OGR else 0.0
    aggregator = aggregation.build_structured_mean(
        model_weights_type.trainable, len(modality_index),
        client_weight_mix=client_weight_mix, variable_groups=groups)
  else:
    model_aggregator = model_aggregator or tff.aggregators.MeanFactory()
    if max_client_share:
      model_aggregator = aggregation.CappedMeanFactory(
          max_client_share, inner=model_aggregator)
    if client_weight_mix is not None:
      # λ = 1 is u_k weighting, λ = 0 example counts: a scalar weight does.
      weighting = (client_work_lib.WEIGHT_OGR if client_weight_mix == 1.0 else
                   client_work_lib.WEIGHT_NUM_EXAMPLES)
    aggregator = model_aggregator.create(model_weights_type.trainable,
                                         tff.TensorType(np.float32))
  client_work = client_work_lib.build_hgb_client_work(
      model_fn, client_optimizer, blend=blend, weighting=weighting,
      hparams=hparams, metrics_aggregator=metrics_aggregator,
      client_weight_mix=client_weight_mix,
      client_weight_temper=client_weight_temper,
      structured_weight=structured)
  finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
      server_optimizer, model_weights_type)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn, distributor, client_work, aggregator,
      finalizer)
