"""Features z-scored with the training pool's statistics: the one raw → model map.

Per feature for vectors, per channel otherwise; spectrogram padding left out.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tff_hgb.data import dataset
from tff_hgb.data import media_config

DataError = dataset.DataError
MultiModalDataset = dataset.MultiModalDataset


def normalize_features(train: MultiModalDataset, test: MultiModalDataset
                       ) -> tuple[MultiModalDataset, MultiModalDataset]:
  """Z-scores both sets with the TRAINING pool's statistics.

  Statistics are per feature for vectors and per channel (the last axis) for
  every other kind, over the training examples where the modality is present;
  for spectrograms, over the frames that are not padding (frames of exactly
  `media_config.LOG_MEL_PADDING` in every bin, which `make_tfrecords` appends
  to short clips): padding would widen every mel bin's std and compress the
  speech frames' variation (issue 19); and padded frames become zeros (see
  `standardize`, which an exported model repeats).
  A constant feature is centred but not scaled. Absent values stay zero.
  Both sets keep the statistics ({modality: (mean, std)}) as `normalization`.
  """
  def standardise(ds, spec, mean, std):
    return standardize(ds.features[spec.name], spec.kind, mean, std,
                       ds.presence[spec.name])

  new_train, new_test, statistics = {}, {}, {}
  for spec in train.modalities:
    values = train.features[spec.name].astype(np.float64)
    present = train.presence[spec.name] > 0
    if not present.any():
      raise DataError(f'{train.name}: modality {spec.name!r} is absent from '
                      'every training example; cannot normalise it.')
    channels = values[present].reshape(-1, values.shape[-1])
    if spec.kind == dataset.SPECTROGRAM:
      padding = padding_frames(channels)
      channels = channels if padding.all() else channels[~padding]
    mean = channels.mean(axis=0)
    std = channels.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    new_train[spec.name] = standardise(train, spec, mean, std)
    new_test[spec.name] = standardise(test, spec, mean, std)
    statistics[spec.name] = (mean, std)
  return (_with_features(train, new_train, statistics),
          _with_features(test, new_test, statistics))


def padding_frames(spectrograms: np.ndarray) -> np.ndarray:
  """Which frames of raw spectrograms [..., frames, bins] pad a short clip.

  A padding frame holds exactly `media_config.LOG_MEL_PADDING` in every bin
  (make_tfrecords appends such frames); a frame of real silence never does.
  """
  return np.all(spectrograms == np.float32(media_config.LOG_MEL_PADDING),
                axis=-1)


def standardize(features: np.ndarray, kind: str, mean: np.ndarray,
                std: np.ndarray, presence: np.ndarray) -> np.ndarray:
  """(features - mean) / std, zero where absent (and for padding frames).

  The one map from raw to model inputs (`normalize_features`; the exported
  model's `predict`). A spectrogram's padding frames become zeros, the
  training mean, rather than log(floor) scaled by the speech frames' std
  (-8 to -17 standard deviations on issue 19's spoken digits, which made
  the convolutional encoder diverge): padding carries no sound, only where
  the clip ended.
  """
  rank = features.ndim - 1
  flags = np.asarray(presence, np.float32).reshape((-1,) + (1,) * rank)
  scaled = (features - mean) / std * flags
  if kind == dataset.SPECTROGRAM:
    scaled = np.where(padding_frames(features)[..., np.newaxis], 0.0, scaled)
  return scaled.astype(np.float32)


def _with_features(ds: MultiModalDataset, features: Mapping[str, np.ndarray],
                   normalization) -> MultiModalDataset:
  return MultiModalDataset(
      name=ds.name, modalities=list(ds.modalities), features=dict(features),
      labels=ds.labels, class_names=list(ds.class_names),
      client_ids=ds.client_ids, presence=dict(ds.presence),
      normalization=normalization)
