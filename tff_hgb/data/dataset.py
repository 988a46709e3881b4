"""The one data-set abstraction everything downstream works from.

A `MultiModalDataset` holds, for N examples and M >= 1 modalities, one float32
array per modality, integer labels, optional natural client ids (subject,
speaker) and an optional per-example presence flag per modality.

Every TF pipeline in the project yields the same element structure (see
`element_spec`):

    OrderedDict(
        x=OrderedDict(<modality>=float32[*shape], ...),   # absent -> zeros
        mask=OrderedDict(<modality>=float32[], ...),      # 1 present, 0 absent
        y=int32[])
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np

# Modality kinds; each has a default encoder in tff_hgb.models.
VECTOR = 'vector'          # [features]
TIMESERIES = 'timeseries'  # [steps, channels]
SPECTROGRAM = 'spectrogram'  # [frames, mel_bins]
FRAMES = 'frames'          # [frames, height, width, channels] (RGB clips)
FLOW = 'flow'              # [frames, height, width, 2] (optical flow)
IMAGE = 'image'            # [height, width, channels]
KINDS = (VECTOR, TIMESERIES, SPECTROGRAM, FRAMES, FLOW, IMAGE)

# The kind inferred from an example's rank when the user does not say.
KIND_BY_RANK = {1: VECTOR, 2: TIMESERIES, 3: IMAGE, 4: FRAMES}


class DataError(ValueError):
  """Bad input data; the message names the file, array, row or client."""


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
  """One modality: its name, kind and per-example shape."""

  name: str
  kind: str
  shape: tuple[int, ...]

  def __post_init__(self):
    if self.kind not in KINDS:
      raise DataError(
          f'Modality {self.name!r}: unknown kind {self.kind!r}; expected one '
          f'of {", ".join(KINDS)}.')


@dataclasses.dataclass
class MultiModalDataset:
  """Per-modality arrays, labels and metadata of one data set (or a part)."""

  name: str
  modalities: list[ModalitySpec]
  features: dict[str, np.ndarray]
  labels: np.ndarray
  class_names: list[str]
  client_ids: Optional[np.ndarray] = None
  presence: Optional[dict[str, np.ndarray]] = None
  # {modality: (mean, std)} when the features were z-scored with training
  # statistics (`normalization.normalize_features`); an exported model keeps them,
  # so it takes raw inputs.
  normalization: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None

  def __post_init__(self):
    self.labels = np.asarray(self.labels)
    validate(self)
    if self.presence is None:
      self.presence = {
          m.name: np.ones(len(self.labels), np.float32) for m in self.modalities
      }

  @property
  def modality_names(self) -> list[str]:
    return [m.name for m in self.modalities]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def subset(self, indices: np.ndarray, name: Optional[str] = None
             ) -> 'MultiModalDataset':
    """The examples at `indices`, in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return MultiModalDataset(
        name=name or self.name,
        modalities=list(self.modalities),
        features={k: v[indices] for k, v in self.features.items()},
        labels=self.labels[indices],
        class_names=list(self.class_names),
        client_ids=None if self.client_ids is None else self.client_ids[indices],
        presence={k: v[indices] for k, v in self.presence.items()},
        normalization=self.normalization,
    )

  def with_modalities(self, names: Sequence[str]) -> 'MultiModalDataset':
    """The same examples restricted to `names` (e.g. a uni-modal view)."""
    unknown = [n for n in names if n not in self.features]
    if unknown:
      raise DataError(f'{self.name}: unknown modality {unknown}; has '
                      f'{self.modality_names}.')
    return MultiModalDataset(
        name=self.name,
        modalities=[m for m in self.modalities if m.name in names],
        features={n: self.features[n] for n in names},
        labels=self.labels,
        class_names=list(self.class_names),
        client_ids=self.client_ids,
        presence={n: self.presence[n] for n in names},
        normalization=None if self.normalization is None else {
            n: v for n, v in self.normalization.items() if n in names},
    )


def validate(ds: MultiModalDataset) -> None:
  """Raises DataError naming the first inconsistency in `ds`."""
  if not ds.modalities:
    raise DataError(f'{ds.name}: a data set needs at least one modality.')
  n = ds.labels.shape[0] if ds.labels.ndim == 1 else None
  if n is None:
    raise DataError(f'{ds.name}: labels must be a 1-D array, got shape '
                    f'{ds.labels.shape}.')
  if not np.issubdtype(ds.labels.dtype, np.integer):
    raise DataError(f'{ds.name}: labels must be integers, got {ds.labels.dtype}.')
  if n and (ds.labels.min() < 0 or ds.labels.max() >= len(ds.class_names)):
    raise DataError(
        f'{ds.name}: labels must lie in [0, {len(ds.class_names)}), got '
        f'[{ds.labels.min()}, {ds.labels.max()}].')
  names = [m.name for m in ds.modalities]
  if len(set(names)) != len(names):
    raise DataError(f'{ds.name}: duplicate modality names {names}.')
  if set(names) != set(ds.features):
    raise DataError(f'{ds.name}: modalities {sorted(names)} do not match the '
                    f'feature arrays {sorted(ds.features)}.')
  for spec in ds.modalities:
    array = ds.features[spec.name]
    if array.shape[0] != n:
      raise DataError(
          f'{ds.name}: modality {spec.name!r} has {array.shape[0]} examples '
          f'but there are {n} labels.')
    if tuple(array.shape[1:]) != tuple(spec.shape):
      raise DataError(
          f'{ds.name}: modality {spec.name!r} has per-example shape '
          f'{tuple(array.shape[1:])}, its spec says {tuple(spec.shape)}.')
    if array.dtype != np.float32:
      raise DataError(f'{ds.name}: modality {spec.name!r} must be float32, '
                      f'got {array.dtype}.')
    if array.size and not np.all(np.isfinite(array)):
      bad = int(np.argwhere(~np.isfinite(array.reshape(n, -1)))[0, 0])
      raise DataError(f'{ds.name}: modality {spec.name!r} has NaN or inf '
                      f'values (first in example {bad}).')
  if ds.client_ids is not None and len(ds.client_ids) != n:
    raise DataError(f'{ds.name}: {len(ds.client_ids)} client ids for {n} '
                    'examples.')
  if ds.presence is not None:
    for name, flags in ds.presence.items():
      if name not in ds.features or len(flags) != n:
        raise DataError(f'{ds.name}: presence flags for {name!r} do not '
                        'match the data.')


def element_spec(modalities: Sequence[ModalitySpec]):
  """The structure of one example in every TF pipeline of the project."""
  # Imported here, as in to_tf_dataset: the binaries' flag checks read this
  # module's names and must not wait for TensorFlow to load.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return collections.OrderedDict(
      x=collections.OrderedDict(
          (m.name, tf.TensorSpec(m.shape, tf.float32)) for m in modalities),
      mask=collections.OrderedDict(
          (m.name, tf.TensorSpec((), tf.float32)) for m in modalities),
      y=tf.TensorSpec((), tf.int32),
  )


def to_tf_dataset(ds: MultiModalDataset,
                  presence: Optional[Mapping[str, np.ndarray]] = None
                  ) -> tf.data.Dataset:
  """Unbatched examples of `ds` in the element structure above.

  An absent modality (presence 0) is zero-filled, so a model never sees its
  values even if the array holds some.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  presence = presence or ds.presence
  x = collections.OrderedDict()
  mask = collections.OrderedDict()
  for m in ds.modalities:
    flags = np.asarray(presence[m.name], np.float32)
    array = ds.features[m.name]
    x[m.name] = array * flags.reshape((-1,) + (1,) * (array.ndim - 1))
    mask[m.name] = flags
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, mask=mask,
                              y=ds.labels.astype(np.int32)))
