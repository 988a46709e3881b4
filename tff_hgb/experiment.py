"""Experiments: a configuration, the federated training loop, tuning, comparisons.

All the logic of the binaries (`experiments/run_experiment.py`, `compare.py`,
`paper_tables.py`) lives here; they only parse flags into an `ExperimentConfig`
and call `run_experiment` / `run_comparison`. Every file goes through
`tff_hgb.results` (the one writer).

The TFF runtime is NOT started here: the caller installs it (the binaries with
`tff_hgb.runtime.set_local_context()`, the tests through tests/conftest.py).

Reproducibility and resume
--------------------------
A run is a pure function of its configuration: the test split is seeded by
`data_seed`, the partition, the model initialisation and the local shuffles by
`seed`, and the clients of round r are `sample_clients(ids, k, seed, r)` (no
global random state). Program state (the learning-process state and the round
number) is saved every `checkpoint_every` rounds and after the last round with
`tff.program.FileProgramStateManager`; `resume=True` reloads the newest state,
drops the metrics.csv rows after it and redoes those rounds, so a resumed run
ends exactly where an uninterrupted one does.

Tuning (`tune='field:v1,v2,...'`)
---------------------------------
Validation data for tuning is carved from the TRAINING pool, never the test set:
before partitioning, a stratified `tune_val_fraction` of the training pool
(seeded by `seed`) is held out; the rest is partitioned with the same scheme,
each candidate value is trained for `tune_rounds` rounds on those clients, and
the held-out part is evaluated at the last `TUNE_EVALUATIONS` rounds. The value
with the best mean validation fusion accuracy over those evaluations wins
(ties: the earlier value in the list), and the run (or every seed of a
comparison) then trains on the full training pool at that value. The test set
is not even loaded into the tuning runs' evaluation.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import algorithms
from tff_hgb import client_work
from tff_hgb import evaluation
from tff_hgb import models
from tff_hgb import results
from tff_hgb.data import client_data as client_data_lib
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import datasets
from tff_hgb.data import partition as partition_lib

DataError = dataset_lib.DataError

# Validation evaluations averaged to score one tuning candidate.
TUNE_EVALUATIONS = 3
# Program states kept on disk (the newest ones).
KEEP_STATES = 3
# Head whose accuracy is THE accuracy.
FUSION = models.FUSION
TEST_PREFIX = 'test'
# In a comparison: the uni-modal FedAvg of the best single modality.
BEST_UNIMODAL = 'uni:best'
VALIDATION_PREFIX = 'validation'

# Config fields that do not change what a run computes (ignored when checking
# that --resume continues the same run).
_NON_SEMANTIC_FIELDS = ('output_dir', 'resume', 'progress')



def _run_coroutine(coroutine):
  """Runs a TFF program-manager coroutine to completion.

  Not `asyncio.run`: that leaves the main thread without a current event loop,
  and TFF's own `tff.simulation.run_training_process` (which a user may call
  after us, in the same process) needs `asyncio.get_event_loop()` to work.
  """
  loop = asyncio.new_event_loop()
  try:
    return loop.run_until_complete(coroutine)
  finally:
    loop.close()


class UsageError(ValueError):
  """A bad flag or configuration; str() is '--<flag>: <what is wrong>'."""

  def __init__(self, flag: str, message: str):
    self.flag = flag
    super().__init__(f'--{flag}: {message}')


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run depends on; field names are the flag names.

  `hgb` holds (field, value) pairs of `client_work.HGBHParams` overriding the
  HGB mode's defaults (flags --hgb_<field>); `local_epochs` has its own field.
  `clients_per_round=0` means every client takes part in every round.
  """

  algorithm: str = 'hgb'
  dataset: str = datasets.DEFAULT_DATASET
  partition: str = partition_lib.MIXED_B
  alpha: float = partition_lib.DEFAULT_ALPHA
  num_clients: int = 10
  clients_per_round: int = 0
  rounds: int = 30
  local_epochs: int = 1
  batch_size: int = 16
  client_learning_rate: float = 0.05
  server_learning_rate: float = 1.0
  client_momentum: float = 0.0
  fedprox_mu: float = 0.01
  fedattn_epsilon: float = 1.2
  hgb: tuple[tuple[str, Any], ...] = ()
  # Other AlgorithmConfig fields (e.g. client_weight_mix), as (name, value).
  algorithm_options: tuple[tuple[str, Any], ...] = ()
  val_fraction: float = 0.1
  min_val_examples: int = 4
  test_fraction: float = datasets.DEFAULT_TEST_FRACTION
  data_seed: int = 0
  seed: int = 0
  target_accuracy: Optional[float] = 0.7
  eval_every: int = 1
  checkpoint_every: int = 5
  output_dir: Optional[str] = None
  resume: bool = False
  tune: str = ''
  tune_rounds: int = 0
  tune_val_fraction: float = 0.2
  progress: bool = True

  def to_dict(self) -> dict[str, Any]:
    values = dataclasses.asdict(self)
    values['hgb'] = {k: v for k, v in self.hgb}
    values['algorithm_options'] = {k: v for k, v in self.algorithm_options}
    return values

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> 'ExperimentConfig':
    values = dict(values)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if k in known}
    values['hgb'] = tuple(sorted((values.get('hgb') or {}).items()))
    values['algorithm_options'] = tuple(sorted(
        (values.get('algorithm_options') or {}).items()))
    return cls(**values)

  @property
  def effective_tune_rounds(self) -> int:
    return self.tune_rounds or self.rounds


# ---------------------------------------------------------------------------
# Validation of a configuration (before any heavy work).
# ---------------------------------------------------------------------------


def hgb_fields() -> list[str]:
  """HGBHParams fields settable as --hgb_<field> (local_epochs excluded)."""
  return [f for f in algorithms.hgb_hparams_fields() if f != 'local_epochs']


def extra_algorithm_fields() -> dict[str, Any]:
  """AlgorithmConfig fields without their own ExperimentConfig field (name →
  default), e.g. HGB's client_weight_mix; set as flags of the same name."""
  own = {f.name for f in dataclasses.fields(ExperimentConfig)}
  defaults = algorithms.AlgorithmConfig()
  return {f.name: getattr(defaults, f.name)
          for f in dataclasses.fields(algorithms.AlgorithmConfig)
          if f.name not in own and f.name not in ('model', 'hgb_overrides')}


def tunable_fields() -> dict[str, type]:
  """Fields --tune accepts: numeric AlgorithmConfig fields and hgb_<field>."""
  fields = {}
  for field in dataclasses.fields(algorithms.AlgorithmConfig):
    if field.name in ('seed', 'model', 'hgb_overrides'):
      continue
    default = getattr(algorithms.AlgorithmConfig(), field.name)
    fields[field.name] = type(default)
  defaults = client_work.HGBHParams()
  for name in hgb_fields():
    fields[f'hgb_{name}'] = type(getattr(defaults, name))
  # Numbers only (a grid of strings or booleans is not what --tune is for).
  return {k: v for k, v in fields.items() if v in (int, float)}


def parse_tune(spec: str) -> list[tuple[str, list[Any]]]:
  """'field:v1,v2[;field2:...]' → [(field, [values])] (a grid if several).

  Raises:
    UsageError('tune', ...) naming what is wrong.
  """
  spec = (spec or '').strip()
  if not spec:
    return []
  fields = tunable_fields()
  grid = []
  for part in spec.split(';'):
    part = part.strip()
    name, sep, values_text = part.partition(':')
    name = name.strip()
    if not sep or not name or not values_text.strip():
      raise UsageError('tune', f'expected field:v1,v2,... got {part!r}.')
    if name not in fields:
      raise UsageError('tune', f'unknown field {name!r}; tunable: '
                       f'{", ".join(sorted(fields))}.')
    if name in (g[0] for g in grid):
      raise UsageError('tune', f'field {name!r} given twice.')
    values = []
    for text in values_text.split(','):
      text = text.strip()
      try:
        value = fields[name](float(text)) if fields[name] is not int else int(
            text)
      except ValueError:
        raise UsageError('tune', f'{name}: {text!r} is not a '
                         f'{fields[name].__name__}.') from None
      if fields[name] is float and not math.isfinite(value):
        raise UsageError('tune', f'{name}: {text!r} is not finite.')
      values.append(value)
    if len(set(values)) != len(values):
      raise UsageError('tune', f'{name}: duplicate values.')
    grid.append((name, values))
  return grid


def tune_candidates(spec: str) -> list[dict[str, Any]]:
  grid = parse_tune(spec)
  if not grid:
    return []
  names = [g[0] for g in grid]
  return [dict(zip(names, combo))
          for combo in itertools.product(*[g[1] for g in grid])]


def with_values(config: ExperimentConfig, values: Mapping[str, Any]
                ) -> ExperimentConfig:
  """`config` with tuned values applied (hgb_<field> goes into config.hgb)."""
  plain = {}
  hgb = dict(config.hgb)
  options = dict(config.algorithm_options)
  extra = extra_algorithm_fields()
  for name, value in values.items():
    if name.startswith('hgb_') and name[4:] in hgb_fields():
      hgb[name[4:]] = value
    elif name in extra:
      options[name] = value
    else:
      plain[name] = value
  return dataclasses.replace(config, hgb=tuple(sorted(hgb.items())),
                             algorithm_options=tuple(sorted(options.items())),
                             **plain)


def _known_dataset(name: str) -> bool:
  names = datasets.dataset_names()
  if name in names:
    return True
  prefix, sep, path = name.partition(':')
  return bool(sep and path and f'{prefix}:<path>' in names)


def validate(config: ExperimentConfig, *, needs_output_dir: bool = True
             ) -> None:
  """Checks everything that can be checked without data; raises UsageError."""
  name = config.algorithm
  if not name or not algorithms.is_known(name):
    raise UsageError('algorithm', f'unknown algorithm {name!r}; expected one '
                     f'of {algorithms.describe_names()}.')
  if not config.dataset:
    raise UsageError('dataset', 'is empty.')
  if not _known_dataset(config.dataset):
    raise UsageError('dataset', f'unknown data set {config.dataset!r}; valid '
                     f'names: {", ".join(datasets.dataset_names())}.')
  if config.partition not in partition_lib.SCHEMES:
    raise UsageError('partition', f'unknown scheme {config.partition!r}; '
                     f'expected one of {", ".join(partition_lib.SCHEMES)}.')
  positive = ('rounds', 'local_epochs', 'batch_size', 'eval_every',
              'checkpoint_every')
  for field in positive:
    if getattr(config, field) < 1:
      raise UsageError(field, f'must be ≥ 1, got {getattr(config, field)}.')
  if config.num_clients < 1:
    raise UsageError('num_clients', f'must be ≥ 1, got {config.num_clients}.')
  if config.clients_per_round < 0:
    raise UsageError('clients_per_round', 'must be ≥ 0 (0 = all clients), '
                     f'got {config.clients_per_round}.')
  if (config.partition != partition_lib.NATURAL and
      config.clients_per_round > config.num_clients):
    raise UsageError('clients_per_round', f'{config.clients_per_round} > '
                     f'--num_clients={config.num_clients}.')
  for field in ('client_learning_rate', 'server_learning_rate'):
    value = getattr(config, field)
    if not (math.isfinite(value) and value > 0):
      raise UsageError(field, f'must be > 0, got {value}.')
  if not 0.0 <= config.client_momentum < 1.0:
    raise UsageError('client_momentum', 'must lie in [0, 1), got '
                     f'{config.client_momentum}.')
  if config.alpha is not None and not config.alpha > 0:
    raise UsageError('alpha', f'must be > 0, got {config.alpha}.')
  if not 0.0 < config.val_fraction < 1.0:
    raise UsageError('val_fraction', 'must lie in (0, 1), got '
                     f'{config.val_fraction}.')
  if config.min_val_examples < 1:
    raise UsageError('min_val_examples', 'must be ≥ 1, got '
                     f'{config.min_val_examples}.')
  if not 0.0 < config.test_fraction < 1.0:
    raise UsageError('test_fraction', 'must lie in (0, 1), got '
                     f'{config.test_fraction}.')
  if config.target_accuracy is not None and not (
      0.0 < config.target_accuracy <= 1.0):
    raise UsageError('target_accuracy', 'must lie in (0, 1], got '
                     f'{config.target_accuracy}.')
  if config.fedprox_mu < 0:
    raise UsageError('fedprox_mu', f'must be ≥ 0, got {config.fedprox_mu}.')
  if not config.fedattn_epsilon > 0:
    raise UsageError('fedattn_epsilon', 'must be > 0, got '
                     f'{config.fedattn_epsilon}.')
  extra = extra_algorithm_fields()
  for field, _ in config.algorithm_options:
    if field not in extra:
      raise UsageError(field, 'is not an algorithm hyper-parameter.')
  options = dict(config.algorithm_options)
  if 'client_weight_mix' in options and not (
      0.0 <= options['client_weight_mix'] <= 1.0):
    raise UsageError('client_weight_mix', 'must lie in [0, 1], got '
                     f'{options["client_weight_mix"]}.')
  if options.get('client_weight_temper', 0.0) < 0.0:
    raise UsageError('client_weight_temper', 'must be ≥ 0, got '
                     f'{options["client_weight_temper"]}.')
  try:
    algorithm_config(config)
  except (TypeError, ValueError) as e:
    flag = next((f for f, _ in config.algorithm_options if f in str(e)),
                'algorithm')
    raise UsageError(flag, str(e)) from None
  known_hgb = set(hgb_fields())
  for field, _ in config.hgb:
    if field not in known_hgb:
      raise UsageError(f'hgb_{field}', 'is not an HGB hyper-parameter.')
  try:
    client_work.HGBHParams(local_epochs=config.local_epochs, **dict(config.hgb))
  except (TypeError, ValueError) as e:
    flag = next((f'hgb_{f}' for f, _ in config.hgb if f in str(e)), 'hgb')
    raise UsageError(flag, str(e)) from None
  if config.tune_rounds < 0:
    raise UsageError('tune_rounds', f'must be ≥ 0, got {config.tune_rounds}.')
  if not 0.0 < config.tune_val_fraction < 1.0:
    raise UsageError('tune_val_fraction', 'must lie in (0, 1), got '
                     f'{config.tune_val_fraction}.')
  if config.tune and config.effective_tune_rounds < TUNE_EVALUATIONS:
    raise UsageError('tune_rounds', f'tuning needs ≥ {TUNE_EVALUATIONS} '
                     'rounds.')
  for values in tune_candidates(config.tune):
    try:
      tuned = with_values(config, values)
      validate(dataclasses.replace(tuned, tune=''), needs_output_dir=False)
    except UsageError as e:
      raise UsageError('tune', f'value {values} is invalid: {e}') from None
  if needs_output_dir and not config.output_dir:
    raise UsageError('output_dir', 'is required.')


def check_output_dir(output_dir: str, flags: Mapping[str, Any], *,
                     resume: bool,
                     ignore: Sequence[str] = _NON_SEMANTIC_FIELDS) -> None:
  """Refuses a directory holding another run (or, with resume, a different one).

  Args:
    output_dir: the run's directory.
    flags: what this run would write to flags.json.
    resume: whether --resume was given.
    ignore: keys that may differ between the stored and the current flags.

  Raises:
    UsageError naming --output_dir or --resume.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise UsageError('output_dir', f'{output_dir} is a file.')
  # The nearest existing ancestor must be a writable directory (a path under
  # a regular file, or in a read-only place, fails here, not mid-run).
  existing = os.path.abspath(output_dir)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UsageError('output_dir', f'cannot create {output_dir}: {existing} '
                     'is a file.')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UsageError('output_dir', f'{existing} is not writable.')
  markers = [n for n in (results.FLAGS_JSON, results.METRICS_CSV,
                         results.SUMMARY_JSON, results.STATE_DIR)
             if os.path.exists(os.path.join(output_dir, n))]
  if not markers:
    return
  if not resume:
    raise UsageError('output_dir', f'{output_dir} already holds a run '
                     f'({markers[0]}); pass --resume to continue it or '
                     'choose another directory.')
  path = os.path.join(output_dir, results.FLAGS_JSON)
  if not os.path.exists(path):
    return
  try:
    stored = results.read_json(path)
  except ValueError:
    raise UsageError('resume', f'{path} is unreadable.') from None
  current = results.clean_for_json(dict(flags))
  differ = sorted(k for k in set(stored) | set(current)
                  if k not in ignore and stored.get(k) != current.get(k))
  if differ:
    k = differ[0]
    raise UsageError('resume', f'{output_dir} holds a run with other settings '
                     f'({k}={stored.get(k)!r}, now {current.get(k)!r}); use '
                     'the same flags or another --output_dir.')


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


class DataCache:
  """Loads each data set once and partitions each (pool, scheme, seed) once."""

  def __init__(self):
    self._loaded = {}
    self._partitioned = {}

  def load(self, config: ExperimentConfig):
    key = (config.dataset, config.test_fraction, config.data_seed)
    if key not in self._loaded:
      try:
        self._loaded[key] = datasets.load(
            config.dataset, test_fraction=config.test_fraction,
            seed=config.data_seed)
      except DataError as e:
        raise UsageError('dataset', str(e)) from None
    return self._loaded[key]

  def get(self, config: ExperimentConfig, *, for_tuning: bool = False
          ) -> ExperimentData:
    """The run's data; for_tuning: pool minus a held-out validation part."""
    key = (config.dataset, config.test_fraction, config.data_seed,
           config.partition, config.num_clients, config.alpha,
           config.val_fraction, config.min_val_examples, config.seed,
           for_tuning and config.tune_val_fraction)
    if key in self._partitioned:
      return self._partitioned[key]
    train_pool, test = self.load(config)
    evaluation_set, prefix = test, TEST_PREFIX
    if for_tuning:
      # Validation for tuning: held out of the TRAINING pool before
      # partitioning (stratified by label, seeded); the test set is unused.
      try:
        train_pool, evaluation_set = datasets.hold_out_test(
            train_pool, test_fraction=config.tune_val_fraction,
            seed=config.seed + 7919)
      except DataError as e:
        raise UsageError('tune_val_fraction', str(e)) from None
      prefix = VALIDATION_PREFIX
    try:
      partition = partition_lib.make_partition(
          train_pool, config.partition, num_clients=config.num_clients,
          alpha=config.alpha, val_fraction=config.val_fraction,
          min_val_examples=config.min_val_examples, seed=config.seed)
      federated = client_data_lib.FederatedData(train_pool, partition)
    except DataError as e:
      raise UsageError('partition', f'{config.partition} on '
                       f'{config.dataset}: {e}') from None
    data = ExperimentData(train_pool, evaluation_set, prefix, partition,
                          federated)
    if config.clients_per_round > len(federated.client_ids):
      raise UsageError('clients_per_round', f'{config.clients_per_round} > '
                       f'the {len(federated.client_ids)} clients of the '
                       f'{config.partition} partition.')
    self._partitioned[key] = data
    return data


def check_algorithm(config: ExperimentConfig, data: ExperimentData) -> None:
  if not algorithms.is_known(config.algorithm, data.modality_names):
    raise UsageError('algorithm', f'unknown algorithm {config.algorithm!r} '
                     f'for {config.dataset}; expected one of '
                     f'{algorithms.describe_names(data.modality_names)}.')


# ---------------------------------------------------------------------------
# Algorithms (built once per configuration; learning rates via hparams).
# ---------------------------------------------------------------------------


def algorithm_config(config: ExperimentConfig) -> algorithms.AlgorithmConfig:
  return algorithms.AlgorithmConfig(
      client_learning_rate=config.client_learning_rate,
      server_learning_rate=config.server_learning_rate,
      client_momentum=config.client_momentum,
      local_epochs=config.local_epochs,
      batch_size=config.batch_size,
      seed=config.seed,
      model=models.ModelConfig(seed=config.seed),
      fedprox_mu=config.fedprox_mu,
      fedattn_epsilon=config.fedattn_epsilon,
      hgb_overrides=tuple(sorted(config.hgb)),
      **dict(config.algorithm_options))


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
  """Builds each algorithm once per (data, configuration).

  Learning rates are not part of the key when the process exposes them as
  hyper-parameters (TFF's and our processes do): `initial_state` sets them
  with `process.set_hparams`, so tuning a learning rate reuses one process.
  A process depends on the seed through the model initialisation and the
  data closures of the registry's `Algorithm`, so seeds still build their own.
  """

  def __init__(self, max_entries: int = 4):
    self._entries: collections.OrderedDict = collections.OrderedDict()
    self._max_entries = max_entries
    self.builds = 0

  def get(self, config: ExperimentConfig, data: ExperimentData
          ) -> algorithms.Algorithm:
    base = algorithm_config(config)
    key = (config.algorithm, id(data.federated_data),
           dataclasses.replace(base, client_learning_rate=0.0,
                               server_learning_rate=0.0))
    if key in self._entries:
      self._entries.move_to_end(key)
      return self._entries[key][0]
    algorithm = algorithms.build_algorithm(config.algorithm,
                                           data.federated_data, base)
    self.builds += 1
    settable = _replace_learning_rates(
        algorithm.process.get_hparams(algorithm.process.initialize()),
        base.client_learning_rate, base.server_learning_rate) is not None
    if settable:
      self._entries[key] = (algorithm, data)
      while len(self._entries) > self._max_entries:
        self._entries.popitem(last=False)
    else:
      algorithm.learning_rates_fixed = (base.client_learning_rate,
                                        base.server_learning_rate)
    return algorithm


def initial_state(algorithm: algorithms.Algorithm, config: ExperimentConfig):
  """process.initialize() with the configuration's learning rates set."""
  process = algorithm.process
  state = process.initialize()
  fixed = getattr(algorithm, 'learning_rates_fixed', None)
  if fixed is not None:
    return state
  hparams = _replace_learning_rates(process.get_hparams(state),
                                    config.client_learning_rate,
                                    config.server_learning_rate)
  return process.set_hparams(state, hparams)


# ---------------------------------------------------------------------------
# The round loop.
# ---------------------------------------------------------------------------


def sample_clients(client_ids: Sequence[str], clients_per_round: int,
                   seed: int, round_num: int) -> list[str]:
  """The clients of round `round_num`: a pure function of (seed, round).

  clients_per_round ≤ 0 or ≥ the number of clients gives all of them.
  """
  ids = list(client_ids)
  if clients_per_round <= 0 or clients_per_round >= len(ids):
    return ids
  rng = np.random.default_rng([int(seed), int(round_num), 0x5A17])
  chosen = np.sort(rng.choice(len(ids), size=clients_per_round, replace=False))
  return [ids[i] for i in chosen]


def flatten_process_metrics(metrics) -> dict[str, float]:
  """A process's nested round metrics → flat metrics.csv columns.

  client_work/train/<head>/accuracy → train/<head>/accuracy;
  client_work/hgb/z/<head> → z/<head> (and the other HGB metrics:
  client_weight/effective_clients, delta_g/mean, val/<head>/...);
  other client_work/<x> → <x>; aggregator/... and finalizer/... are kept.
  """
  flat = {}
  for key, value in results.flatten_metrics(metrics).items():
    if key.startswith('client_work/'):
      key = key[len('client_work/'):]
      if key.startswith('hgb/'):
        key = key[len('hgb/'):]
    flat[key] = value
  return flat


class _Progress:
  """A tqdm bar (stderr) showing the round and key metrics."""

  def __init__(self, enabled: bool, total: int, initial: int, desc: str):
    self._bar = None
    if enabled:
      from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc,
                            unit='round', file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5, leave=True)

  def update(self, postfix: Mapping[str, str]):
    if self._bar is not None:
      self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(1)

  def close(self):
    if self._bar is not None:
      self._bar.close()


def _state_structure(algorithm):
  return collections.OrderedDict(state=algorithm.process.initialize(),
                                 round_num=0)


def _load_state(manager, algorithm):
  """(state, round) of the newest readable checkpoint, or (None, 0)."""
  versions = _run_coroutine(manager.get_versions()) or []
  structure = _state_structure(algorithm)
  for version in sorted(versions, reverse=True):
    try:
      loaded = _run_coroutine(manager.load(version, structure))
    except Exception:  # pylint: disable=broad-except
      continue  # A damaged state: fall back to the one before.
    state = tf.nest.pack_sequence_as(structure['state'],
                                     tf.nest.flatten(loaded['state']))
    return state, int(loaded['round_num'])
  return None, 0


def _remove_states_after(state_dir: str, round_num: int) -> None:
  """Drops saved states newer than `round_num` (and temporary leftovers)."""
  if not os.path.isdir(state_dir):
    return
  for name in os.listdir(state_dir):
    match = re.fullmatch(r'program_state_(\d+)(_temp\d+)?', name)
    if match and (match.group(2) or int(match.group(1)) > round_num):
      shutil.rmtree(os.path.join(state_dir, name), ignore_errors=True)


def train(config: ExperimentConfig, data: ExperimentData,
          algorithm: algorithms.Algorithm, *,
          writer: Optional[results.RunWriter] = None,
          eval_rounds: Optional[Callable[[int], bool]] = None,
          desc: str = '') -> tuple[Any, list[dict[str, Any]]]:
  """Runs the rounds of one configuration; returns (final state, rows).

  Args:
    config: the run's configuration (rounds, sampling, seeds, ...).
    data: its data; `data.evaluation_set` is evaluated as
      '<data.evaluation_prefix>/<head>/accuracy|loss'.
    algorithm: a built algorithm for `data.federated_data`.
    writer: writes metrics.csv/TensorBoard and holds state/ (checkpoints) when
      given; with `config.resume` the newest checkpoint in it is continued.
    eval_rounds: round → whether to evaluate; default every
      `config.eval_every` rounds and the last round.
    desc: progress-bar label.
  """
  process = algorithm.process
  # Keras' global state (layer names, graphs) grows with every model a long
  # comparison builds; the models of earlier runs are not used any more.
  tf.keras.backend.clear_session()
  if eval_rounds is None:
    eval_rounds = lambda r: r % config.eval_every == 0 or r == config.rounds
  state, start = None, 0
  manager = None
  if writer is not None:
    state_dir = writer.path(results.STATE_DIR)
    manager = tff.program.FileProgramStateManager(
        state_dir, keep_total=KEEP_STATES, keep_first=False)
    if config.resume:
      state, start = _load_state(manager, algorithm)
    _remove_states_after(state_dir, start)
    writer.truncate(start)
  if state is None:
    state = initial_state(algorithm, config)
  rows = list(writer.rows) if writer is not None else []
  keras_model = algorithm.keras_model_fn()
  progress = _Progress(config.progress, config.rounds, start, desc)
  best = max((r.get(f'{data.evaluation_prefix}/{FUSION}/accuracy') or 0.0
              for r in rows), default=0.0)
  try:
    for round_num in range(start + 1, config.rounds + 1):
      clients = sample_clients(algorithm.client_ids, config.clients_per_round,
                               config.seed, round_num)
      round_data = [algorithm.client_data(c, round_num) for c in clients]
      started = time.perf_counter()
      output = process.next(state, round_data)
      seconds = time.perf_counter() - started
      state = output.state
      row = {results.ROUND: round_num, results.SECONDS: seconds,
             'clients': len(clients)}
      row.update(flatten_process_metrics(output.metrics))
      postfix = collections.OrderedDict()
      if eval_rounds(round_num):
        started = time.perf_counter()
        evaluated = evaluation.evaluate(keras_model,
                                        process.get_model_weights(state),
                                        data.evaluation_set)
        row['eval_seconds'] = time.perf_counter() - started
        for key, value in evaluated.items():
          row[f'{data.evaluation_prefix}/{key}'] = float(value)
        accuracy = row[f'{data.evaluation_prefix}/{FUSION}/accuracy']
        if math.isfinite(accuracy):
          best = max(best, accuracy)
          postfix[data.evaluation_prefix[:4]] = f'{accuracy:.3f}'
      postfix['best'] = f'{best:.3f}'
      train_loss = row.get(f'train/{FUSION}/loss')
      if train_loss is not None:
        postfix['loss'] = f'{train_loss:.3f}'
      rows.append(row)
      if writer is not None:
        writer.append(row)
        if (round_num % config.checkpoint_every == 0 or
            round_num == config.rounds):
          _run_coroutine(manager.save(
              collections.OrderedDict(state=state, round_num=round_num),
              round_num))
      progress.update(postfix)
  finally:
    progress.close()
  return state, rows


def missing_modality_accuracy(algorithm: algorithms.Algorithm, state,
                              test: dataset_lib.MultiModalDataset
                              ) -> dict[str, float]:
  """Test fusion accuracy with each modality dropped in turn (≥ 2 modalities)."""
  names = [m.name for m in algorithm.federated_data.modalities]
  if len(names) < 2:
    return {}
  keras_model = algorithm.keras_model_fn()
  weights = algorithm.process.get_model_weights(state)
  return {m: float(evaluation.evaluate(keras_model, weights, test,
                                       drop_modality=m)[f'{FUSION}/accuracy'])
          for m in names}


# ---------------------------------------------------------------------------
# Tuning.
# ---------------------------------------------------------------------------


def tune(config: ExperimentConfig, *, tuning_path: Optional[str] = None,
         data_cache: Optional[DataCache] = None,
         algorithm_cache: Optional[AlgorithmCache] = None,
         resume: bool = False) -> dict[str, Any]:
  """Tries every value of config.tune on training-pool validation data.

  Returns:
    The tuning record (also written to `tuning_path`): 'chosen' (field →
    value), 'candidates' (values, score, per-round validation accuracy) and a
    description of the validation data. Finished candidates found in an
    existing record are reused when `resume`.
  """
  data_cache = data_cache or DataCache()
  algorithm_cache = algorithm_cache or AlgorithmCache()
  candidates = tune_candidates(config.tune)
  rounds = config.effective_tune_rounds
  record = None
  if resume and tuning_path and os.path.exists(tuning_path):
    record = results.read_json(tuning_path)
    if record.get('rounds') != rounds or record.get('seed') != config.seed:
      record = None
    elif record.get('tune') != config.tune:
      # A changed grid (e.g. widened because the best value sat on an edge)
      # keeps the finished values it still contains.
      wanted = {tuple(sorted(v.items())) for v in candidates}
      record['candidates'] = [
          c for c in record['candidates']
          if tuple(sorted(c['values'].items())) in wanted]
      record['tune'] = config.tune
  base = dataclasses.replace(config, tune='', resume=False, rounds=rounds,
                             output_dir=None)
  data = data_cache.get(base, for_tuning=True)
  if record is None:
    record = {
        'algorithm': config.algorithm,
        'tune': config.tune,
        'rounds': rounds,
        'seed': config.seed,
        'validation': {
            'source': 'held out of the training pool before partitioning '
                      '(stratified by label); the test set is not used',
            'fraction_of_training_pool': config.tune_val_fraction,
            'examples': len(data.evaluation_set),
            'training_examples': len(data.train_pool),
            'score': f'mean validation fusion accuracy over the last '
                     f'{TUNE_EVALUATIONS} rounds',
        },
        'candidates': [],
        'chosen': None,
    }
  done = {tuple(sorted(c['values'].items())): c for c in record['candidates']}
  last = set(range(rounds - TUNE_EVALUATIONS + 1, rounds + 1))
  for values in candidates:
    key = tuple(sorted(values.items()))
    if key in done:
      continue
    trial = with_values(base, values)
    algorithm = algorithm_cache.get(trial, data)
    label = ','.join(f'{k}={v:g}' for k, v in values.items())
    _, rows = train(trial, data, algorithm, eval_rounds=lambda r: r in last,
                    desc=f'tune {config.algorithm} {label}')
    _, accuracy = results.accuracy_curve(
        rows, f'{VALIDATION_PREFIX}/{FUSION}/accuracy')
    score = float(np.mean(accuracy)) if accuracy else float('nan')
    entry = {'values': values, 'score': score,
             'validation_accuracy': accuracy}
    record['candidates'].append(entry)
    done[key] = entry
    if tuning_path:
      results.atomic_write_json(tuning_path, record)
  ordered = [done[tuple(sorted(v.items()))] for v in candidates]
  scores = [c['score'] if c['score'] is not None and math.isfinite(c['score'])
            else -1.0 for c in ordered]
  record['chosen'] = ordered[int(np.argmax(scores))]['values']
  if tuning_path:
    results.atomic_write_json(tuning_path, record)
  return record


# ---------------------------------------------------------------------------
# One run.
# ---------------------------------------------------------------------------


def run_is_complete(output_dir: str, config: ExperimentConfig) -> bool:
  path = os.path.join(output_dir, results.SUMMARY_JSON)
  if not os.path.exists(path):
    return False
  try:
    summary = results.read_json(path)
  except ValueError:
    return False
  return summary.get('rounds_completed') == config.rounds


def run_experiment(config: ExperimentConfig, *,
                   data_cache: Optional[DataCache] = None,
                   algorithm_cache: Optional[AlgorithmCache] = None,
                   tuned: Optional[Mapping[str, Any]] = None,
                   tuning_record: Optional[Mapping[str, Any]] = None,
                   skip_complete: bool = False) -> dict[str, Any]:
  """One configuration end to end; writes config.output_dir; returns summary.

  Args:
    config: the run (config.tune: tune first, then train at the best value).
    data_cache, algorithm_cache: shared across the runs of a comparison.
    tuned: values chosen by an earlier tuning (a comparison tunes once per
      algorithm); applied to config and recorded in the summary.
    tuning_record: that tuning's record, copied to this run's tuning.json.
    skip_complete: with config.resume, return the stored summary of a run
      that already finished instead of re-evaluating it.

  Raises:
    UsageError: bad configuration or data (one line, names the flag).
  """
  validate(config)
  flags = config.to_dict()
  check_output_dir(config.output_dir, flags, resume=config.resume)
  if skip_complete and config.resume and run_is_complete(config.output_dir,
                                                         config):
    return results.read_json(os.path.join(config.output_dir,
                                          results.SUMMARY_JSON))
  data_cache = data_cache or DataCache()
  algorithm_cache = algorithm_cache or AlgorithmCache()
  data = data_cache.get(config)
  check_algorithm(config, data)
  writer = results.RunWriter(config.output_dir)
  try:
    writer.write_json(results.FLAGS_JSON, flags)
    writer.write_text(results.PARTITION_TXT,
                      data.partition.report(data.train_pool) + '\n')
    writer.write_text(results.PARTITION_JSON, data.partition.to_json())
    if config.tune and tuned is None:
      tuning_record = tune(config,
                           tuning_path=writer.path(results.TUNING_JSON),
                           data_cache=data_cache,
                           algorithm_cache=algorithm_cache,
                           resume=config.resume)
      tuned = tuning_record['chosen']
    elif tuning_record is not None:
      writer.write_json(results.TUNING_JSON, tuning_record)
    run_config = with_values(config, tuned or {})
    algorithm = algorithm_cache.get(run_config, data)
    state, rows = train(run_config, data, algorithm, writer=writer,
                        desc=f'{config.algorithm} seed {config.seed}')
    summary = {
        'algorithm': config.algorithm,
        'dataset': config.dataset,
        'partition': config.partition,
        'seed': config.seed,
        'num_clients': len(algorithm.client_ids),
        'target_accuracy': config.target_accuracy,
    }
    summary.update(results.summarize_rows(
        rows, target_accuracy=config.target_accuracy))
    if rows and results.TEST_FUSION_ACCURACY in rows[-1]:
      summary['final_head_accuracy'] = {
          k.split('/')[1]: v for k, v in rows[-1].items()
          if k.startswith(f'{TEST_PREFIX}/') and k.endswith('/accuracy')}
    summary['missing_modality_accuracy'] = missing_modality_accuracy(
        algorithm, state, data.evaluation_set)
    summary['tuned'] = dict(tuned or {})
    summary['learning_rates'] = {
        'client': run_config.client_learning_rate,
        'server': run_config.server_learning_rate}
    writer.write_json(results.SUMMARY_JSON, summary)
  finally:
    writer.close()
  return summary


def result_line(summary: Mapping[str, Any], output_dir: str = '') -> str:
  """The one-line result a binary prints at the end."""

  def pct(v):
    return 'n/a' if v is None else f'{100 * v:.2f}%'

  target = summary.get('target_accuracy')
  reached = summary.get('rounds_to_target')
  target_text = ('' if target is None else
                 f', target {100 * target:.0f}% ' +
                 (f'at round {reached}' if reached else 'not reached'))
  spr = summary.get('seconds_per_round_median')
  text = (f'{summary["algorithm"]} on {summary["dataset"]}/'
          f'{summary["partition"]} seed {summary["seed"]}: final '
          f'{pct(summary.get("final_accuracy"))}, best '
          f'{pct(summary.get("best_accuracy"))} after '
          f'{summary.get("rounds_completed")} rounds{target_text}')
  if spr is not None:
    text += f', {spr:.2f} s/round'
  if summary.get('tuned'):
    text += ' (tuned ' + ', '.join(f'{k}={v:g}' for k, v in
                                   summary['tuned'].items()) + ')'
  if output_dir:
    text += f' → {output_dir}'
  return text


# ---------------------------------------------------------------------------
# Comparisons (algorithms × seeds), with a centralized reference.
# ---------------------------------------------------------------------------

HGB_VARIANTS = algorithms.HGB_MODES

# Presets of experiments/compare.py --config (flag name → value). Flags given
# on the command line win.
PRESETS = {
    # `make run`: htad Mixed-B (the paper's Table II setting), every baseline,
    # the best uni-modal model and HGB, with the client learning rate tuned per
    # algorithm on training-pool validation data. Measured on 2 cores shared
    # with other jobs (load 3-7): 13.4 min wall, 14 CPU-minutes, 1.1 GB peak
    # RSS, 20 process builds (5 algorithms x (1 for tuning + 3 seeds)); the
    # budget is ~20 min. The grid is wide because 0.02-0.4 put every
    # baseline's optimum on its upper edge.
    # uni:best: the modality that is best on its own, picked by a quick
    # centralized check on training data (`best_unimodal`); on htad audio and
    # accel are within ~2 points of each other centrally, so it is measured
    # rather than fixed.
    'default': {
        'dataset': 'htad',
        'partition': 'mixed_b',
        'algorithms': ['fedavg', 'fedattn', 'fednova', BEST_UNIMODAL, 'hgb'],
        'centralized': True,
        'seeds': '3',
        'num_clients': 10,
        'clients_per_round': 0,
        'rounds': 40,
        'local_epochs': 1,
        'batch_size': 16,
        'eval_every': 1,
        'checkpoint_every': 10,
        'target_accuracy': 0.7,
        'tune': 'client_learning_rate:0.1,0.2,0.4,0.8,1.6',
        'output_dir': 'results/default',
    },
}


def best_unimodal(config: ExperimentConfig, data_cache: DataCache, *,
                  epochs: int = 10, path: Optional[str] = None
                  ) -> tuple[str, dict[str, float]]:
  """'uni:<m>' for the modality that is best on its own, chosen centrally.

  A quick centralized check on training data only: each modality's model is
  trained for `epochs` epochs on 80% of the training pool and scored on the
  other 20% (stratified, seeded); the test set is not used. The choice is
  stored in `path` (JSON) and reused from there.
  """
  if path and os.path.exists(path):
    record = results.read_json(path)
    return record['algorithm'], record['validation_accuracy']
  from tff_hgb import centralized  # pylint: disable=g-import-not-at-top
  train_pool, _ = data_cache.load(config)
  fit, holdout = datasets.hold_out_test(train_pool, test_fraction=0.2,
                                        seed=config.data_seed + 104729)
  scores = {}
  for name in train_pool.modality_names:
    outcome = centralized.train_centralized(
        fit.with_modalities([name]), holdout.with_modalities([name]),
        model_config=models.ModelConfig(seed=config.data_seed),
        epochs=epochs, batch_size=config.batch_size,
        learning_rate=config.client_learning_rate, seed=config.data_seed,
        eval_every=epochs)
    scores[name] = float(outcome.final_accuracy)
  best = max(scores, key=lambda m: (scores[m], -list(scores).index(m)))
  choice = f'{algorithms.UNI_PREFIX}{best}'
  if path:
    results.atomic_write_json(path, {
        'algorithm': choice, 'validation_accuracy': scores,
        'how': f'centralized, {epochs} epochs on 80% of the training pool, '
               'accuracy on the other 20% (the test set is not used)'})
  return choice, scores


def run_slug(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]', '_', name)


def is_baseline(name: str) -> bool:
  return name not in HGB_VARIANTS


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
  """algorithms × seeds of one base configuration (compare's flags)."""

  base: ExperimentConfig
  algorithms: tuple[str, ...]
  seeds: tuple[int, ...]
  centralized: bool = False
  title: str = ''

  def to_dict(self) -> dict[str, Any]:
    values = self.base.to_dict()
    values.update(algorithms=list(self.algorithms), seeds=list(self.seeds),
                  centralized=self.centralized)
    values.pop('algorithm')
    return values


def validate_comparison(comparison: ComparisonConfig) -> None:
  if not comparison.algorithms:
    raise UsageError('algorithms', 'give at least one algorithm.')
  if len(set(comparison.algorithms)) != len(comparison.algorithms):
    raise UsageError('algorithms', 'an algorithm is listed twice.')
  for name in comparison.algorithms:
    if name == BEST_UNIMODAL:
      continue
    if not algorithms.is_known(name):
      raise UsageError('algorithms', f'unknown algorithm {name!r}; expected '
                       f'one of {algorithms.describe_names()}.')
  if not comparison.seeds:
    raise UsageError('seeds', 'give at least one seed.')
  validate(dataclasses.replace(comparison.base, algorithm='fedavg'))


def _centralized_run(centralized, train_pool, test, config, seed,
                     learning_rate, epochs):
  """One centralized training; the summary dict stored per seed."""
  started = time.perf_counter()
  outcome = centralized.train_centralized(
      train_pool, test, model_config=models.ModelConfig(seed=seed),
      epochs=epochs, batch_size=config.batch_size,
      learning_rate=learning_rate, seed=seed, eval_every=config.eval_every)
  # CentralizedResult (a dataclass); a dict is accepted too.
  get = (outcome.get if isinstance(outcome, Mapping) else
         lambda k, d=None: getattr(outcome, k, d))
  history = list(get('history') or [])
  curve = [(int(h['epoch']), float(h[f'test/{FUSION}/accuracy']))
           for h in history if f'test/{FUSION}/accuracy' in h]
  validation = [float(h[f'val/{FUSION}/accuracy']) for h in history
                if f'val/{FUSION}/accuracy' in h]
  epochs_to_target = next((e for e, a in curve
                           if config.target_accuracy is not None and
                           a >= config.target_accuracy), None)
  return {'algorithm': 'centralized', 'seed': seed,
          'modalities': train_pool.modality_names,
          'epochs': epochs,
          'learning_rate': learning_rate,
          'final_accuracy': float(get('final_accuracy')),
          'best_accuracy': float(get('best_accuracy')),
          'epochs_to_target': epochs_to_target,
          # Selection score: mean validation fusion accuracy of the last
          # evaluations (validation = tff_hgb.centralized's split of the
          # training pool).
          'validation_score': (float(np.mean(validation[-TUNE_EVALUATIONS:]))
                               if validation else None),
          'seconds': time.perf_counter() - started,
          'curve': curve}


def centralized_reference(config: ExperimentConfig, seeds: Sequence[int], *,
                          output_dir: str, data_cache: DataCache,
                          modalities: Optional[Sequence[str]] = None,
                          resume: bool = True,
                          learning_rates: Sequence[float] = (),
                          log: Callable[[str], None] = print
                          ) -> Optional[dict[str, Any]]:
  """The same model trained centrally with the fused loss, one run per seed.

  Trains on the whole training pool (every modality present unless
  `modalities` restricts it) for rounds × local_epochs epochs with plain SGD
  and reports test accuracy (tff_hgb.centralized). With several
  `learning_rates`, the first seed is trained at each and the one with the
  best validation accuracy (tff_hgb.centralized's validation split of the
  TRAINING pool, never the test set) is used for every seed: a learning rate
  tuned for one local epoch of FL is no choice for tens of central epochs.
  Per-seed summaries are stored in output_dir/seed_<s>/summary.json (and the
  choice in output_dir/tuning.json) and reused when `resume`.
  """
  try:
    from tff_hgb import centralized  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  train_pool, test = data_cache.load(config)
  if modalities:
    train_pool = train_pool.with_modalities(list(modalities))
    test = test.with_modalities(list(modalities))
  epochs = config.rounds * config.local_epochs
  learning_rates = list(learning_rates) or [config.client_learning_rate]
  tuning_path = os.path.join(output_dir, results.TUNING_JSON)
  chosen = learning_rates[0]
  reusable = {}
  if len(learning_rates) > 1:
    record = (results.read_json(tuning_path)
              if resume and os.path.exists(tuning_path) else None)
    if record and record.get('learning_rates') == learning_rates and (
        record.get('seed') == seeds[0] and record.get('epochs') == epochs):
      chosen = record['chosen']
    else:
      trials = {}
      for rate in learning_rates:
        trials[rate] = _centralized_run(centralized, train_pool, test,
                                        config, seeds[0], rate, epochs)
      scores = {r: (t['validation_score'] if t['validation_score'] is not None
                    else -1.0) for r, t in trials.items()}
      chosen = max(learning_rates, key=lambda r: scores[r])
      reusable[seeds[0]] = trials[chosen]
      results.atomic_write_json(tuning_path, {
          'learning_rates': learning_rates, 'seed': seeds[0],
          'epochs': epochs, 'chosen': chosen,
          'validation_score': {str(r): scores[r] for r in learning_rates},
          'validation': 'tff_hgb.centralized validation split of the '
                        'training pool; the test set is not used'})
    log(f'centralized: learning rate {chosen:g} (validation)')
  summaries = []
  for seed in seeds:
    path = os.path.join(output_dir, f'seed_{seed}', results.SUMMARY_JSON)
    if resume and os.path.exists(path):
      stored = results.read_json(path)
      if stored.get('learning_rate') == chosen and stored.get(
          'epochs') == epochs:
        summaries.append(stored)
        continue
    summary = reusable.get(seed) or _centralized_run(
        centralized, train_pool, test, config, seed, chosen, epochs)
    results.atomic_write_json(path, summary)
    summaries.append(summary)
  finals = [s['final_accuracy'] for s in summaries]
  bests = [s['best_accuracy'] for s in summaries]
  reached = [s['epochs_to_target'] for s in summaries
             if s.get('epochs_to_target') is not None]
  return {'seeds': len(summaries),
          'final_accuracy_mean': float(np.mean(finals)),
          'final_accuracy_std': float(np.std(finals)),
          'best_accuracy_mean': float(np.mean(bests)),
          'best_accuracy_std': float(np.std(bests)),
          'epochs_to_target_mean': (float(np.mean(reached)) if reached
                                    else None),
          'epochs': epochs,
          'learning_rate': chosen,
          'modalities': train_pool.modality_names}


def _client_learning_rate_grid(config: ExperimentConfig) -> list[float]:
  """The client learning rates --tune tries ([] when it tunes none)."""
  for name, values in parse_tune(config.tune):
    if name == 'client_learning_rate':
      return list(values)
  return []


def run_comparison(comparison: ComparisonConfig, *, output_dir: str,
                   resume: bool = False,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs algorithms × seeds; writes comparison.md/.png and summary.json.

  Layout: output_dir/<algorithm>/seed_<s>/ (a full run directory each),
  output_dir/<algorithm>/tuning.json (tuned once per algorithm, on the first
  seed, with training-pool validation data), output_dir/centralized/.
  With `resume`, finished runs are reused and unfinished ones continue from
  their last checkpoint, so an interrupted comparison can simply be rerun.

  Returns:
    The comparison summary (also output_dir/summary.json).
  """
  validate_comparison(comparison)
  base = comparison.base
  flags = comparison.to_dict()
  check_output_dir(output_dir, flags, resume=resume)
  os.makedirs(output_dir, exist_ok=True)
  results.atomic_write_json(os.path.join(output_dir, results.FLAGS_JSON), flags)
  data_cache = DataCache()
  algorithm_cache = AlgorithmCache()
  started = time.perf_counter()
  summaries: dict[str, list] = collections.OrderedDict()
  curves: dict[str, list] = collections.OrderedDict()
  tuned_values: dict[str, Any] = {}
  names = list(comparison.algorithms)
  if BEST_UNIMODAL in names:
    choice, scores = best_unimodal(
        base, data_cache, path=os.path.join(output_dir, 'best_unimodal.json'))
    log(f'{BEST_UNIMODAL} → {choice} (held-out training-pool accuracy: ' +
        ', '.join(f'{m} {v:.3f}' for m, v in scores.items()) + ')')
    names = [choice if n == BEST_UNIMODAL else n for n in names]
  for name in names:
    algorithm_dir = os.path.join(output_dir, run_slug(name))
    config = dataclasses.replace(base, algorithm=name,
                                 seed=comparison.seeds[0])
    check_algorithm(config, data_cache.get(config))
    tuned, record = None, None
    if base.tune:
      record = tune(config,
                    tuning_path=os.path.join(algorithm_dir,
                                             results.TUNING_JSON),
                    data_cache=data_cache, algorithm_cache=algorithm_cache,
                    resume=resume)
      tuned = record['chosen']
      tuned_values[name] = tuned
      log(f'{name}: tuned {tuned} (validation scores ' + ', '.join(
          f'{c["values"]}: {c["score"]:.3f}' for c in record['candidates']) +
          ')')
    summaries[name] = []
    curves[name] = []
    for seed in comparison.seeds:
      run_dir = os.path.join(algorithm_dir, f'seed_{seed}')
      run_config = dataclasses.replace(config, seed=seed, output_dir=run_dir,
                                       resume=resume, tune=base.tune)
      summary = run_experiment(run_config, data_cache=data_cache,
                               algorithm_cache=algorithm_cache, tuned=tuned or {},
                               tuning_record=record, skip_complete=True)
      log(result_line(summary))
      summaries[name].append(summary)
      curves[name].append(results.accuracy_curve(results.read_metrics(
          os.path.join(run_dir, results.METRICS_CSV))))
  central = None
  if comparison.centralized:
    central = centralized_reference(
        base, comparison.seeds, output_dir=os.path.join(output_dir,
                                                        'centralized'),
        data_cache=data_cache, resume=resume,
        learning_rates=_client_learning_rate_grid(base), log=log)
    if central is None:
      log('centralized reference skipped: tff_hgb.centralized is missing.')
  table = results.aggregate(
      summaries, baselines=[n for n in names if is_baseline(n)])
  seconds = time.perf_counter() - started
  summary = {
      'dataset': base.dataset, 'partition': base.partition,
      'rounds': base.rounds, 'num_clients': base.num_clients,
      'clients_per_round': base.clients_per_round,
      'seeds': list(comparison.seeds),
      'target_accuracy': base.target_accuracy,
      'tune': base.tune, 'tuned': tuned_values,
      'algorithms': table,
      'centralized': central,
      'seconds': seconds,
      'process_builds': algorithm_cache.builds,
  }
  results.atomic_write_json(os.path.join(output_dir, results.SUMMARY_JSON),
                            summary)
  title = comparison.title or (
      f'{base.dataset} / {base.partition}: {base.num_clients} clients, '
      f'{base.rounds} rounds, {len(comparison.seeds)} seed(s)')
  notes = [f'Local epochs {base.local_epochs}, batch {base.batch_size}, '
           f'clients per round {base.clients_per_round or "all"}, α = '
           f'{base.alpha}.']
  if base.tune:
    notes.append(f'Tuned per algorithm ({base.tune}) on validation data held '
                 'out of the training pool (never the test set).')
  if central:
    notes.append(f'Centralized: the same model, fused loss, '
                 f'{central["epochs"]} epochs of SGD (learning rate '
                 f'{central["learning_rate"]:g}, chosen on validation data) on '
                 'the whole training pool; best = test accuracy at the epoch '
                 'with the best validation accuracy.')
  notes.append(f'Wall time {seconds / 60:.1f} min.')
  markdown = results.comparison_markdown(
      table, target_accuracy=base.target_accuracy, title=title,
      centralized=central, notes=notes)
  results.atomic_write_text(os.path.join(output_dir, results.COMPARISON_MD),
                            markdown)
  results.plot_comparison(
      curves, os.path.join(output_dir, results.COMPARISON_PNG), title=title,
      target_accuracy=base.target_accuracy,
      centralized=central['final_accuracy_mean'] if central else None)
  summary['markdown'] = markdown
  return summary


# ---------------------------------------------------------------------------
# The paper's tables (experiments/paper_tables.py).
# ---------------------------------------------------------------------------

# Table III's settings (ALGORITHM.md §5, §6).
PAPER_ABLATION_SCHEMES = (partition_lib.CASE_A, partition_lib.ONE_MODALITY_B,
                          partition_lib.TWO_MODALITIES_B,
                          partition_lib.MIXED_B, partition_lib.CASE_C)
PAPER_TABLE_II_SCHEMES = (partition_lib.MIXED_B,
                          partition_lib.TWO_MODALITIES_B)
# The tables reproduce the paper, so HGB there is the literal algorithm
# (`hgb_paper`), whatever configuration the default `hgb` has.
PAPER_TABLE_II_ALGORITHMS = ('fedavg', 'fedattn', 'fednova', 'hgb_paper',
                             BEST_UNIMODAL)
PAPER_TABLE_III_ALGORITHMS = ('m_gb', 'c_gb', 'hgb_paper')

# The preset of `make paper` (flags given on the command line win).
PAPER_PRESET = {
    'dataset': 'htad',
    'num_clients': 10,
    'clients_per_round': 0,
    'rounds': 40,
    'eval_every': 1,
    'checkpoint_every': 10,
    'target_accuracy': 0.7,
    'tune': 'client_learning_rate:0.1,0.2,0.4,0.8,1.6',
    'output_dir': 'results/paper',
}
# --quick: shows the machinery end to end in about a minute.
PAPER_QUICK = {
    'num_clients': 4,
    'rounds': 2,
    'tune': '',
    'target_accuracy': 0.5,
}


def paper_plan(tables: Sequence[int], modalities: Sequence[str]
               ) -> 'collections.OrderedDict[str, list[str]]':
  """Partition scheme → the algorithms the selected tables need there.

  Table I: case A, FedAvg on every modality alone and on all of them (plus
  centralized runs, see `run_paper_tables`). Table II: Mixed-B and 2M-B, the
  baselines, HGB and the best uni-modal model. Table III: M-GB, C-GB and HGB
  on every setting.
  """
  plan = collections.OrderedDict()

  def add(scheme, names):
    entry = plan.setdefault(scheme, [])
    entry.extend(n for n in names if n not in entry)

  if 1 in tables:
    add(partition_lib.CASE_A,
        [f'{algorithms.UNI_PREFIX}{m}' for m in modalities] + ['fedavg'])
  if 2 in tables:
    for scheme in PAPER_TABLE_II_SCHEMES:
      add(scheme, PAPER_TABLE_II_ALGORITHMS)
  if 3 in tables:
    for scheme in PAPER_ABLATION_SCHEMES:
      add(scheme, PAPER_TABLE_III_ALGORITHMS)
  return plan


def run_paper_tables(base: ExperimentConfig, *, tables: Sequence[int],
                     seeds: Sequence[int], output_dir: str,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or reuses) every comparison the tables need; writes RESULTS.md.

  Each setting is a resumable comparison in output_dir/<scheme>/ (finished
  runs are skipped, unfinished ones continue), the centralized references of
  Table I in output_dir/centralized/<modalities>/.

  Returns:
    {'settings': {scheme: comparison summary}, 'centralized': {set: row},
    'markdown': RESULTS.md text}.
  """
  tables = sorted(set(tables))
  data_cache = DataCache()
  train_pool, _ = data_cache.load(base)
  modalities = train_pool.modality_names
  plan = paper_plan(tables, modalities)
  settings = collections.OrderedDict()
  started = time.perf_counter()
  for scheme, names in plan.items():
    log(f'== {scheme}: {", ".join(names)}')
    comparison = ComparisonConfig(
        base=dataclasses.replace(base, partition=scheme, resume=True,
                                 output_dir=os.path.join(output_dir, scheme)),
        algorithms=tuple(names), seeds=tuple(seeds),
        title=f'{base.dataset} / {scheme}')
    settings[scheme] = run_comparison(
        comparison, output_dir=os.path.join(output_dir, scheme), resume=True,
        log=log)
  central = collections.OrderedDict()
  if 1 in tables:
    sets = [[m] for m in modalities] + [list(modalities)]
    for subset in sets:
      label = '+'.join(subset)
      log(f'== centralized {label}')
      central[label] = centralized_reference(
          base, seeds, output_dir=os.path.join(output_dir, 'centralized',
                                               run_slug(label)),
          data_cache=data_cache, modalities=subset, resume=True,
          learning_rates=_client_learning_rate_grid(base), log=log)
  markdown = results.paper_tables_markdown(
      settings, central, tables=tables, modalities=modalities,
      notes=[f'{base.dataset}: {base.num_clients} clients, {base.rounds} '
             f'rounds, local epochs {base.local_epochs}, batch '
             f'{base.batch_size}, α = {base.alpha}, seeds '
             f'{list(seeds)}; target accuracy '
             f'{100 * (base.target_accuracy or 0):.0f}%.',
             ('client learning rate tuned per algorithm and setting '
              f'({base.tune}) on data held out of the training pool.'
              if base.tune else 'No tuning (client learning rate '
              f'{base.client_learning_rate}).'),
             f'Wall time of this invocation: '
             f'{(time.perf_counter() - started) / 60:.1f} min (finished runs '
             'are reused).'])
  results.atomic_write_text(os.path.join(output_dir, 'RESULTS.md'), markdown)
  return {'settings': settings, 'centralized': central, 'markdown': markdown}
