"""Hierarchical Gradient Blending as a `tff.learning.templates.LearningProcess`.

S. Chen, B. Li, "Towards Optimal Multi-Modal Federated Learning on Non-IID Data
with Hierarchical Gradient Blending", IEEE INFOCOM 2022; the OGR estimator is
from W. Wang, D. Tran, M. Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020. This module only composes, as the
baselines do (`tff_hgb.process_utils`): broadcast distributor → HGB client work
(`client_work.py`) → the aggregation of the clients' deltas that the
configuration's client weighting needs → server optimizer. What the process
does is one `hgb_config.HGBConfig`, built from a mode and the §5b switches.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import aggregation
from tff_hgb import client_work as client_work_lib
from tff_hgb import hgb_config
from tff_hgb import models
from tff_hgb import process_utils

# mode → (how heads are blended on clients, how the server weights clients).
MODES = hgb_config.MODES
# The literal paper's hyper-parameters, and the default `hgb`'s (see there).
PAPER_HPARAMS = hgb_config.PAPER_HPARAMS
DEFAULT_HGB_HPARAMS = hgb_config.DEFAULT_HGB_HPARAMS
DEFAULT_CLIENT_WEIGHT_MIX = hgb_config.DEFAULT_CLIENT_WEIGHT_MIX


def build_hgb_process(
    model_fn: Callable[[], models.MultiModalModel],
    *,
    client_optimizer_fn: process_utils.OptimizerArg,
    server_optimizer_fn: Optional[process_utils.OptimizerArg] = None,
    mode: str = 'hgb',
    hparams: Optional[hgb_config.HGBHParams] = None,
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
      (default: `DEFAULT_CLIENT_WEIGHT_MIX` for 'hgb'; for the other modes 1
      if they weight by u_k, 0 if by n_k).
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
  config = hgb_config.HGBConfig.for_mode(
      mode, hparams=hparams, client_weight_mix=client_weight_mix,
      client_weight_temper=client_weight_temper,
      max_client_share=max_client_share, modality_aware=modality_aware,
      **hparam_overrides)
  return build_process_from_config(
      model_fn, config, client_optimizer_fn=client_optimizer_fn,
      server_optimizer_fn=server_optimizer_fn,
      model_aggregator=model_aggregator, metrics_aggregator=metrics_aggregator)


def build_process_from_config(
    model_fn: Callable[[], models.MultiModalModel],
    config: hgb_config.HGBConfig,
    *,
    client_optimizer_fn: process_utils.OptimizerArg,
    server_optimizer_fn: Optional[process_utils.OptimizerArg] = None,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
    metrics_aggregator=None,
) -> tff.learning.templates.LearningProcess:
  """The HGB learning process of `config`; arguments as `build_hgb_process`."""
  client_optimizer = process_utils.as_optimizer(client_optimizer_fn,
                                               'client_optimizer_fn')
  server_optimizer = process_utils.as_optimizer(
      server_optimizer_fn or process_utils.DEFAULT_SERVER_OPTIMIZER_FN,
      'server_optimizer_fn')
  initial_model_weights_fn = process_utils.initial_model_weights_computation(
      model_fn)
  aggregator = build_hgb_aggregator(
      model_fn, config, initial_model_weights_fn.type_signature.result,
      model_aggregator)
  client_work = client_work_lib.build_hgb_client_work(
      model_fn, client_optimizer, config,
      metrics_aggregator=metrics_aggregator)
  return process_utils.compose_broadcast_process(
      initial_model_weights_fn, client_work, aggregator, server_optimizer)


def build_hgb_aggregator(
    model_fn: Callable[[], models.MultiModalModel],
    config: hgb_config.HGBConfig,
    model_weights_type: tff.Type,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> tff.templates.AggregationProcess:
  """The aggregation of the deltas that `config.client_weighting` needs.

  A scalar weight (u_k or n_k) goes to `model_aggregator` (default
  `tff.aggregators.MeanFactory()`), capped by `config.max_client_share`; a
  structured weight to `aggregation.build_structured_mean` with λ =
  `config.mix`, per modality when `config.modality_aware`.
  """
  if model_aggregator is not None and not isinstance(
      model_aggregator, tff.aggregators.WeightedAggregationFactory):
    raise TypeError('model_aggregator must be a '
                    'tff.aggregators.WeightedAggregationFactory, got '
                    f'{type(model_aggregator).__name__}.')
  if config.client_weighting == hgb_config.ClientWeighting.STRUCTURED:
    if model_aggregator is not None:
      raise ValueError(hgb_config.OWN_AGGREGATION_ERROR)
    with tf.Graph().as_default():
      keras_model = model_fn().keras_model
      modality_index = {m: i for i, m in
                        enumerate(models.model_modalities(keras_model))}
      owners = models.variable_modalities(keras_model)
    groups = ([None if o is None else modality_index[o] for o in owners]
              if config.modality_aware else None)
    return aggregation.build_structured_mean(
        model_weights_type.trainable, len(modality_index),
        client_weight_mix=config.mix, variable_groups=groups)
  model_aggregator = model_aggregator or tff.aggregators.MeanFactory()
  if config.max_client_share is not None:
    model_aggregator = aggregation.CappedMeanFactory(
        config.max_client_share, inner=model_aggregator)
  return model_aggregator.create(model_weights_type.trainable,
                                 tff.TensorType(np.float32))
