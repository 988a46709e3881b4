"""A user's own media (audio, RGB frames, optical flow) -> TFRecords -> data.

The manifest is a CSV file with one row per clip:

  * one column per modality holding a path (relative paths are relative to
    the manifest's directory); an empty cell means the clip lacks that
    modality (it is zero-filled and masked, as everywhere else);
  * `label`: a class name, or a non-negative integer class index;
  * optionally `client_id` (speaker, subject, camera), for natural clients.

Which reader a modality column uses comes from its name (`audio`, `rgb`,
`flow`) or from an explicit mapping `{column: reader}`:

  audio  WAV/FLAC (tensorflow-io), mixed to mono, resampled to a fixed rate,
         log-mel spectrogram cropped/padded to a fixed frame count
         -> spectrogram [num_frames, num_mel_bins].
  rgb    a directory of JPEG/PNG frames or a glob; a fixed number of frames
         sampled uniformly, resized, scaled to [0, 1]
         -> frames [num_video_frames, height, width, 3].
  flow   a .npy array [frames, H, W, 2] (x and y displacement in pixels);
         frames sampled uniformly, resized, displacements rescaled with the
         image -> flow [num_video_frames, height, width, 2].

`write_tfrecords` writes one `tf.train.Example` per clip (features
`x/<modality>` flattened float32, `mask/<modality>`, `label`, optionally
`client_id`) plus a JSON sidecar `<output>.json` with the modality specs,
class names and settings; `load_tfrecords` reads both back.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import os
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from tff_hgb.data import dataset
from tff_hgb.data import media_config

DataError = dataset.DataError

AUDIO = media_config.AUDIO
RGB = media_config.RGB
FLOW = media_config.FLOW
READERS = media_config.READERS
LABEL_COLUMN = 'label'
CLIENT_ID_COLUMN = 'client_id'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
SIDECAR_SUFFIX = '.json'
_SIDECAR_FORMAT_VERSION = 1
_LOG_MEL_FLOOR = media_config.LOG_MEL_FLOOR

MediaConfig = media_config.MediaConfig


# --------------------------------------------------------------------------
# Readers of one media file each; errors name the file and the row.
# --------------------------------------------------------------------------


def log_mel_spectrogram(path: str, config: MediaConfig) -> np.ndarray:
  """WAV/FLAC file -> float32 [num_frames, num_mel_bins] log-mel energies."""
  # Imported here: tensorflow-io is needed for audio only.
  import tensorflow_io as tfio  # pylint: disable=g-import-not-at-top
  audio = tfio.audio.AudioIOTensor(path)
  samples = audio.to_tensor()  # [samples, channels], int16 for 16-bit files
  samples = _to_unit_float(samples)
  mono = tf.reduce_mean(samples, axis=1, keepdims=True)
  rate = int(audio.rate.numpy())
  if rate != config.sample_rate:
    mono = tfio.audio.resample(mono, rate_in=rate,
                               rate_out=config.sample_rate)
  spectrogram = tfio.audio.spectrogram(
      mono[:, 0], nfft=config.fft_size, window=config.frame_size,
      stride=config.frame_step)
  mel = tfio.audio.melscale(spectrogram, rate=config.sample_rate,
                            mels=config.num_mel_bins, fmin=0,
                            fmax=config.sample_rate // 2)
  log_mel = np.log(mel.numpy() + _LOG_MEL_FLOOR)[:config.num_frames]
  padding = config.num_frames - log_mel.shape[0]
  if padding > 0:
    log_mel = np.concatenate([
        log_mel,
        np.full((padding, config.num_mel_bins), media_config.LOG_MEL_PADDING)])
  return log_mel.astype(np.float32)


def _to_unit_float(samples: tf.Tensor) -> tf.Tensor:
  """Integer PCM -> float32 in [-1, 1]; float audio is kept."""
  if samples.dtype.is_floating:
    return tf.cast(samples, tf.float32)
  if samples.dtype == tf.uint8:  # 8-bit WAV is unsigned, centred on 128
    return (tf.cast(samples, tf.float32) - 128.0) / 128.0
  scale = float(2 ** (samples.dtype.size * 8 - 1))
  return tf.cast(samples, tf.float32) / scale


def rgb_frames(path_or_glob: str, config: MediaConfig) -> np.ndarray:
  """Image files -> float32 [num_video_frames, height, width, 3] in [0, 1]."""
  files = _image_files(path_or_glob)
  frames = []
  for index in _uniform_sample(len(files), config.num_video_frames):
    try:
      image = tf.io.decode_image(tf.io.read_file(files[index]), channels=3,
                                 expand_animations=False)
    except tf.errors.OpError as e:
      raise DataError(f'{files[index]}: not a readable image '
                      f'({e.message.splitlines()[0]}).') from None
    resized = tf.image.resize(tf.cast(image, tf.float32),
                              (config.image_height, config.image_width))
    frames.append(resized.numpy() / 255.0)
  return np.stack(frames).astype(np.float32)


def _image_files(path_or_glob: str) -> list[str]:
  if os.path.isdir(path_or_glob):
    candidates = glob.glob(os.path.join(path_or_glob, '*'))
  else:
    candidates = glob.glob(path_or_glob)
  files = sorted(f for f in candidates
                 if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(f))
  if not files:
    raise DataError(f'{path_or_glob}: no {"/".join(IMAGE_EXTENSIONS)} files '
                    'there.')
  return files


def optical_flow(path: str, config: MediaConfig) -> np.ndarray:
  """.npy [frames, H, W, 2] -> float32 [num_video_frames, height, width, 2]."""
  try:
    flow = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: not a readable .npy array ({e}).') from None
  if flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[0] < 1:
    raise DataError(f'{path}: optical flow must be [frames, H, W, 2], got '
                    f'shape {flow.shape}.')
  if not np.all(np.isfinite(flow)):
    raise DataError(f'{path}: optical flow has NaN or inf values.')
  sampled = flow[_uniform_sample(flow.shape[0], config.num_video_frames)]
  resized = tf.image.resize(sampled.astype(np.float32),
                            (config.image_height, config.image_width)).numpy()
  # Displacements are in pixels of the original image: rescale with it.
  resized[..., 0] *= config.image_width / flow.shape[2]
  resized[..., 1] *= config.image_height / flow.shape[1]
  return resized.astype(np.float32)


def _uniform_sample(available: int, wanted: int) -> np.ndarray:
  """`wanted` indices spread evenly over [0, available) (repeats if short)."""
  return np.round(np.linspace(0, available - 1, wanted)).astype(np.int64)


_READ_FNS = {AUDIO: log_mel_spectrogram, RGB: rgb_frames, FLOW: optical_flow}


# --------------------------------------------------------------------------
# Manifest -> TFRecords.
# --------------------------------------------------------------------------


def write_tfrecords(manifest: str, output: str,
                    config: Optional[MediaConfig] = None,
                    modality_columns: Optional[Mapping[str, str]] = None
                    ) -> dataset.MultiModalDataset:
  """Converts every clip of `manifest` and writes `output` + its sidecar.

  Args:
    manifest: the CSV manifest (see the module docstring).
    output: path of the TFRecord file to write; the sidecar is
      `output + '.json'`.
    config: conversion settings.
    modality_columns: {column: reader ('audio' | 'rgb' | 'flow')}; default:
      every column other than `label` / `client_id` must be named after its
      reader.

  Returns:
    The converted clips as a `MultiModalDataset` (what `load_tfrecords` reads).
  """
  config = config or MediaConfig()
  rows, columns = _read_manifest(manifest, modality_columns)
  specs = [dataset.ModalitySpec(column, READERS[reader],
                                config.shape_of(reader))
           for column, reader in columns.items()]
  labels, class_names = _parse_labels(manifest, rows)
  base = os.path.dirname(os.path.abspath(manifest))
  features = {s.name: np.zeros((len(rows),) + s.shape, np.float32)
              for s in specs}
  presence = {s.name: np.zeros(len(rows), np.float32) for s in specs}
  for i, row in enumerate(rows):
    where = f'{manifest}, row {i + 1}'
    for column, reader in columns.items():
      cell = (row.get(column) or '').strip()
      if not cell:
        continue  # The clip lacks this modality.
      path = cell if os.path.isabs(cell) else os.path.join(base, cell)
      if reader != RGB and not os.path.isfile(path):
        raise DataError(f'{where}: {column} file {path} does not exist.')
      try:
        features[column][i] = _READ_FNS[reader](path, config)
      except DataError as e:
        raise DataError(f'{where}: {e}') from None
      except (tf.errors.OpError, OSError, ValueError) as e:
        message = getattr(e, 'message', str(e)).splitlines()[0]
        raise DataError(f'{where}: cannot read {column} file {path} '
                        f'({message}).') from None
      presence[column][i] = 1.0
    if not any(presence[s.name][i] for s in specs):
      raise DataError(f'{where}: the clip has no media (every modality '
                      'cell is empty).')
  client_ids = None
  if rows and CLIENT_ID_COLUMN in rows[0]:
    client_ids = np.array([(r[CLIENT_ID_COLUMN] or '').strip() for r in rows])
    empty = np.flatnonzero(client_ids == '')
    if empty.size:
      raise DataError(f'{manifest}, row {empty[0] + 1}: empty client_id.')
  converted = dataset.MultiModalDataset(
      name=os.path.splitext(os.path.basename(output))[0], modalities=specs,
      features=features, labels=labels, class_names=class_names,
      client_ids=client_ids, presence=presence)
  _write(converted, output, config)
  return converted


def _read_manifest(manifest: str,
                   modality_columns: Optional[Mapping[str, str]]
                   ) -> tuple[list[dict[str, str]], dict[str, str]]:
  """(rows, {modality column: reader})."""
  if not os.path.isfile(manifest):
    raise DataError(f'{manifest}: no such manifest file.')
  try:
    with open(manifest, newline='', encoding='utf-8') as f:
      reader = csv.DictReader(f)
      header = [h.strip() for h in (reader.fieldnames or [])]
      rows = [{k.strip(): v for k, v in row.items() if k is not None}
              for row in reader]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f'{manifest}: not a readable CSV file ({e}).') from None
  if LABEL_COLUMN not in header:
    raise DataError(f'{manifest}: no {LABEL_COLUMN!r} column (columns: '
                    f'{header}).')
  if not rows:
    raise DataError(f'{manifest}: no clips (the manifest has only a header).')
  media_columns = [h for h in header
                   if h not in (LABEL_COLUMN, CLIENT_ID_COLUMN)]
  mapping = dict(modality_columns or {})
  bad_readers = {c: r for c, r in mapping.items() if r not in READERS}
  if bad_readers:
    raise DataError(f'Unknown reader(s) {bad_readers}; readers: '
                    f'{", ".join(READERS)}.')
  columns = {}
  for column in media_columns:
    reader = mapping.get(column, column if column in READERS else None)
    if reader is None:
      raise DataError(
          f'{manifest}: unknown modality column {column!r}; name a column '
          f'after its reader ({", ".join(READERS)}) or map it, e.g. '
          f'--modality_columns={column}=audio.')
    columns[column] = reader
  unused = sorted(set(mapping) - set(columns))
  if unused:
    raise DataError(f'{manifest}: no column(s) {unused} (columns: {header}).')
  if not columns:
    raise DataError(f'{manifest}: no modality columns (columns: {header}).')
  return rows, columns


def _parse_labels(manifest: str, rows: list[dict[str, str]]
                  ) -> tuple[np.ndarray, list[str]]:
  """Integer labels and class names from the `label` column.

  If every label is an integer they are class indices (class names '0'...);
  otherwise labels are class names, indexed in sorted order.
  """
  raw = [(row.get(LABEL_COLUMN) or '').strip() for row in rows]
  for i, label in enumerate(raw):
    if not label:
      raise DataError(f'{manifest}, row {i + 1}: bad label (empty).')
  if all(_is_integer(label) for label in raw):
    labels = np.array([int(label) for label in raw], np.int64)
    negative = np.flatnonzero(labels < 0)
    if negative.size:
      raise DataError(f'{manifest}, row {negative[0] + 1}: bad label '
                      f'{raw[negative[0]]!r} (class indices are >= 0).')
    return labels, [str(c) for c in range(int(labels.max()) + 1)]
  numeric = [i for i, label in enumerate(raw) if _is_integer(label)]
  if numeric:
    i = numeric[0]
    raise DataError(f'{manifest}, row {i + 1}: bad label {raw[i]!r}: labels '
                    'mix class names and integer indices.')
  class_names = sorted(set(raw))
  index = {name: i for i, name in enumerate(class_names)}
  return np.array([index[label] for label in raw], np.int64), class_names


def _is_integer(text: str) -> bool:
  try:
    int(text)
    return True
  except ValueError:
    return False


def sidecar_path(path: str) -> str:
  return path + SIDECAR_SUFFIX


def _write(ds: dataset.MultiModalDataset, output: str,
           config: MediaConfig) -> None:
  directory = os.path.dirname(os.path.abspath(output))
  os.makedirs(directory, exist_ok=True)
  with tf.io.TFRecordWriter(output) as writer:
    for i in range(len(ds)):
      feature = {'label': _int64(int(ds.labels[i]))}
      for m in ds.modality_names:
        feature[f'x/{m}'] = _floats(ds.features[m][i].ravel())
        feature[f'mask/{m}'] = _floats([ds.presence[m][i]])
      if ds.client_ids is not None:
        feature[CLIENT_ID_COLUMN] = tf.train.Feature(
            bytes_list=tf.train.BytesList(
                value=[str(ds.client_ids[i]).encode()]))
      writer.write(tf.train.Example(
          features=tf.train.Features(feature=feature)).SerializeToString())
  with open(sidecar_path(output), 'w') as f:
    json.dump({
        'format_version': _SIDECAR_FORMAT_VERSION,
        'num_examples': len(ds),
        'modalities': [dict(name=s.name, kind=s.kind, shape=list(s.shape))
                       for s in ds.modalities],
        'class_names': list(ds.class_names),
        'has_client_ids': ds.client_ids is not None,
        'config': dataclasses.asdict(config),
    }, f, indent=1)


def _floats(values) -> tf.train.Feature:
  return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _int64(value: int) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


# --------------------------------------------------------------------------
# TFRecords -> MultiModalDataset.
# --------------------------------------------------------------------------


def load_tfrecords(path: str) -> dataset.MultiModalDataset:
  """Reads TFRecords written by `write_tfrecords` (needs the JSON sidecar)."""
  if not os.path.isfile(path):
    raise DataError(f'{path}: no such TFRecord file.')
  sidecar = sidecar_path(path)
  try:
    with open(sidecar) as f:
      meta = json.load(f)
    specs = [dataset.ModalitySpec(m['name'], m['kind'], tuple(m['shape']))
             for m in meta['modalities']]
    class_names = list(meta['class_names'])
    has_client_ids = bool(meta['has_client_ids'])
  except FileNotFoundError:
    raise DataError(f'{sidecar}: missing; it describes {path} and is written '
                    'beside it by make_tfrecords.') from None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DataError(f'{sidecar}: not a valid sidecar ({e}).') from None
  description = {'label': tf.io.FixedLenFeature([], tf.int64)}
  for s in specs:
    description[f'x/{s.name}'] = tf.io.FixedLenFeature(s.shape, tf.float32)
    description[f'mask/{s.name}'] = tf.io.FixedLenFeature([], tf.float32)
  if has_client_ids:
    description[CLIENT_ID_COLUMN] = tf.io.FixedLenFeature([], tf.string)
  parts = []
  try:
    for batch in tf.data.TFRecordDataset(path).batch(256).map(
        lambda records: tf.io.parse_example(records, description)):
      parts.append({k: v.numpy() for k, v in batch.items()})
  except tf.errors.OpError as e:
    raise DataError(f'{path}: corrupt or not written by make_tfrecords '
                    f'({e.message.splitlines()[0]}).') from None
  if not parts:
    raise DataError(f'{path}: no examples.')
  columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  client_ids = None
  if has_client_ids:
    client_ids = np.array([c.decode() for c in columns[CLIENT_ID_COLUMN]])
  try:
    return dataset.MultiModalDataset(
        name=os.path.splitext(os.path.basename(path))[0],
        modalities=specs,
        features={s.name: columns[f'x/{s.name}'] for s in specs},
        labels=columns['label'],
        class_names=class_names,
        client_ids=client_ids,
        presence={s.name: columns[f'mask/{s.name}'] for s in specs})
  except DataError as e:
    raise DataError(f'{path}: {e}') from None
