"""The configuration of one run: frozen configs experiment → data / algorithm
(→ HGB hyper-parameters) / run, each checking itself once when it is made.

A config that exists is valid: every range is checked in its config's
`__post_init__` (the core's `AlgorithmConfig` and `HGBHParams` check their own
fields), so entry points take configs and never re-check them. Errors are
`UsageError`s naming the field, and every field is named as its flag
(`--<flag>: <what is wrong>`), so the binaries answer them in one line. The
flat form (`to_dict`/`from_dict`, flags.json) keeps the flags' names and order.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Optional

from tff_hgb import algorithms
from tff_hgb import hgb_config
from tff_hgb import model_config
from tff_hgb.data import datasets
from tff_hgb.data import partition as partition_lib

# The fewest rounds a tuning run may have (and the centralized reference's
# window of validation evaluations, tff_hgb.experiment.reference).
TUNE_EVALUATIONS = 3
# A tuning value's score on one seed: its validation accuracy averaged over
# this many last rounds (fewer if the tuning runs are shorter), so a value
# that is good at one round and collapses at the next scores low.
TUNE_SCORE_ROUNDS = 5
# How a tuning chooses among its values' scores: 'best', the highest score;
# 'one_se', the one-standard-error rule (Hastie et al., The Elements of
# Statistical Learning, section 7.10): of the values scoring within one
# standard error (over the tuning seeds) of the best, the smallest, i.e. the
# most conservative when smaller is safer, as for learning rates.
TUNE_RULES = ('best', 'one_se')


class UsageError(ValueError):
  """A bad flag or configuration; str() is '--<flag>: <what is wrong>'."""

  def __init__(self, flag: str, message: str):
    self.flag = flag
    super().__init__(f'--{flag}: {message}')


def _require(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise UsageError(field, message)


def _at_least(value: int, low: int, field: str) -> None:
  _require(value >= low, field, f'must be ≥ {low}, got {value}.')


def _in_open_unit(value: float, field: str) -> None:
  _require(0.0 < value < 1.0, field, f'must lie in (0, 1), got {value}.')


# ---------------------------------------------------------------------------
# Hyper-parameter names and --tune specs.
# ---------------------------------------------------------------------------


def hgb_fields() -> list[str]:
  """HGBHParams fields settable as --hgb_<field> (local_epochs excluded)."""
  return [f for f in algorithms.hgb_hparams_fields() if f != 'local_epochs']


def extra_algorithm_fields() -> dict[str, Any]:
  """AlgorithmConfig fields without their own AlgorithmSettings field (name →
  default), e.g. HGB's client_weight_mix; set as flags of the same name."""
  own = {f.name for f in dataclasses.fields(AlgorithmSettings)} | {'seed'}
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
  defaults = hgb_config.HGBHParams()
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


def grid_candidates(grid) -> list[dict[str, Any]]:
  """Every combination (field → value) of a [(field, values)] grid, in order."""
  names = [name for name, _ in grid]
  return [dict(zip(names, combo))
          for combo in itertools.product(*[values for _, values in grid])]


def tune_candidates(spec: str) -> list[dict[str, Any]]:
  grid = parse_tune(spec)
  return grid_candidates(grid) if grid else []


def _known_dataset(name: str) -> bool:
  names = datasets.dataset_names()
  if name in names:
    return True
  prefix, sep, path = name.partition(':')
  return bool(sep and path and f'{prefix}:<path>' in names)


# ---------------------------------------------------------------------------
# The configs.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The data of a run: the data set, its test split and its clients."""

  dataset: str = datasets.DEFAULT_DATASET
  partition: str = partition_lib.MIXED_B
  alpha: Optional[float] = partition_lib.DEFAULT_ALPHA
  num_clients: int = 10
  val_fraction: float = 0.1
  min_val_examples: int = 4
  # > 0: this fraction of the training pool is held out before partitioning
  # as the server-held shared validation set (a control, ALGORITHM.md §5b).
  shared_validation_fraction: float = 0.0
  test_fraction: float = datasets.DEFAULT_TEST_FRACTION
  data_seed: int = 0

  def __post_init__(self):
    _require(bool(self.dataset), 'dataset', 'is empty.')
    _require(_known_dataset(self.dataset), 'dataset',
             f'unknown data set {self.dataset!r}; valid names: '
             f'{", ".join(datasets.dataset_names())}.')
    _require(self.partition in partition_lib.SCHEMES, 'partition',
             f'unknown scheme {self.partition!r}; expected one of '
             f'{", ".join(partition_lib.SCHEMES)}.')
    _at_least(self.num_clients, 1, 'num_clients')
    _require(self.alpha is None or self.alpha > 0, 'alpha',
             f'must be > 0, got {self.alpha}.')
    _in_open_unit(self.val_fraction, 'val_fraction')
    _at_least(self.min_val_examples, 1, 'min_val_examples')
    _require(0.0 <= self.shared_validation_fraction < 1.0,
             'shared_validation_fraction',
             f'must lie in [0, 1) (0 = none), got '
             f'{self.shared_validation_fraction}.')
    _in_open_unit(self.test_fraction, 'test_fraction')


_CORE_DEFAULTS = algorithms.AlgorithmConfig()


@dataclasses.dataclass(frozen=True)
class AlgorithmSettings:
  """Which algorithm, with which hyper-parameters (→ `AlgorithmConfig`).

  `hgb` holds (field, value) pairs of `hgb_config.HGBHParams` overriding the
  HGB mode's defaults (flags --hgb_<field>); `options` the other
  `AlgorithmConfig` fields given (e.g. client_weight_mix), as (name, value).
  """

  name: str = 'hgb'
  # The core's defaults, read from AlgorithmConfig, so they live in one place.
  local_epochs: int = _CORE_DEFAULTS.local_epochs
  batch_size: int = _CORE_DEFAULTS.batch_size
  client_learning_rate: float = _CORE_DEFAULTS.client_learning_rate
  server_learning_rate: float = _CORE_DEFAULTS.server_learning_rate
  client_momentum: float = _CORE_DEFAULTS.client_momentum
  fedprox_mu: float = _CORE_DEFAULTS.fedprox_mu
  fedattn_epsilon: float = _CORE_DEFAULTS.fedattn_epsilon
  hgb: tuple[tuple[str, Any], ...] = ()
  options: tuple[tuple[str, Any], ...] = ()
  # (modality, encoder kind) pairs (--encoder=m:kind; ModelConfig.encoders);
  # given as 'm:kind' strings or pairs, kept as sorted pairs.
  encoder: model_config.EncoderChoices = ()

  def __post_init__(self):
    try:
      object.__setattr__(self, 'encoder',
                         model_config.parse_encoders(self.encoder))
    except ValueError as e:
      raise UsageError('encoder', str(e)) from None
    _require(bool(self.name) and algorithms.is_known(self.name), 'algorithm',
             f'unknown algorithm {self.name!r}; expected one of '
             f'{algorithms.describe_names()}.')
    _at_least(self.local_epochs, 1, 'local_epochs')
    _at_least(self.batch_size, 1, 'batch_size')
    for field in ('client_learning_rate', 'server_learning_rate'):
      value = getattr(self, field)
      _require(math.isfinite(value) and value > 0, field,
               f'must be > 0, got {value}.')
    _require(0.0 <= self.client_momentum < 1.0, 'client_momentum',
             f'must lie in [0, 1), got {self.client_momentum}.')
    _require(self.fedprox_mu >= 0, 'fedprox_mu',
             f'must be ≥ 0, got {self.fedprox_mu}.')
    _require(self.fedattn_epsilon > 0, 'fedattn_epsilon',
             f'must be > 0, got {self.fedattn_epsilon}.')
    self._check_options()
    self._check_hgb()

  def _check_options(self):
    extra = extra_algorithm_fields()
    for field, _ in self.options:
      _require(field in extra, field, 'is not an algorithm hyper-parameter.')
    options = dict(self.options)
    if 'client_weight_mix' in options:
      _require(0.0 <= options['client_weight_mix'] <= 1.0,
               'client_weight_mix', 'must lie in [0, 1], got '
               f'{options["client_weight_mix"]}.')
    _require(options.get('client_weight_temper', 0.0) >= 0.0,
             'client_weight_temper',
             f'must be ≥ 0, got {options.get("client_weight_temper")}.')
    try:  # AlgorithmConfig checks its own fields (e.g. max_client_share).
      self.algorithm_config(seed=0)
    except (TypeError, ValueError) as e:
      flag = next((f for f, _ in self.options if f in str(e)), 'algorithm')
      raise UsageError(flag, str(e)) from None

  def _check_hgb(self):
    known = set(hgb_fields())
    for field, _ in self.hgb:
      _require(field in known, f'hgb_{field}',
               'is not an HGB hyper-parameter.')
    try:  # HGBHParams checks its own fields.
      hgb_config.HGBHParams(local_epochs=self.local_epochs, **dict(self.hgb))
    except (TypeError, ValueError) as e:
      flag = next((f'hgb_{f}' for f, _ in self.hgb if f in str(e)), 'hgb')
      raise UsageError(flag, str(e)) from None

  def algorithm_config(self, seed: int) -> algorithms.AlgorithmConfig:
    """The registry's AlgorithmConfig of these settings (model seeded too)."""
    return algorithms.AlgorithmConfig(
        client_learning_rate=self.client_learning_rate,
        server_learning_rate=self.server_learning_rate,
        client_momentum=self.client_momentum,
        local_epochs=self.local_epochs,
        batch_size=self.batch_size,
        seed=seed,
        model=model_config.ModelConfig(seed=seed, encoders=self.encoder),
        fedprox_mu=self.fedprox_mu,
        fedattn_epsilon=self.fedattn_epsilon,
        hgb_overrides=tuple(sorted(self.hgb)),
        **dict(self.options))


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How a run goes: rounds, sampling, seed, evaluation, tuning, its files.

  `clients_per_round=0` means every client takes part in every round.
  """

  rounds: int = 30
  clients_per_round: int = 0
  seed: int = 0
  target_accuracy: Optional[float] = 0.7
  eval_every: int = 1
  checkpoint_every: int = 5
  output_dir: Optional[str] = None
  # Where the final model is exported; None: <output_dir>/model.
  export_dir: Optional[str] = None
  resume: bool = False
  tune: str = ''
  tune_rounds: int = 0
  # Seeds each tuning value is trained on (run.seed, run.seed + 1, ...); its
  # score is the mean over them (tff_hgb.experiment.tuning).
  tune_seeds: int = 1
  # How many times a field's grid may be extended by one step when the best
  # value is on its edge (0: never).
  tune_extensions: int = 0
  # How the tuned value is chosen from the scores (TUNE_RULES).
  tune_rule: str = 'best'
  tune_val_fraction: float = 0.2
  progress: bool = True

  def __post_init__(self):
    for field in ('rounds', 'eval_every', 'checkpoint_every'):
      _at_least(getattr(self, field), 1, field)
    _require(self.clients_per_round >= 0, 'clients_per_round',
             'must be ≥ 0 (0 = all clients), got '
             f'{self.clients_per_round}.')
    _require(self.target_accuracy is None or
             0.0 < self.target_accuracy <= 1.0, 'target_accuracy',
             f'must lie in (0, 1], got {self.target_accuracy}.')
    _at_least(self.tune_rounds, 0, 'tune_rounds')
    _at_least(self.tune_seeds, 1, 'tune_seeds')
    _at_least(self.tune_extensions, 0, 'tune_extensions')
    _require(self.tune_rule in TUNE_RULES, 'tune_rule',
             f'must be one of {", ".join(TUNE_RULES)}, got '
             f'{self.tune_rule!r}.')
    _in_open_unit(self.tune_val_fraction, 'tune_val_fraction')
    parse_tune(self.tune)
    _require(not self.tune or self.effective_tune_rounds >= TUNE_EVALUATIONS,
             'tune_rounds', f'tuning needs ≥ {TUNE_EVALUATIONS} rounds.')

  @property
  def effective_tune_rounds(self) -> int:
    return self.tune_rounds or self.rounds


# The flat form (flags.json, flag names) in the flags' order: name → (part of
# ExperimentConfig, field of that part).
_FLAT = {}
for _part, _names in (
    ('algorithm', ('algorithm',)),
    ('data', ('dataset', 'partition', 'alpha', 'num_clients')),
    ('run', ('clients_per_round', 'rounds')),
    ('algorithm', ('local_epochs', 'batch_size', 'client_learning_rate',
                   'server_learning_rate', 'client_momentum', 'fedprox_mu',
                   'fedattn_epsilon', 'hgb', 'algorithm_options',
                   'encoder')),
    ('data', ('val_fraction', 'min_val_examples', 'shared_validation_fraction',
              'test_fraction', 'data_seed')),
    ('run', ('seed', 'target_accuracy', 'eval_every', 'checkpoint_every',
             'output_dir', 'export_dir', 'resume', 'tune', 'tune_rounds',
             'tune_seeds', 'tune_extensions', 'tune_rule',
             'tune_val_fraction', 'progress'))):
  for _name in _names:
    _FLAT[_name] = (_part, {'algorithm': 'name', 'algorithm_options':
                            'options'}.get(_name, _name))
_PAIRS = ('hgb', 'algorithm_options')  # (name, value) tuples; dicts when flat.


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run depends on: its data, its algorithm and how it runs."""

  data: DataConfig = DataConfig()
  algorithm: AlgorithmSettings = AlgorithmSettings()
  run: RunConfig = RunConfig()

  def __post_init__(self):
    if self.data.partition != partition_lib.NATURAL:
      _require(self.run.clients_per_round <= self.data.num_clients,
               'clients_per_round', f'{self.run.clients_per_round} > '
               f'--num_clients={self.data.num_clients}.')
    if self.run.tune:
      untuned = self.replace(tune='')
      for values in tune_candidates(self.run.tune):
        try:
          with_values(untuned, values)
        except UsageError as e:
          raise UsageError('tune', f'value {values} is invalid: {e}') from None

  def algorithm_config(self) -> algorithms.AlgorithmConfig:
    return self.algorithm.algorithm_config(seed=self.run.seed)

  def to_dict(self) -> dict[str, Any]:
    """The flat form: {flag name: value}, hgb/algorithm_options as dicts,
    encoder as a list of 'm:kind'."""
    values = {}
    for name, (part, field) in _FLAT.items():
      value = getattr(getattr(self, part), field)
      if name in _PAIRS:
        value = dict(value)
      elif name == 'encoder':
        value = model_config.format_encoders(value)
      values[name] = value
    return values

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> 'ExperimentConfig':
    """From the flat form (unknown keys, e.g. a comparison's, are ignored)."""
    return cls().replace(**{k: v for k, v in values.items() if k in _FLAT})

  def replace(self, **values: Any) -> 'ExperimentConfig':
    """This config with flat fields (flag names) replaced; checked anew."""
    parts = {'data': {}, 'algorithm': {}, 'run': {}}
    for name, value in values.items():
      if name not in _FLAT:
        raise TypeError(f'ExperimentConfig has no field {name!r}.')
      if name in _PAIRS:
        value = tuple(sorted(dict(value or {}).items()))
      part, field = _FLAT[name]
      parts[part][field] = value
    return ExperimentConfig(**{
        part: dataclasses.replace(getattr(self, part), **fields)
        if fields else getattr(self, part) for part, fields in parts.items()})


def with_values(config: ExperimentConfig, values: Mapping[str, Any]
                ) -> ExperimentConfig:
  """`config` with tuned values applied (hgb_<field> goes into its hgb)."""
  if not values:
    return config
  plain = {}
  hgb = dict(config.algorithm.hgb)
  options = dict(config.algorithm.options)
  extra = extra_algorithm_fields()
  for name, value in values.items():
    if name.startswith('hgb_') and name[4:] in hgb_fields():
      hgb[name[4:]] = value
    elif name in extra:
      options[name] = value
    else:
      plain[name] = value
  return config.replace(hgb=hgb, algorithm_options=options, **plain)


def validate(config: ExperimentConfig) -> None:
  """What a run needs beyond a valid config: a directory for its results."""
  _require(bool(config.run.output_dir), 'output_dir', 'is required.')
