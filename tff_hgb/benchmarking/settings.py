"""The benchmark's settings: sizes, repeats and sections, checked once.

Free of TensorFlow, so the binary answers a bad flag before its slow import.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# Sections in the order they run (`--sections` chooses among them).
SECTIONS = ('memory', 'ratio', 'flops', 'runtimes', 'media', 'scaling',
            'workers', 'local_step')

# --quick: tiny sizes for a smoke test (numbers meaningless).
QUICK = dict(repeats=2, warmup=1, rounds=12, clients=3, examples_per_client=24,
             local_epochs=(1, 2), scaling_clients=(2, 4), scaling_repeats=1,
             worker_counts=(1, 2), workers_clients=4, workers_repeats=1,
             wide_dim=32, perf=False)


@dataclasses.dataclass(frozen=True)
class Settings:
  output_dir: str
  repeats: int
  warmup: int
  rounds: int
  clients: int
  examples_per_client: int
  local_epochs: tuple[int, ...]
  scaling_clients: tuple[int, ...]
  scaling_repeats: int
  worker_counts: tuple[int, ...]
  workers_clients: int
  workers_repeats: int
  batch_size: int
  wide_dim: int
  perf: bool
  sections: tuple[str, ...]
  quick: bool
  seed: int


def _ints(values) -> tuple[int, ...]:
  return tuple(int(v) for v in values)


def build_settings(values: Mapping[str, Any]) -> Settings:
  """`Settings` of `values` (one per field), `QUICK` applied when `quick`.

  Args:
    values: field → value; `local_epochs`, `scaling_clients` and
      `worker_counts` as sequences of ints or of their strings (flag lists).

  Raises:
    ValueError: naming the flag, if a section is unknown or a size out of range.
  """
  unknown = [s for s in values['sections'] if s not in SECTIONS]
  if unknown:
    raise ValueError(f'--sections: unknown {unknown}; choose from {SECTIONS}.')
  values = dict(values)
  for name in ('local_epochs', 'scaling_clients', 'worker_counts'):
    values[name] = _ints(values[name])
  if values['quick']:
    values.update(QUICK)
  settings = Settings(**values)
  if settings.repeats < 1 or settings.warmup < 0 or settings.scaling_repeats < 1:
    raise ValueError('--repeats and --scaling_repeats must be >= 1, '
                     '--warmup >= 0.')
  if settings.rounds < 10 and 'memory' in settings.sections:
    raise ValueError('--rounds must be >= 10 (RSS growth is measured from '
                     'round 10).')
  if settings.examples_per_client < 8:
    raise ValueError('--examples_per_client must be >= 8.')
  return settings
