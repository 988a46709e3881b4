"""One registry of every algorithm the binaries compare (name → LearningProcess).

Every entry trains the same multi-modal model (`tff_hgb.models`) on the same
clients, and is evaluated the same way (`tff_hgb.evaluation`), so results
tables line up. Names:

  fedavg            TFF's build_weighted_fed_avg, fused loss only (paper's FedAvg)
  fedavg_tk         the same on each client's training part T_k only (the
                    V_k HGB holds out is not trained on: the audit's control)
  fedavg_all_heads  TFF's build_weighted_fed_avg, fixed equal weights on all heads
  fedavg_capped     TFF's build_weighted_fed_avg, fused loss, no client's share
                    above max_client_share (default 2/K of the round's K)
  fedprox           TFF's build_weighted_fed_prox, fused loss, μ = fedprox_mu
  fednova           ours (FedNova, Wang et al. 2020), fused loss
  fedattn           ours (FedAttn, Ji et al. 2019), fused loss
  uni:<modality>    TFF's FedAvg on a one-modality model, clients that hold it
  hgb, hgb_paper, m_gb, c_gb   ours (tff_hgb.hgb), see ALGORITHM.md §4–§5b
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import aggregation
from tff_hgb import hgb
from tff_hgb import hgb_config
from tff_hgb import models
from tff_hgb.data import client_data as client_data_lib

HGB_MODES = ('hgb', 'hgb_paper', 'm_gb', 'c_gb')
TFF_FEDAVG_FAMILY = ('fedavg', 'fedavg_tk', 'fedavg_all_heads',
                     'fedavg_capped', 'fedprox')
OURS = ('fednova', 'fedattn')
NAMES = TFF_FEDAVG_FAMILY + OURS + HGB_MODES
UNI_PREFIX = 'uni:'
# fedavg_capped's cap without max_client_share: 2/K (ALGORITHM.md §5b; a 2/K
# cap on FedAvg's own weights matched C-GB's gain in a pilot of ours).
DEFAULT_CAP_OVER_UNIFORM = 2.0
# The local loop of every baseline. TFF's default (DATASET_REDUCE) has the TF
# runtime instantiate and Grappler-optimise the reduce function on every
# client call; the iterator loop computes the same batches in the same order
# (tests/algorithms_test.py) at 0.4x the round time here (docs/BENCHMARKS.md).
BASELINE_LOOP = tff.learning.LoopImplementation.DATASET_ITERATOR


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """Hyper-parameters shared by every algorithm, and each one's own."""

  client_learning_rate: float = 0.05
  server_learning_rate: float = 1.0
  client_momentum: float = 0.0
  local_epochs: int = 1
  batch_size: int = 16
  seed: int = 0
  model: models.ModelConfig = models.ModelConfig()
  fedprox_mu: float = 0.01
  fedattn_epsilon: float = 1.2
  # HGBHParams fields overriding the mode's defaults (e.g. warmup_fraction).
  hgb_overrides: tuple[tuple[str, Any], ...] = ()
  # ALGORITHM.md §5b client-level switches of `hgb` (the other modes are
  # literal: hgb_paper and c_gb weight clients by u_k, m_gb by examples):
  # λ in p_k ∝ (1−λ)·n_k/Σn + λ·u_k/Σu (1 = the paper's u_k weights).
  client_weight_mix: float = hgb.DEFAULT_CLIENT_WEIGHT_MIX
  # β > 0: the OGR weight becomes n_k·u_k^β (0 = off).
  client_weight_temper: float = 0.0
  # c: no client's share of a round's mean above c (`hgb`, `fedavg_capped`;
  # 0 = off for hgb, 2/K for fedavg_capped).
  max_client_share: float = 0.0
  # Where every HGB mode's clients measure OGR's validation losses: their own
  # validation split ('local') or the shared set ('shared', §5b; a control).
  validation_source: str = client_data_lib.LOCAL_VALIDATION
  # Every HGB mode: OGR's training losses on the whole T_k instead of its
  # first |V_k| examples (§5b; a control).
  full_probe: bool = False
  # §5: encoder/head m averaged only over clients holding m (all HGB modes).
  modality_aware: bool = False

  def __post_init__(self):
    if not 0.0 <= self.max_client_share <= 1.0:
      raise ValueError('max_client_share must lie in [0, 1] (0 = off), got '
                       f'{self.max_client_share}.')
    if self.validation_source not in client_data_lib.VALIDATION_SOURCES:
      raise ValueError(
          f'validation_source must be one of '
          f'{", ".join(client_data_lib.VALIDATION_SOURCES)}, got '
          f'{self.validation_source!r}.')


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


def is_known(name: str, modalities: Optional[list[str]] = None) -> bool:
  if name.startswith(UNI_PREFIX):
    return modalities is None or name[len(UNI_PREFIX):] in modalities
  return name in NAMES


def describe_names(modalities: Optional[list[str]] = None) -> str:
  unis = ([f'{UNI_PREFIX}{m}' for m in modalities] if modalities else
          [f'{UNI_PREFIX}<modality>'])
  return ', '.join(list(NAMES) + unis)


def _client_optimizer(config: AlgorithmConfig):
  if config.client_momentum:
    return tff.learning.optimizers.build_sgdm(
        learning_rate=config.client_learning_rate,
        momentum=config.client_momentum)
  return tff.learning.optimizers.build_sgdm(
      learning_rate=config.client_learning_rate)


def _server_optimizer(config: AlgorithmConfig):
  return tff.learning.optimizers.build_sgdm(
      learning_rate=config.server_learning_rate)


def _shuffle_seed(config: AlgorithmConfig, client_index: int, round_num: int):
  # A different, reproducible local order every round and client.
  return (config.seed * 1_000_003 + round_num * 7919 + client_index) % (2**31)


def _hgb_process(name: str, model_fn, config: AlgorithmConfig):
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


def build_algorithm(name: str, federated_data, config: AlgorithmConfig
                    ) -> Algorithm:
  """Builds registry entry `name` on `federated_data` (a FederatedData)."""
  modality_names = [m.name for m in federated_data.modalities]
  if not is_known(name, modality_names):
    raise ValueError(f'Unknown algorithm {name!r}; expected one of '
                     f'{describe_names(modality_names)}.')
  if name.startswith(UNI_PREFIX):
    federated_data = federated_data.uni_modal(name[len(UNI_PREFIX):])
  modalities = list(federated_data.modalities)
  num_classes = federated_data.num_classes
  index = {cid: i for i, cid in enumerate(federated_data.client_ids)}

  def keras_model_fn():
    return models.build_keras_model(modalities, num_classes,
                                    config=config.model)

  head_weights = (models.equal_head_weights(modality_names)
                  if name == 'fedavg_all_heads' else None)
  model_fn = models.build_model_fn(modalities, num_classes, config=config.model,
                                   head_weights=head_weights)

  if name in HGB_MODES:
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
                max_share_over_uniform=DEFAULT_CAP_OVER_UNIFORM))
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


def hgb_hparams_fields() -> list[str]:
  return [f.name for f in dataclasses.fields(hgb_config.HGBHParams)]
