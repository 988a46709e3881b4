"""The sizes and encoder choices of the default model (`tff_hgb.models`).

Free of TensorFlow, like `hgb_config`, so that binaries check their flags
(e.g. --encoder) before loading it.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Union

from tff_hgb.data import dataset as dataset_lib

# An encoder kind per modality kind (the default for data of that kind), and
# 'mlp': the vector encoder over the flattened input, for any modality (the
# reference a structured encoder should beat, issue 19).
MLP = 'mlp'
ENCODER_KINDS = dataset_lib.KINDS + (MLP,)
# The input rank (without batch) each encoder kind takes; mlp takes any.
ENCODER_INPUT_RANK = {
    dataset_lib.VECTOR: 1,
    dataset_lib.TIMESERIES: 2,
    dataset_lib.SPECTROGRAM: 2,
    dataset_lib.IMAGE: 3,
    dataset_lib.FRAMES: 4,
    dataset_lib.FLOW: 4,
}

EncoderChoices = tuple[tuple[str, str], ...]

# The structured encoders pool each axis of their last convolution's output
# to at most this many cells before the dense layer (`grid_pool_sizes`).
DEFAULT_GRID_CELLS = 4


def parse_encoders(
    values: Union[str, Iterable[Union[str, tuple[str, str]]], None]
) -> EncoderChoices:
  """'m:kind[,m2:kind2]' strings (or (m, kind) pairs) → sorted (m, kind) pairs.

  Accepts one string, a list of them (a repeated flag) or pairs; each string
  may hold several comma-separated choices.

  Raises:
    ValueError naming the bad choice (unknown kind, no ':', a modality twice).
  """
  if not values:
    return ()
  if isinstance(values, str):
    values = [values]
  pairs = []
  for value in values:
    if isinstance(value, str):
      for text in value.split(','):
        text = text.strip()
        if not text:
          continue
        # rpartition: a modality name may itself hold ':' (kinds never do).
        name, sep, kind = text.rpartition(':')
        if not sep or not name.strip() or not kind.strip():
          raise ValueError(f'expected <modality>:<kind>, got {text!r}.')
        pairs.append((name.strip(), kind.strip()))
    else:
      name, kind = value
      pairs.append((str(name), str(kind)))
  names = [name for name, _ in pairs]
  for name, kind in pairs:
    if kind not in ENCODER_KINDS:
      raise ValueError(f'unknown encoder kind {kind!r} for {name!r}; '
                       f'expected one of {", ".join(ENCODER_KINDS)}.')
    if names.count(name) > 1:
      raise ValueError(f'modality {name!r} is given more than one encoder.')
  return tuple(sorted(pairs))


def format_encoders(pairs: EncoderChoices) -> list[str]:
  """The flat (flags.json, flag value) form: ['m:kind', ...]."""
  return [f'{name}:{kind}' for name, kind in pairs]


def check_encoders(pairs: EncoderChoices,
                   modalities: Iterable[dataset_lib.ModalitySpec]) -> None:
  """Each chosen encoder names a modality of the data and fits its rank.

  Raises:
    ValueError naming the choice and the data's modalities.
  """
  specs = {m.name: m for m in modalities}
  for name, kind in pairs:
    if name not in specs:
      raise ValueError(f'no modality {name!r} in the data; its modalities: '
                       f'{", ".join(specs)}.')
    rank = ENCODER_INPUT_RANK.get(kind)
    shape = tuple(specs[name].shape)
    if rank is not None and rank != len(shape):
      raise ValueError(f'the {kind} encoder takes rank-{rank} examples; '
                       f'{name!r} has shape {list(shape)} (mlp takes any).')


def grid_pool_sizes(axes: Iterable[int], cells: int) -> tuple[int, ...]:
  """Average-pool sizes taking each axis of `axes` to at most `cells` cells.

  The sizing rule of the structured encoders (docs/DESIGN.md): an axis of n
  positions is pooled by ceil(n / cells), so it keeps min(n, cells) cells
  (up to rounding); the dense layer after it takes
  prod(cells per axis) x channels inputs: it grows with the input's extent
  until `cells` per axis, then stays fixed, whatever the clip length or
  image size.
  """
  if cells < 1:
    raise ValueError(f'grid_cells must be >= 1, got {cells}.')
  return tuple(max(1, -(-int(n) // cells)) for n in axes)


def halving_pool_sizes(axes: Iterable[int], cells: int) -> tuple[int, ...]:
  """The structured encoders' first max-pool: 2 along an axis of at least
  2 x `cells` positions, 1 (none) along a shorter one, which halving would
  take below the grid (a 4x8 half-digit keeps its 4 rows)."""
  return tuple(2 if int(n) >= 2 * cells else 1 for n in axes)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of the default encoders (small: the data sets are small).

  The structured encoders have two convolutions of `conv_filters` and
  2 x `conv_filters` channels and pool each axis to at most `grid_cells`
  cells before a dense layer of `feature_dim` (`grid_pool_sizes`); the vector
  encoder (and `mlp`) has `hidden_units` then `feature_dim` units.

  `encoders`: (modality, encoder kind) pairs replacing the default encoder of
  a modality's kind (`ENCODER_KINDS`; --encoder); checked against the data's
  modalities when the model is built.
  """

  feature_dim: int = 32
  hidden_units: int = 64
  conv_filters: int = 16
  grid_cells: int = DEFAULT_GRID_CELLS
  dropout: float = 0.0
  seed: int = 0
  encoders: EncoderChoices = ()

  def __post_init__(self):
    # Normalised (sorted pairs) so equal choices make equal configs.
    object.__setattr__(self, 'encoders', parse_encoders(self.encoders))
    grid_pool_sizes((), self.grid_cells)  # Rejects grid_cells < 1.
