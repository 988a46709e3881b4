"""Caches of a harness session: each data set loaded and partitioned once, each
algorithm built once per (data, configuration).

`DataCache` is made by the caller (a binary) and handed to every entry point,
so the data of a run is loaded once; `AlgorithmCache` reuses a built process
across learning rates, which it sets as hyper-parameters (`initial_state`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping

import numpy as np

from tff_hgb import algorithms
from tff_hgb import model_config
from tff_hgb.algorithms import registry
from tff_hgb.data import client_data as client_data_lib
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import datasets
from tff_hgb.data import partition as partition_lib
from tff_hgb.experiment import config as config_lib

DataError = dataset_lib.DataError
TEST_PREFIX = 'test'
VALIDATION_PREFIX = 'validation'
# Offsets of the seeds of the pool's hold-outs from the run's seed.
_TUNING_SEED_OFFSET = 7919
_SHARED_SEED_OFFSET = 104729


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ExperimentData:
  """The data of one run: pool, test (or tuning validation) set and clients."""

  train_pool: dataset_lib.MultiModalDataset
  evaluation_set: dataset_lib.MultiModalDataset
  evaluation_prefix: str
  partition: partition_lib.Partition
  federated_data: client_data_lib.FederatedData

  @property
  def modality_names(self) -> list[str]:
    return self.train_pool.modality_names

  def describe(self) -> str:
    """The partition's report (partition.txt), and the shared set if held out."""
    text = self.partition.report(self.train_pool)
    shared = self.federated_data.shared_validation_set
    if shared is not None:
      text += (f'\nshared validation set (server-held, a control): '
               f'{len(shared)} examples held out of the training pool')
    return text


class DataCache:
  """Loads each data set once and partitions each (pool, scheme, seed) once."""

  def __init__(self):
    self._loaded = {}
    self._partitioned = {}

  def load(self, config: config_lib.ExperimentConfig):
    spec = config.data
    key = (spec.dataset, spec.test_fraction, spec.data_seed)
    if key not in self._loaded:
      try:
        self._loaded[key] = datasets.load(
            spec.dataset, test_fraction=spec.test_fraction,
            seed=spec.data_seed)
      except DataError as e:
        raise config_lib.UsageError('dataset', str(e)) from None
    return self._loaded[key]

  def get(self, config: config_lib.ExperimentConfig, *, for_tuning: bool = False
          ) -> ExperimentData:
    """The run's data; for_tuning: pool minus a held-out validation part.

    With `shared_validation_fraction` > 0, that fraction of the (remaining)
    pool is held out before partitioning as the server-held shared validation
    set (`FederatedData(shared_validation=...)`); no client trains on it.
    """
    spec, run = config.data, config.run
    key = (spec.dataset, spec.test_fraction, spec.data_seed, spec.partition,
           spec.num_clients, spec.alpha, spec.val_fraction,
           spec.min_val_examples, spec.shared_validation_fraction, run.seed,
           for_tuning and run.tune_val_fraction)
    if key in self._partitioned:
      return self._partitioned[key]
    train_pool, test = self.load(config)
    evaluation_set, prefix = test, TEST_PREFIX
    if for_tuning:
      # Validation for tuning: held out of the TRAINING pool before
      # partitioning (stratified by label, seeded); the test set is unused.
      try:
        train_pool, evaluation_set = datasets.hold_out_test(
            train_pool, test_fraction=run.tune_val_fraction,
            seed=run.seed + _TUNING_SEED_OFFSET)
      except DataError as e:
        raise config_lib.UsageError('tune_val_fraction', str(e)) from None
      prefix = VALIDATION_PREFIX
    train_pool, shared = _hold_out_shared_validation(
        train_pool, spec.shared_validation_fraction, run.seed)
    try:
      partition = partition_lib.make_partition(
          train_pool, spec.partition, num_clients=spec.num_clients,
          alpha=spec.alpha, val_fraction=spec.val_fraction,
          min_val_examples=spec.min_val_examples, seed=run.seed)
      federated = client_data_lib.FederatedData(train_pool, partition,
                                                shared_validation=shared)
    except DataError as e:
      if shared is not None:  # The hold-out may have left the clients short.
        raise config_lib.UsageError(
            'shared_validation_fraction',
            f'{spec.shared_validation_fraction} leaves {len(train_pool)} '
            f'training examples to partition: {e}') from None
      raise config_lib.UsageError(
          'partition', f'{spec.partition} on {spec.dataset}: {e}') from None
    data = ExperimentData(train_pool, evaluation_set, prefix, partition,
                          federated)
    if run.clients_per_round > len(federated.client_ids):
      raise config_lib.UsageError(
          'clients_per_round', f'{run.clients_per_round} > the '
          f'{len(federated.client_ids)} clients of the {spec.partition} '
          'partition.')
    self._partitioned[key] = data
    return data


def _hold_out_shared_validation(train_pool: dataset_lib.MultiModalDataset,
                                fraction: float, seed: int):
  """(pool left to the clients, server-held shared validation set or None).

  A stratified, seeded hold-out of `fraction` of the pool (None for 0).
  """
  if not fraction:
    return train_pool, None
  pool, shared = datasets.hold_out_test(
      train_pool, test_fraction=fraction, seed=seed + _SHARED_SEED_OFFSET)
  if not len(shared):
    raise config_lib.UsageError(
        'shared_validation_fraction',
        f'{fraction} of the {len(train_pool)} training examples holds out '
        'no example per class; raise it.')
  # The clients' pool keeps its name (messages and partition.txt name it).
  return (dataclasses.replace(pool, name=train_pool.name),
          dataclasses.replace(shared,
                              name=f'{train_pool.name}-shared-validation'))


def check_algorithm(config: config_lib.ExperimentConfig,
                    data: ExperimentData) -> None:
  """uni:<m> and --encoder are checked once the data's modalities are known."""
  name = config.algorithm.name
  if not algorithms.is_known(name, data.modality_names):
    raise config_lib.UsageError(
        'algorithm', f'unknown algorithm {name!r} for {config.data.dataset}; '
        f'expected one of {algorithms.describe_names(data.modality_names)}.')
  try:
    model_config.check_encoders(config.algorithm.encoder,
                                data.train_pool.modalities)
  except ValueError as e:
    raise config_lib.UsageError('encoder', f'{config.data.dataset}: {e}'
                                ) from None


# ---------------------------------------------------------------------------
# Algorithms (built once per configuration; learning rates via hparams).
# ---------------------------------------------------------------------------


def _replace_learning_rates(hparams, client_lr: float, server_lr: float):
  """hparams with every client_work/**/learning_rate and finalizer one set.

  Returns None when the structure has no such entries (then the process must
  be built with the learning rates instead).
  """
  found = {'client': 0, 'server': 0}

  def visit(node, role):
    if isinstance(node, Mapping):
      out = collections.OrderedDict()
      for key, value in node.items():
        if key == 'learning_rate' and not isinstance(value, Mapping):
          found[role] += 1
          out[key] = np.asarray(
              client_lr if role == 'client' else server_lr,
              np.asarray(value).dtype)
        else:
          out[key] = visit(value, role)
      return out
    return node

  if not isinstance(hparams, Mapping):
    return None
  replaced = collections.OrderedDict()
  for key, value in hparams.items():
    if key == 'client_work':
      replaced[key] = visit(value, 'client')
    elif key == 'finalizer':
      replaced[key] = visit(value, 'server')
    else:
      replaced[key] = value
  if found['client'] != 1 or found['server'] != 1:
    return None
  return replaced


class AlgorithmCache:
  """Builds each algorithm's process once per `registry.process_key`.

  A process depends on the data only through its modalities and classes,
  and on the seed only through the model's initial weights (except where
  `registry.seed_only_initialises` says otherwise), so the tuning runs and
  the seeds of a method share one process: `initial_state` starts each from
  its own seed's weights. Learning rates are not part of the key either when
  the process exposes them as hyper-parameters (TFF's and our processes do):
  `initial_state` sets them with `process.set_hparams`.
  """

  def __init__(self, max_entries: int = 12):
    self._entries: collections.OrderedDict = collections.OrderedDict()
    self._max_entries = max_entries
    self.builds = 0

  def get(self, config: config_lib.ExperimentConfig, data: ExperimentData
          ) -> registry.Algorithm:
    name, base = config.algorithm.name, config.algorithm_config()
    key = registry.process_key(name, data.federated_data, base)
    any_rate = registry.process_key(
        name, data.federated_data,
        dataclasses.replace(base, client_learning_rate=0.0,
                            server_learning_rate=0.0))
    for k in (any_rate, key):
      if k in self._entries:
        self._entries.move_to_end(k)
        process, process_seed = self._entries[k]
        return registry.build_algorithm(name, data.federated_data, base,
                                        process=process,
                                        process_seed=process_seed)
    algorithm = registry.build_algorithm(name, data.federated_data, base)
    self.builds += 1
    settable = _replace_learning_rates(
        algorithm.process.get_hparams(algorithm.process.initialize()),
        base.client_learning_rate, base.server_learning_rate) is not None
    # A process without settable learning rates serves its own rates only.
    self._entries[any_rate if settable else key] = (algorithm.process,
                                                    algorithm.process_seed)
    while len(self._entries) > self._max_entries:
      self._entries.popitem(last=False)
    return algorithm


def process_affinity(config: config_lib.ExperimentConfig) -> tuple:
  """A hint of which runs can share a process (`jobs.Task.affinity`): the
  data set and the algorithm's settings but its learning rates."""
  rates = ('client_learning_rate', 'server_learning_rate')
  return (config.data.dataset,) + tuple(
      (field.name, getattr(config.algorithm, field.name))
      for field in dataclasses.fields(config.algorithm)
      if field.name not in rates)


def initial_state(algorithm: registry.Algorithm,
                  config: config_lib.ExperimentConfig):
  """process.initialize() with the configuration's learning rates set.

  A process whose hyper-parameters hold no learning rates was built with the
  configuration's (`AlgorithmCache.get`); its state is returned as it is.
  """
  process = algorithm.process
  state = registry.initialize(algorithm)
  hparams = _replace_learning_rates(process.get_hparams(state),
                                    config.algorithm.client_learning_rate,
                                    config.algorithm.server_learning_rate)
  if hparams is None:
    return state
  return process.set_hparams(state, hparams)
