"""Builds a registry entry (`tff_hgb.algorithms` names it) on federated data.

`build_algorithm(name, federated_data, config)` returns an `Algorithm`: the
`tff.learning.templates.LearningProcess` with the client data it takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import aggregation
from tff_hgb import algorithms
from tff_hgb import hgb
from tff_hgb import hgb_config
from tff_hgb import model_config
from tff_hgb import models

# The local loop of every baseline. TFF's default (DATASET_REDUCE) has the TF
# runtime instantiate and Grappler-optimise the reduce function on every
# client call; the iterator loop computes the same batches in the same order
# (tests/algorithms_test.py) at 0.4x the round time here (docs/BENCHMARKS.md).
BASELINE_LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR


@dataclasses.dataclass
class Algorithm:
  """A built algorithm, ready for a training loop.

  Attributes:
    name: registry name.
    process: the `tff.learning.templates.LearningProcess`.
    client_data: (client_id, round_num) → the value `process.next` takes for
      that client (a batched dataset, or HGB's train/val/probe structure).
    client_ids: the clients that can take part (uni-modal: those holding it).
    federated_data: the data view the algorithm trains on.
    keras_model_fn: builds a Keras model whose trainable weights match
      `process.get_model_weights(state)`, for evaluation.
  """

  name: str
  process: tff.learning.templates.LearningProcess
  client_data: Callable[[str, int], Any]
  client_ids: list[str]
  federated_data: Any
  keras_model_fn: Callable[[], tf.keras.Model]


def _client_optimizer(config: algorithms.AlgorithmConfig):
  if config.client_momentum:
    return tff.learning.optimizers.build_sgdm(
        learning_rate=config.client_learning_rate,
        momentum=config.client_momentum)
  return tff.learning.optimizers.build_sgdm(
      learning_rate=config.client_learning_rate)


def _server_optimizer(config: algorithms.AlgorithmConfig):
  return tff.learning.optimizers.build_sgdm(
      learning_rate=config.server_learning_rate)


def _shuffle_seed(config: algorithms.AlgorithmConfig, client_index: int,
                  round_num: int):
  # A different, reproducible local order every round and client.
  return (config.seed * 1_000_003 + round_num * 7919 + client_index) % (2**31)


def _hgb_process(name: str, model_fn, config: algorithms.AlgorithmConfig):
  """HGB mode `name`'s process."""
  overrides = dict(config.hgb_overrides)
  overrides.setdefault('local_epochs', config.local_epochs)
  client_switches = {}
  if name == 'hgb':  # The other modes are literal (see AlgorithmConfig).
    client_switches = dict(
        client_weight_mix=config.client_weight_mix,
        client_weight_temper=config.client_weight_temper,
        max_client_share=config.max_client_share)
  hgb_process_config = hgb_config.HGBConfig.for_mode(
      name, modality_aware=config.modality_aware, **client_switches,
      **overrides)
  process = hgb.build_process_from_config(
      model_fn, hgb_process_config,
      client_optimizer_fn=_client_optimizer(config),
      server_optimizer_fn=_server_optimizer(config))
  return process


def _balanced_process(name: str, model_fn,
                      config: algorithms.AlgorithmConfig):
  """The §9 process `name` (mmpareto, ogm_ge, ogm) with `config`'s fields."""
  from tff_hgb.algorithms import balanced  # pylint: disable=g-import-not-at-top
  if name == 'mmpareto':
    method, hparams = balanced.MMPARETO, dict(gamma=config.mmpareto_gamma)
  else:
    method = balanced.OGM
    hparams = dict(
        alpha=config.ogm_alpha,
        noise_scale=config.ogm_noise_scale if name == 'ogm_ge' else 0.0,
        start_round=config.ogm_start_round, end_round=config.ogm_end_round)
  return balanced.build_balanced_process(
      model_fn, method, client_optimizer_fn=_client_optimizer(config),
      server_optimizer_fn=_server_optimizer(config), seed=config.seed,
      **hparams)


def build_algorithm(name: str, federated_data,
                    config: algorithms.AlgorithmConfig) -> Algorithm:
  """Builds registry entry `name` on `federated_data` (a FederatedData)."""
  modality_names = [m.name for m in federated_data.modalities]
  if not algorithms.is_known(name, modality_names):
    raise ValueError(f'Unknown algorithm {name!r}; expected one of '
                     f'{algorithms.describe_names(modality_names)}.')
  model_config.check_encoders(config.model.encoders,
                              federated_data.modalities)
  if name.startswith(algorithms.UNI_PREFIX):
    federated_data = federated_data.uni_modal(
        name[len(algorithms.UNI_PREFIX):])
  modalities = list(federated_data.modalities)
  num_classes = federated_data.num_classes
  index = {cid: i for i, cid in enumerate(federated_data.client_ids)}
  # A uni-modal model keeps its own modality's encoder choice only.
  config = dataclasses.replace(config, model=dataclasses.replace(
      config.model, encoders=tuple(
          (m, kind) for m, kind in config.model.encoders
          if m in {spec.name for spec in modalities})))

  def keras_model_fn():
    return models.build_keras_model(modalities, num_classes,
                                    config=config.model)

  head_weights = (models.equal_head_weights(modality_names)
                  if name == 'fedavg_all_heads' else None)
  model_fn = models.build_model_fn(modalities, num_classes, config=config.model,
                                   head_weights=head_weights,
                                   jit_compile=config.jit)

  if name in algorithms.HGB_MODES:
    process = _hgb_process(name, model_fn, config)

    def client_data(cid, round_num):
      return federated_data.client_datasets(
          cid, batch_size=config.batch_size,
          shuffle_seed=_shuffle_seed(config, index[cid], round_num),
          validation=config.validation_source, full_probe=config.full_probe)
  else:
    if name == 'fednova':
      from tff_hgb.algorithms import fednova  # pylint: disable=g-import-not-at-top
      process = fednova.build_fednova_process(
          model_fn, client_optimizer_fn=_client_optimizer(config),
          server_optimizer_fn=_server_optimizer(config),
          client_momentum=config.client_momentum,
          loop_implementation=BASELINE_LOOP)
    elif name == 'fedattn':
      from tff_hgb.algorithms import fedattn  # pylint: disable=g-import-not-at-top
      process = fedattn.build_fedattn_process(
          model_fn, client_optimizer_fn=_client_optimizer(config),
          epsilon=config.fedattn_epsilon, loop_implementation=BASELINE_LOOP)
    elif name in algorithms.BALANCING:
      process = _balanced_process(name, model_fn, config)
    elif name == 'fedprox':
      process = tff.learning.algorithms.build_weighted_fed_prox(
          model_fn, proximal_strength=config.fedprox_mu,
          client_optimizer_fn=_client_optimizer(config),
          server_optimizer_fn=_server_optimizer(config),
          loop_implementation=BASELINE_LOOP)
    else:  # fedavg, fedavg_tk, fedavg_all_heads, fedavg_capped, uni:<m>
      aggregator = None
      if name == 'fedavg_capped':
        aggregator = (
            aggregation.CappedMeanFactory(config.max_client_share)
            if config.max_client_share else aggregation.CappedMeanFactory(
                max_share_over_uniform=algorithms.DEFAULT_CAP_OVER_UNIFORM))
      process = tff.learning.algorithms.build_weighted_fed_avg(
          model_fn, client_optimizer_fn=_client_optimizer(config),
          server_optimizer_fn=_server_optimizer(config),
          model_aggregator=aggregator, loop_implementation=BASELINE_LOOP)

    def client_data(cid, round_num):
      # Baselines hold no validation split back: they train on all local data,
      # except fedavg_tk, which trains on what HGB trains on.
      return federated_data.train_dataset(
          cid, batch_size=config.batch_size,
          shuffle_seed=_shuffle_seed(config, index[cid], round_num),
          local_epochs=config.local_epochs,
          include_val=name != 'fedavg_tk')

  return Algorithm(name=name, process=process, client_data=client_data,
                   client_ids=list(federated_data.client_ids),
                   federated_data=federated_data,
                   keras_model_fn=keras_model_fn)
