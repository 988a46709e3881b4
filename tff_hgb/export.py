"""A trained global model as files a user can load for inference: a Keras model
plus its modality specs, and `load_model`, which predicts from a dict of arrays.

An export is a directory holding `model.keras` (Keras' own format: it reloads
without our code rebuilding layers) and `tff_hgb_model.json` (format version,
modality names/kinds/shapes, class names, and the training statistics the data
pipeline z-scored the inputs with). `ExportedModel.predict` takes RAW inputs,
normalises them as training did, and feeds a missing modality exactly as the
evaluation drops one: zero-filled with mask 0 (`dataset.to_tf_dataset`).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tff_hgb
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import normalization

# Written into every export; `load_model` reads the versions in READABLE.
# Bump FORMAT_VERSION when the files change, and keep reading the old ones.
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
MODEL_FILE = 'model.keras'
SPEC_JSON = 'tff_hgb_model.json'
FORMAT_NAME = 'tff_hgb model'


class ExportError(ValueError):
  """An export that cannot be written or read; the message names the path."""


def check_writable(path: str) -> None:
  """Raises ExportError unless `path` is (or can be made) a writable directory.

  Cheap, so a run checks it before training, not after hours of rounds.
  """
  existing = os.path.abspath(path)
  while not os.path.exists(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ExportError(f'cannot export the model to {path}: {existing} is a '
                      'file.')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ExportError(f'cannot export the model to {path}: {existing} is not '
                      'writable.')


def export_model(keras_model: tf.keras.Model, path: str, *,
                 weights=None,
                 modalities: Sequence[dataset_lib.ModalitySpec],
                 class_names: Optional[Sequence[str]] = None,
                 normalization: Optional[Mapping[str, Any]] = None,
                 metadata: Optional[Mapping[str, Any]] = None) -> str:
  """Writes `keras_model` (with `weights`) and its specs to directory `path`.

  Args:
    keras_model: a model from `models.build_keras_model`.
    path: the export directory (created; an earlier export there is replaced).
    weights: `tff.learning.models.ModelWeights` to put into the model first
      (e.g. `process.get_model_weights(state)`); None keeps its weights.
    modalities: the specs of the model's modalities (the data's order).
    class_names: the label of each class, if known.
    normalization: {modality: (mean, std)} the inputs were z-scored with
      (`MultiModalDataset.normalization`), or None for raw inputs.
    metadata: anything JSON-serialisable to keep alongside (e.g. the run).

  Returns:
    `path`.

  Raises:
    ExportError: `path` cannot be written (one line naming it).
  """
  if isinstance(weights, tff.learning.models.ModelWeights):
    weights.assign_weights_to(keras_model)
  specs = {m.name: m for m in modalities}
  inputs = models.model_modalities(keras_model)
  if sorted(inputs) != sorted(specs):
    raise ValueError(f'The modality specs {sorted(specs)} are not the '
                     f'model\'s inputs {sorted(inputs)}.')
  names = [m.name for m in modalities]  # The data's order (heads follow it).
  num_classes = int(keras_model.output[models.FUSION].shape[-1])
  spec = {
      'format': FORMAT_NAME,
      'format_version': FORMAT_VERSION,
      'modalities': [{'name': n, 'kind': specs[n].kind,
                      'shape': list(specs[n].shape)} for n in names],
      'num_classes': num_classes,
      'class_names': (None if class_names is None else
                      [str(c) for c in class_names]),
      'normalization': None if normalization is None else {
          n: {'mean': np.asarray(normalization[n][0], np.float64).tolist(),
              'std': np.asarray(normalization[n][1], np.float64).tolist()}
          for n in names if n in normalization},
      'metadata': dict(metadata or {}),
      'tff_hgb_version': tff_hgb.__version__,
  }
  check_writable(path)
  try:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # Written next to `path` and renamed into place: a crash mid-export
    # leaves the previous export (or none), never half of one.
    staging = tempfile.mkdtemp(prefix='.export_', dir=parent)
    try:
      keras_model.save(os.path.join(staging, MODEL_FILE))
      with open(os.path.join(staging, SPEC_JSON), 'w') as f:
        json.dump(spec, f, indent=1)
      if os.path.isdir(path):
        shutil.rmtree(path)
      os.replace(staging, path)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  except OSError as e:
    raise ExportError(f'cannot export the model to {path}: '
                      f'{e.strerror or e}.') from None
  return path


class ExportedModel:
  """A loaded export: call `predict` with {modality: array of examples}.

  Attributes:
    keras_model: the Keras model (flat inputs {m, m + '__mask'}; outputs
      {head: logits}), for users who feed it themselves.
    modalities: the `ModalitySpec`s, in the training data's order.
    class_names: the label of each class (None if the run did not know them).
    normalization: {modality: (mean, std)} applied to raw inputs, or None.
    metadata: what the exporting run recorded (algorithm, data set, rounds...).
  """

  def __init__(self, keras_model: tf.keras.Model, spec: Mapping[str, Any]):
    self.keras_model = keras_model
    self.modalities = [dataset_lib.ModalitySpec(m['name'], m['kind'],
                                                tuple(m['shape']))
                       for m in spec['modalities']]
    self.num_classes = int(spec['num_classes'])
    self.class_names = spec.get('class_names')
    self.normalization = None if spec.get('normalization') is None else {
        n: (np.asarray(v['mean'], np.float64), np.asarray(v['std'], np.float64))
        for n, v in spec['normalization'].items()}
    self.metadata = dict(spec.get('metadata') or {})

  @property
  def modality_names(self) -> list[str]:
    return [m.name for m in self.modalities]

  def _dataset(self, inputs: Mapping[str, Any],
               presence: Optional[Mapping[str, Any]]):
    """The inputs as the evaluation's examples (normalised; absent = mask 0)."""
    if not isinstance(inputs, Mapping) or not inputs:
      raise ValueError('predict needs a dict {modality: array}, with some of '
                       f'{self.modality_names}.')
    unknown = sorted(set(inputs) - set(self.modality_names))
    if unknown:
      raise ValueError(f'Unknown modalities {unknown}; the model takes '
                       f'{self.modality_names}.')
    unknown = sorted(set(presence or {}) - set(inputs))
    if unknown:
      raise ValueError(f'presence given for {unknown}, which are not in the '
                       'inputs.')
    sizes = {n: len(np.asarray(a)) for n, a in inputs.items()}
    if len(set(sizes.values())) != 1:
      raise ValueError(f'The modalities hold different numbers of examples: '
                       f'{sizes}.')
    n = next(iter(sizes.values()))
    features, flags = {}, {}
    for spec in self.modalities:
      if spec.name not in inputs:
        features[spec.name] = np.zeros((n,) + spec.shape, np.float32)
        flags[spec.name] = np.zeros(n, np.float32)
        continue
      array = np.asarray(inputs[spec.name])
      if array.shape[1:] != spec.shape:
        raise ValueError(f'{spec.name}: expected examples of shape '
                         f'{list(spec.shape)}, got {list(array.shape[1:])}.')
      flags[spec.name] = (np.ones(n, np.float32) if presence is None or
                          spec.name not in presence else
                          np.asarray(presence[spec.name], np.float32))
      if flags[spec.name].shape != (n,):
        raise ValueError(f'presence of {spec.name}: expected {n} flags, got '
                         f'shape {list(flags[spec.name].shape)}.')
      if self.normalization and spec.name in self.normalization:
        # As `normalization.normalize_features` did to the training data.
        mean, std = self.normalization[spec.name]
        array = normalization.standardize(array, spec.kind, mean, std,
                                     flags[spec.name])
      features[spec.name] = array.astype(np.float32)
    data = dataset_lib.MultiModalDataset(
        name='inputs', modalities=list(self.modalities), features=features,
        labels=np.zeros(n, np.int64),
        class_names=[str(c) for c in range(self.num_classes)], presence=flags)
    return dataset_lib.to_tf_dataset(data)

  def logits(self, inputs: Mapping[str, Any], *,
             presence: Optional[Mapping[str, Any]] = None,
             batch_size: int = 256) -> collections.OrderedDict:
    """{head: logits [N, classes]} of every head ('fusion' and each modality).

    Args:
      inputs: {modality: raw array [N, *shape]}; a modality left out is
        treated as missing for every example.
      presence: optional {modality: [N] flags}, 0 where that example lacks
        the modality (its values are then ignored).
      batch_size: examples per model call.
    """
    dataset = self._dataset(inputs, presence).batch(batch_size)
    outputs = collections.defaultdict(list)
    for batch in dataset:
      for head, value in self.keras_model(models.keras_inputs(batch),
                                          training=False).items():
        outputs[head].append(value.numpy())
    heads = self.modality_names + [models.FUSION]
    return collections.OrderedDict(
        (h, np.concatenate(outputs[h])) for h in heads)

  def predict(self, inputs: Mapping[str, Any], *,
              presence: Optional[Mapping[str, Any]] = None,
              batch_size: int = 256) -> np.ndarray:
    """The fusion head's class index [N] for each example (see `logits`)."""
    return self.logits(inputs, presence=presence,
                       batch_size=batch_size)[models.FUSION].argmax(axis=1)


def load_model(path: str, *,
               custom_objects: Optional[Mapping[str, Any]] = None
               ) -> ExportedModel:
  """Loads an export written by `export_model` (e.g. a run's `model/`).

  Args:
    path: the export directory.
    custom_objects: passed to `tf.keras.models.load_model`, for a model built
      with user encoders that use custom layers.

  Raises:
    ExportError: `path` is not an export, or one of an unknown format version
      (one line naming it).
  """
  spec_path = os.path.join(path, SPEC_JSON)
  if not os.path.isfile(spec_path):
    raise ExportError(f'{path} is not a tff_hgb model export (no {SPEC_JSON} '
                      'in it).')
  try:
    with open(spec_path) as f:
      spec = json.load(f)
  except (OSError, ValueError) as e:
    raise ExportError(f'{spec_path} is unreadable: {e}') from None
  if not isinstance(spec, dict) or spec.get('format') != FORMAT_NAME:
    raise ExportError(f'{spec_path} is not a tff_hgb model export.')
  version = spec.get('format_version')
  if version not in READABLE_VERSIONS:
    newer = isinstance(version, int) and version > FORMAT_VERSION
    raise ExportError(
        f'{path} has model format version {version!r}; this tff_hgb reads '
        f'{", ".join(map(str, READABLE_VERSIONS))}' +
        ('; upgrade tff_hgb to load it.' if newer else '.'))
  try:
    keras_model = tf.keras.models.load_model(
        os.path.join(path, MODEL_FILE), custom_objects=custom_objects,
        compile=False)
  except Exception as e:  # pylint: disable=broad-except
    # Keras reports an unknown custom layer as anything from ValueError to
    # "TypeError: 'str' object is not callable"; say what usually fixes it.
    raise ExportError(
        f'{os.path.join(path, MODEL_FILE)} cannot be loaded '
        f'({type(e).__name__}: {" ".join(str(e).split())}); a model with '
        'custom layers needs load_model(path, custom_objects={name: '
        'class}).') from None
  return ExportedModel(keras_model, spec)
