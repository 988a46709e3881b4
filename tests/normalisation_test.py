"""Every loader's features are z-scored with the training pool's statistics.

One check for each loader (embedded sets, a user's .npz, a user's media via
TFRecords): after the test hold-out, the training pool has zero mean and unit
variance per channel (the last axis; per feature for vectors) over the
examples where the modality is present, and the test set is the raw test set
scaled with the training statistics, which differ from statistics that would
have included it. Spectrogram statistics leave out the frames that pad short
clips (issue 19).
"""

import os
import wave

import numpy as np
import pytest
import tensorflow as tf

from tff_hgb.data import datasets
from tff_hgb.data import media
from tff_hgb.data import media_config

SEED = 5
# Small media settings: 8 mel bins, 12 frames of 256 samples every 128 at
# 16 kHz (short clips are padded with log(floor) silence), 2 frames of 4x4.
_MEDIA = media.MediaConfig(sample_rate=16000, num_mel_bins=8, num_frames=12,
                           frame_size=256, frame_step=128, num_video_frames=2,
                           image_height=4, image_width=4)


def _padding_frames(channels):
  return np.all(channels == np.float32(media_config.LOG_MEL_PADDING), axis=-1)


def _channel_stats(features, presence, kind='', raw=None):
  """Per-channel mean and std; for spectrograms over the frames that are not
  padding in `raw` (the unscaled features; default `features`)."""
  values = np.asarray(features, np.float64)[presence > 0]
  channels = values.reshape(-1, values.shape[-1])
  if kind == 'spectrogram':
    raw = features if raw is None else raw
    raw_channels = np.asarray(raw)[presence > 0].reshape(channels.shape)
    channels = channels[~_padding_frames(raw_channels)]
  return channels.mean(axis=0), channels.std(axis=0)


def _check(name, **kwargs):
  raw_train, raw_test = datasets.load(name, seed=SEED, normalize=False,
                                      **kwargs)
  train, test = datasets.load(name, seed=SEED, **kwargs)
  assert len(test) > 0
  for spec in train.modalities:
    m = spec.name
    mean, std = _channel_stats(raw_train.features[m], raw_train.presence[m],
                               spec.kind)
    constant = std <= 1e-8
    scaled_mean, scaled_std = _channel_stats(train.features[m],
                                             train.presence[m], spec.kind,
                                             raw=raw_train.features[m])
    np.testing.assert_allclose(scaled_mean, 0, atol=1e-4, err_msg=m)
    np.testing.assert_allclose(scaled_std, np.where(constant, 0, 1),
                               atol=1e-3, err_msg=m)
    std = np.where(constant, 1.0, std)
    flags = raw_test.presence[m].reshape((-1,) + (1,) * len(spec.shape))
    expected = (raw_test.features[m] - mean) / std * flags
    if spec.kind == 'spectrogram':  # padding frames become zeros
      expected[_padding_frames(raw_test.features[m])] = 0.0
    np.testing.assert_allclose(test.features[m], expected,
                               rtol=1e-4, atol=1e-4, err_msg=m)
    np.testing.assert_allclose(train.normalization[m][0], mean, rtol=1e-6,
                               atol=1e-9)
    # The test set was not used: pooled statistics would differ.
    pooled_mean, _ = _channel_stats(
        np.concatenate([raw_train.features[m], raw_test.features[m]]),
        np.concatenate([raw_train.presence[m], raw_test.presence[m]]),
        spec.kind)
    assert np.abs(pooled_mean - mean).max() > 1e-6, m
  return raw_train, train


@pytest.mark.parametrize('name', ['htad', 'watch', 'basicmotions', 'har',
                                  'digits', 'synthetic'])
def test_embedded_data_sets(name):
  _check(name)


def test_users_npz(tmp_path):
  rng = np.random.default_rng(0)
  path = str(tmp_path / 'mine.npz')
  np.savez(path, labels=np.arange(60) % 3,
           audio=rng.normal(3.0, 2.0, (60, 10, 4)),
           tabular=rng.normal(-1.0, 5.0, (60, 6)),
           video=rng.normal(0.5, 0.1, (60, 2, 3, 3, 3)))
  _check(f'npz:{path}')


def _write_wav(path, frequency, seconds, rate=16000):
  t = np.arange(int(seconds * rate)) / rate
  tone = (0.5 * np.sin(2 * np.pi * frequency * t) * 32767).astype(np.int16)
  with wave.open(str(path), 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes(tone.tobytes())


def test_users_media_through_tfrecords(tmp_path):
  rng = np.random.default_rng(1)
  rows = []
  for i in range(12):
    label = i % 2
    # Some clips are shorter than 12 frames: padded with the log-mel floor.
    _write_wav(tmp_path / f'{i}.wav', 500 + 2500 * label + 40 * i,
               0.05 + 0.01 * i)
    directory = tmp_path / f'frames_{i}'
    os.makedirs(directory)
    for j in range(2):
      image = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
      tf.io.write_file(str(directory / f'{j}.png'), tf.io.encode_png(image))
    rows.append(f'{i}.wav,frames_{i},{"ab"[label]},c{i % 3}')
  manifest = tmp_path / 'clips.csv'
  manifest.write_text('audio,rgb,label,client_id\n' + '\n'.join(rows) + '\n')
  output = str(tmp_path / 'clips.tfrecord')
  media.write_tfrecords(str(manifest), output, _MEDIA)
  raw_train, train = _check(f'tfrecord:{output}')
  # Short clips were padded, and the padding is not in the statistics: with
  # it, every mel bin's mean would be lower and its std wider.
  audio = raw_train.features['audio'].astype(np.float64)
  frames = audio.reshape(-1, audio.shape[-1])
  padded = _padding_frames(frames)
  assert 0 < padded.sum() < len(frames)
  kept_mean, kept_std = train.normalization['audio']
  np.testing.assert_allclose(kept_mean, frames[~padded].mean(axis=0),
                             rtol=1e-6)
  assert np.all(frames.mean(axis=0) < kept_mean - 0.5)
  assert np.all(frames.std(axis=0) > kept_std)
  # The padding frames are zeros after scaling (no sound, the mean), the
  # others scaled with the statistics of the sound.
  scaled = train.features['audio'].reshape(frames.shape)
  np.testing.assert_array_equal(scaled[padded], 0.0)
  np.testing.assert_allclose(scaled[~padded],
                             (frames[~padded] - kept_mean) / kept_std,
                             rtol=1e-4, atol=1e-4)
