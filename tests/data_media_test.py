"""A user's media: WAV + PNG + optical flow -> TFRecords -> data set; errors."""

import os
import subprocess
import sys
import wave

import numpy as np
import pytest
import tensorflow as tf

from tff_hgb.data import dataset
from tff_hgb.data import datasets
from tff_hgb.data import media

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small settings so conversion is fast: 16 mel bins, 20 spectrogram frames of
# 256 samples every 128 at 16 kHz, 4 video frames of 8x8.
_CONFIG = media.MediaConfig(sample_rate=16000, num_mel_bins=16, num_frames=20,
                            frame_size=256, frame_step=128,
                            num_video_frames=4, image_height=8, image_width=8)
_FLOW_SHAPE = (5, 20, 30, 2)


def _write_wav(path, frequency, seconds, rate, channels=1):
  t = np.arange(int(seconds * rate)) / rate
  tone = (0.5 * np.sin(2 * np.pi * frequency * t) * 32767).astype(np.int16)
  with wave.open(str(path), 'wb') as f:
    f.setnchannels(channels)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())


def _write_png_frames(directory, colours):
  os.makedirs(directory)
  for i, colour in enumerate(colours):
    image = np.tile(np.array(colour, np.uint8), (20, 30, 1))
    tf.io.write_file(os.path.join(directory, f'frame_{i:03d}.png'),
                     tf.io.encode_png(image))


def _write_manifest(path, header, rows):
  with open(path, 'w') as f:
    f.write(','.join(header) + '\n')
    for row in rows:
      f.write(','.join(row) + '\n')
  return str(path)


@pytest.fixture()
def clips(tmp_path):
  """Three clips: low tone, high stereo tone (no flow), short low tone."""
  _write_wav(tmp_path / 'low.wav', 440, 0.5, 8000)  # resampled to 16 kHz
  _write_wav(tmp_path / 'high.wav', 3000, 0.5, 16000, channels=2)
  _write_wav(tmp_path / 'short.wav', 440, 0.1, 16000)
  colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
  for clip in ('a', 'b', 'c'):
    _write_png_frames(tmp_path / f'frames_{clip}', colours)
  flow = np.zeros(_FLOW_SHAPE, np.float32)
  flow[..., 0], flow[..., 1] = 3.0, -2.0  # pixels right, pixels up
  np.save(tmp_path / 'a.npy', flow)
  np.save(tmp_path / 'c.npy', flow)
  return _write_manifest(
      tmp_path / 'clips.csv', ['audio', 'rgb', 'flow', 'label', 'client_id'],
      [['low.wav', 'frames_a', 'a.npy', 'walk', 'alice'],
       ['high.wav', str(tmp_path / 'frames_b' / '*.png'), '', 'run', 'bob'],
       ['short.wav', 'frames_c', 'c.npy', 'walk', 'bob']])


def test_round_trip_shapes_and_values(clips, tmp_path):
  output = str(tmp_path / 'out' / 'clips.tfrecord')
  written = media.write_tfrecords(clips, output, _CONFIG)
  ds = media.load_tfrecords(output)

  assert os.path.exists(output + '.json')
  assert [(m.name, m.kind, m.shape) for m in ds.modalities] == [
      ('audio', 'spectrogram', (20, 16)),
      ('rgb', 'frames', (4, 8, 8, 3)),
      ('flow', 'flow', (4, 8, 8, 2))]
  assert ds.class_names == ['run', 'walk']
  assert ds.labels.tolist() == [1, 0, 1]
  assert ds.client_ids.tolist() == ['alice', 'bob', 'bob']
  for m in ds.modality_names:
    np.testing.assert_array_equal(ds.features[m], written.features[m])

  # RGB: 4 frames sampled uniformly from 3 (indices 0, 1, 1, 2), in [0, 1].
  expected_colours = np.array([(1, 0, 0), (0, 1, 0), (0, 1, 0), (0, 0, 1)])
  for clip in range(3):
    np.testing.assert_allclose(ds.features['rgb'][clip],
                               np.broadcast_to(expected_colours[:, None, None],
                                               (4, 8, 8, 3)), atol=1e-6)

  # Flow: displacements rescaled with the image (30 -> 8 wide, 20 -> 8 high);
  # the clip without flow is zero-filled and masked.
  np.testing.assert_allclose(ds.features['flow'][0, ..., 0], 3.0 * 8 / 30,
                             rtol=1e-5)
  np.testing.assert_allclose(ds.features['flow'][0, ..., 1], -2.0 * 8 / 20,
                             rtol=1e-5)
  assert ds.presence['flow'].tolist() == [1.0, 0.0, 1.0]
  assert not ds.features['flow'][1].any()

  # Audio: the 3 kHz tone peaks in a higher mel bin than the 440 Hz one, and
  # the 0.1 s clip (about 11 frames) is padded with silence to 20 frames.
  spectrogram = ds.features['audio']
  low_peak = spectrogram[0, 5].argmax()
  high_peak = spectrogram[1, 5].argmax()
  assert high_peak > low_peak + 3
  silence = np.log(1e-6)
  assert np.allclose(spectrogram[2, -5:], silence)
  assert not np.allclose(spectrogram[2, :5], silence)
  assert not np.allclose(spectrogram[0, -5:], silence)  # 0.5 s: cropped


def test_loads_by_name_with_split_and_normalisation(clips, tmp_path):
  output = str(tmp_path / 'clips.tfrecord')
  media.write_tfrecords(clips, output, _CONFIG)
  train, test = datasets.load(f'tfrecord:{output}', test_fraction=0.0)
  assert len(train) == 3 and len(test) == 0
  assert train.name == 'clips-train'
  np.testing.assert_allclose(
      train.features['rgb'].reshape(-1, 3).mean(axis=0), 0, atol=1e-5)
  # Statistics come from present values only, and absent ones stay zero.
  assert not train.features['flow'][1].any()
  present_flow = train.features['flow'][[0, 2]].reshape(-1, 2)
  np.testing.assert_allclose(present_flow.mean(axis=0), 0, atol=1e-5)


def test_modality_columns_map_other_names(tmp_path):
  _write_wav(tmp_path / 'a.wav', 440, 0.2, 16000)
  manifest = _write_manifest(tmp_path / 'm.csv', ['mic', 'label'],
                             [['a.wav', '2']])
  ds = media.write_tfrecords(manifest, str(tmp_path / 'o.tfrecord'), _CONFIG,
                             {'mic': 'audio'})
  assert ds.modalities[0] == dataset.ModalitySpec('mic', 'spectrogram',
                                                  (20, 16))
  assert ds.class_names == ['0', '1', '2'] and ds.labels.tolist() == [2]


@pytest.mark.parametrize('header, row, message', [
    (['audio', 'label'], ['missing.wav', 'a'],
     r'row 1: audio file .*missing.wav does not exist'),
    (['audio', 'label'], ['garbage.wav', 'a'],
     r'row 1: cannot read audio file .*garbage.wav'),
    (['rgb', 'label'], ['no_frames', 'a'], r'row 1: .*no_frames: no'),
    (['flow', 'label'], ['bad_flow.npy', 'a'],
     r'row 1: .*bad_flow.npy: optical flow must be'),
    (['video', 'label'], ['x', 'a'], "unknown modality column 'video'"),
    (['audio', 'label'], ['', 'a'], 'row 1: the clip has no media'),
    (['audio', 'label'], ['ok.wav', ''], r'row 1: bad label \(empty\)'),
    (['audio', 'label'], ['ok.wav', '-1'], "row 1: bad label '-1'"),
    (['audio'], ['ok.wav'], "no 'label' column"),
])
def test_errors_name_file_and_row(tmp_path, header, row, message):
  _write_wav(tmp_path / 'ok.wav', 440, 0.1, 16000)
  (tmp_path / 'garbage.wav').write_bytes(b'not audio' * 10)
  os.makedirs(tmp_path / 'no_frames')
  np.save(tmp_path / 'bad_flow.npy', np.zeros((2, 4, 4, 3)))
  manifest = _write_manifest(tmp_path / 'm.csv', header, [row])
  with pytest.raises(dataset.DataError, match=message) as error:
    media.write_tfrecords(manifest, str(tmp_path / 'o.tfrecord'), _CONFIG)
  assert 'm.csv' in str(error.value)


def test_mixed_labels_are_rejected(tmp_path):
  _write_wav(tmp_path / 'ok.wav', 440, 0.1, 16000)
  manifest = _write_manifest(tmp_path / 'm.csv', ['audio', 'label'],
                             [['ok.wav', 'walk'], ['ok.wav', '3']])
  with pytest.raises(dataset.DataError, match="row 2: bad label '3'"):
    media.write_tfrecords(manifest, str(tmp_path / 'o.tfrecord'), _CONFIG)


def test_reader_errors(tmp_path):
  with pytest.raises(dataset.DataError, match='nothing.tfrecord: no such'):
    media.load_tfrecords(str(tmp_path / 'nothing.tfrecord'))
  orphan = tmp_path / 'orphan.tfrecord'
  orphan.write_bytes(b'')
  with pytest.raises(dataset.DataError, match='orphan.tfrecord.json: missing'):
    media.load_tfrecords(str(orphan))


def test_make_tfrecords_binary(clips, tmp_path):
  output = str(tmp_path / 'bin.tfrecord')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  ok = subprocess.run(
      [sys.executable, '-m', 'experiments.make_tfrecords',
       f'--manifest={clips}', f'--output={output}', '--num_mel_bins=16',
       '--num_frames=20', '--frame_size=256', '--frame_step=128',
       '--num_video_frames=4', '--image_size=8'],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert 'modality rgb: frames [4, 8, 8, 3]' in ok.stdout
  assert media.load_tfrecords(output).labels.tolist() == [1, 0, 1]

  bad = subprocess.run(
      [sys.executable, '-m', 'experiments.make_tfrecords',
       f'--manifest={tmp_path / "none.csv"}', f'--output={output}'],
      cwd=_REPO, env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'none.csv: no such manifest' in bad.stderr
  assert 'Traceback' not in bad.stderr
