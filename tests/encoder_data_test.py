"""tff_hgb/data/encoder_data: media of every kind through the real readers.

The files it writes (WAV, PNG frames, .npy flow) read back through
make_tfrecords' readers as what was written: the WAV as a spectrogram of the
synthesised signal, padded when short; the PNGs as the digit images; the
flow as the frame differences' normal flow; the sets pair modalities by label
and carry speakers as natural clients.
"""

import csv
import os

import numpy as np
import pytest

from tff_hgb.data import datasets
from tff_hgb.data import encoder_data
from tff_hgb.data import media
from tff_hgb.data import media_config


@pytest.fixture(scope='module')
def written(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('encoder_data'))
  return encoder_data.write_encoder_data(directory, num_speakers=2,
                                         clips_per_class=1, motion_clips=10,
                                         seed=3)


def _manifest(data):
  with open(data.manifest, newline='') as f:
    return list(csv.DictReader(f))


def test_audio_image_set_pairs_speech_and_digits_by_label(written):
  audio_image, _ = written
  ds, _ = datasets.load(audio_image.dataset, test_fraction=0.0,
                        normalize=False)
  config = encoder_data.AUDIO_IMAGE_MEDIA
  assert [(m.name, m.kind, m.shape) for m in ds.modalities] == [
      ('audio', 'spectrogram', (config.num_frames, config.num_mel_bins)),
      ('rgb', 'frames', (1, 16, 16, 3))]
  assert len(ds) == 2 * encoder_data.NUM_CLASSES
  assert sorted(set(ds.client_ids)) == ['speaker00', 'speaker01']
  images, labels = encoder_data.digit_images()
  base = os.path.dirname(audio_image.manifest)
  for i, row in enumerate(_manifest(audio_image)):
    assert ds.labels[i] == int(row['label'])
    # The PNG frame is one of the digit images of the row's label.
    frame = np.round(ds.features['rgb'][i, 0] * 255)
    matches = np.flatnonzero(
        np.all(images.reshape(len(images), -1) == frame.reshape(-1), axis=1))
    assert matches.size and set(labels[matches]) == {ds.labels[i]}, i
    # The WAV decodes to the same log-mel spectrogram as the set holds.
    np.testing.assert_allclose(
        media.log_mel_spectrogram(os.path.join(base, row['audio']), config),
        ds.features['audio'][i], atol=1e-4)
  padding = np.all(ds.features['audio'] ==
                   np.float32(media_config.LOG_MEL_PADDING), axis=2)
  assert padding.any(axis=1).mean() > 0.5  # most clips are short: padded
  assert not padding[:, :5].all(axis=1).any()  # and none is only padding


def test_motion_flow_is_the_normal_flow_of_the_frames(written):
  _, motion = written
  ds, _ = datasets.load(motion.dataset, test_fraction=0.0, normalize=False)
  assert [(m.name, m.kind, m.shape) for m in ds.modalities] == [
      ('rgb', 'frames', (4, 16, 16, 3)), ('flow', 'flow', (4, 16, 16, 2))]
  base = os.path.dirname(motion.manifest)
  for i, row in enumerate(_manifest(motion)):
    frames = media.rgb_frames(os.path.join(base, row['rgb'] + '/*.png'),
                              media.MediaConfig(num_video_frames=5,
                                                image_height=16,
                                                image_width=16))
    flow = encoder_data.normal_flow(frames[..., 0])
    np.testing.assert_allclose(np.load(os.path.join(base, row['flow'])), flow,
                               atol=1e-4)
    # Frames move: consecutive frames differ, so the flow is not zero.
    assert np.abs(flow).max() > 0.1
    np.testing.assert_allclose(ds.features['flow'][i], flow[[0, 1, 2, 3]],
                               atol=1e-4)


def test_normal_flow_recovers_a_shift_along_the_gradient():
  x = np.arange(12, dtype=np.float64)
  ramp = np.tile(x, (12, 1))          # brightness rises along x
  frames = np.stack([ramp, ramp - 1])  # the pattern moved by +1 px in x
  flow = encoder_data.normal_flow(frames, eps=0.0)
  np.testing.assert_allclose(flow[0, 2:-2, 2:-2, 0], 1.0)
  np.testing.assert_allclose(flow[0, 2:-2, 2:-2, 1], 0.0)
