"""Builds a registry entry (`tff_hgb.algorithms` names it) on federated data.

`build_algorithm(name, federated_data, config)` returns an `Algorithm`: the
`tff.learning.templates.LearningProcess` with the client data it takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

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
      `process.get_model_weights(state)`, for evaluation; its initial weights
      are those of the configuration's seed.
    process_seed: the model seed whose initial weights `process.initialize()`
      returns; when the process was built for another configuration's seed
      and reused, `initialize(algorithm)` replaces them with this one's.
  """

  name: str
  process: tff.learning.templates.LearningProcess
  client_data: Callable[[str, int], Any]
  client_ids: list[str]
  federated_data: Any
  keras_model_fn: Callable[[], tf.keras.Model]
  process_seed: int = 0
  model_seed: int = 0


# Registry entries whose client work is seeded (OGM-GE's noise).
_SEEDED_CLIENT_WORK = ('ogm', 'ogm_ge')


def seed_only_initialises(name: str,
                          config: algorithms.AlgorithmConfig) -> bool:
  """Whether `config.seed` reaches `name`'s process only as initial weights.

  Then one built process serves every seed (and every data set of the same
  modalities): `initialize` gives a seed's starting point, which
  is bit-identical to what a process built with that seed initialises to
  (tests/algorithm_cache_test.py). Not so when dropout layers or the client
  work draw seeded random numbers.
  """
  return name not in _SEEDED_CLIENT_WORK and not config.model.dropout


def process_key(name: str, federated_data,
                config: algorithms.AlgorithmConfig) -> tuple:
  """What `name`'s process depends on: the data's modalities and classes, the
  configuration (its seed only when not `seed_only_initialises`)."""
  if seed_only_initialises(name, config):
    config = dataclasses.replace(
        config, seed=0, model=dataclasses.replace(config.model, seed=0))
  return (name, tuple(federated_data.modalities), federated_data.num_classes,
          config)


def initialize(algorithm: Algorithm):
  """`algorithm.process.initialize()`, starting from its own seed's weights.

  A reused process (`build_algorithm(process=...)`) initialises to the
  weights of the seed it was built with; they are replaced by those of a
  Keras model built with this configuration's seed, which equal what a
  process built with that seed initialises to.
  """
  state = algorithm.process.initialize()
  if algorithm.process_seed == algorithm.model_seed:
    return state
  return algorithm.process.set_model_weights(
      state, tff.learning.models.ModelWeights.from_model(
          algorithm.keras_model_fn()))


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


def _build_process(name: str, modalities, num_classes: int,
                   config: algorithms.AlgorithmConfig
                   ) -> tff.learning.templates.LearningProcess:
  """The learning process of registry entry `name` (traces its computations)."""
  head_weights = (models.equal_head_weights([m.name for m in modalities])
                  if name == 'fedavg_all_heads' else None)
  model_fn = models.build_model_fn(modalities, num_classes, config=config.model,
                                   head_weights=head_weights,
                                   jit_compile=config.jit)
  if name in algorithms.HGB_MODES:
    return _hgb_process(name, model_fn, config)
  if name == 'fednova':
    from tff_hgb.algorithms import fednova  # pylint: disable=g-import-not-at-top
    return fednova.build_fednova_process(
        model_fn, client_optimizer_fn=_client_optimizer(config),
        server_optimizer_fn=_server_optimizer(config),
        client_momentum=config.client_momentum,
        loop_implementation=BASELINE_LOOP)
  if name == 'fedattn':
    from tff_hgb.algorithms import fedattn  # pylint: disable=g-import-not-at-top
    return fedattn.build_fedattn_process(
        model_fn, client_optimizer_fn=_client_optimizer(config),
        epsilon=config.fedattn_epsilon, loop_implementation=BASELINE_LOOP)
  if name in algorithms.BALANCING:
    return _balanced_process(name, model_fn, config)
  if name == 'fedprox':
    return tff.learning.algorithms.build_weighted_fed_prox(
        model_fn, proximal_strength=config.fedprox_mu,
        client_optimizer_fn=_client_optimizer(config),
        server_optimizer_fn=_server_optimizer(config),
        loop_implementation=BASELINE_LOOP)
  # fedavg, fedavg_tk, fedavg_all_heads, fedavg_capped, uni:<m>
  aggregator = None
  if name == 'fedavg_capped':
    aggregator = (
        aggregation.CappedMeanFactory(config.max_client_share)
        if config.max_client_share else aggregation.CappedMeanFactory(
            max_share_over_uniform=algorithms.DEFAULT_CAP_OVER_UNIFORM))
  return tff.learning.algorithms.build_weighted_fed_avg(
      model_fn, client_optimizer_fn=_client_optimizer(config),
      server_optimizer_fn=_server_optimizer(config),
      model_aggregator=aggregator, loop_implementation=BASELINE_LOOP)


def build_algorithm(name: str, federated_data,
                    config: algorithms.AlgorithmConfig, *,
                    process: Optional[tff.learning.templates.LearningProcess]
                    = None, process_seed: Optional[int] = None) -> Algorithm:
  """Builds registry entry `name` on `federated_data` (a FederatedData).

  `process`: an already built process of the same `process_key`, built with
  model seed `process_seed`, to use instead of building one (tracing a
  process costs ~1-2 s and its first round ~2 s more: much of a short run).
  """
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

  if process is None:
    process, process_seed = _build_process(name, modalities, num_classes,
                                           config), config.model.seed
  elif process_seed is None:
    raise ValueError('build_algorithm: a given process needs its '
                     'process_seed.')

  if name in algorithms.HGB_MODES:

    def client_data(cid, round_num):
      return federated_data.client_datasets(
          cid, batch_size=config.batch_size,
          shuffle_seed=_shuffle_seed(config, index[cid], round_num),
          validation=config.validation_source, full_probe=config.full_probe)
  else:

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
                   keras_model_fn=keras_model_fn, process_seed=process_seed,
                   model_seed=config.model.seed)
