"""The configuration of one run: ExperimentConfig, its checks, --tune specs.

Everything here is checked without data; errors are `UsageError`s naming the
flag (`--<flag>: <what is wrong>`), so the binaries answer them in one line.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping, Optional

from tff_hgb import algorithms
from tff_hgb import client_work
from tff_hgb import models
from tff_hgb.data import datasets
from tff_hgb.data import partition as partition_lib

# Validation evaluations averaged to score one tuning candidate.
TUNE_EVALUATIONS = 3


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
