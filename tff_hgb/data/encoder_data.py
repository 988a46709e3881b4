"""Media of every kind as a user brings it (WAV, PNG frames, .npy flow), made
without downloads and converted by the real readers (issue 19's encoder checks).

`write_encoder_data(directory)` writes two sets, each as media files, a CSV
manifest and the TFRecords `media.write_tfrecords` makes of them:

  audio_image  `audio`: spoken-digit-like WAV recordings, synthesised (no
               registry package ships real speech; PLATFORM.md): each class
               is a sequence of two vowel-like syllables (harmonics of a pitch
               shaped by formants), so the ORDER of sounds, not only their
               mix, tells classes apart, as in words; every speaker has its
               own pitch, vocal-tract scale and noise, and clips have varying
               lengths and onsets, so short ones are padded. `rgb`: the
               scikit-learn `digits` images (8x8), upsampled to 16x16 RGB
               PNGs, one-frame clips. Paired by label (the issue's spoken
               digit + handwritten digit set); `client_id` = the speaker.
  motion       `rgb`: the digits moving across a 16x16 canvas (5 PNG frames
               per clip); `flow`: its optical flow estimated from the frame
               differences (normal flow, `normal_flow`), a .npy per clip.

The sequence kind's real data is embedded already (`watch`, `har`) and the
image kind's is `digits`.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import wave

import numpy as np
import tensorflow as tf

from tff_hgb.data import media

AUDIO_IMAGE = 'audio_image'
MOTION = 'motion'
NUM_CLASSES = 10
# The media settings each set is converted with (make_tfrecords flags).
AUDIO_IMAGE_MEDIA = media.MediaConfig(
    sample_rate=8000, num_mel_bins=32, num_frames=50, frame_size=256,
    frame_step=128, num_video_frames=1, image_height=16, image_width=16)
MOTION_MEDIA = media.MediaConfig(num_video_frames=4, image_height=16,
                                 image_width=16)
_SAMPLE_RATE = AUDIO_IMAGE_MEDIA.sample_rate
# Formants (F1, F2 in Hz) of five vowels (/a/, /e/, /i/, /o/, /u/).
_VOWELS = np.array([[730, 1090], [530, 1840], [270, 2290], [570, 840],
                    [300, 870]], np.float64)
# Class -> its two syllables' vowels; reversed pairs are different classes.
_SYLLABLES = ((0, 2), (2, 0), (1, 3), (3, 1), (0, 4), (4, 0), (1, 2), (2, 1),
              (3, 4), (4, 3))
_CANVAS = 16
_DIGIT_SIZE = 12
_MOTION_FRAMES = 5


@dataclasses.dataclass(frozen=True)
class EncoderData:
  """Where a set was written: its manifest and TFRecords (+ .json sidecar)."""

  name: str
  manifest: str
  tfrecord: str

  @property
  def dataset(self) -> str:
    """The --dataset value that loads it."""
    return f'tfrecord:{self.tfrecord}'


def write_encoder_data(directory: str, *, num_speakers: int = 12,
                       clips_per_class: int = 12, motion_clips: int = 1000,
                       seed: int = 0) -> list[EncoderData]:
  """Writes the `audio_image` and `motion` sets under `directory`.

  Args:
    directory: created if missing; each set gets a sub-directory.
    num_speakers: speakers (natural clients) of the audio.
    clips_per_class: recordings of each class per speaker.
    motion_clips: clips of the motion set.
    seed: fixes every random choice.

  Returns:
    The two sets, audio_image first.
  """
  if num_speakers < 1 or clips_per_class < 1 or motion_clips < NUM_CLASSES:
    raise ValueError('need num_speakers >= 1, clips_per_class >= 1 and '
                     f'motion_clips >= {NUM_CLASSES}.')
  images, labels = digit_images()
  rng = np.random.default_rng(seed)
  return [_write_audio_image(os.path.join(directory, AUDIO_IMAGE), images,
                             labels, num_speakers, clips_per_class, rng),
          _write_motion(os.path.join(directory, MOTION), images, labels,
                        motion_clips, rng)]


def digit_images() -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's digits as uint8 [N, 16, 16, 3] RGB images, and labels."""
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  bunch = sklearn_datasets.load_digits()
  gray = np.asarray(bunch.images, np.float32)[..., np.newaxis] / 16.0
  upsampled = tf.image.resize(gray, (16, 16), method='bilinear').numpy()
  rgb = np.repeat(np.clip(upsampled, 0, 1) * 255, 3, axis=-1)
  return np.round(rgb).astype(np.uint8), np.asarray(bunch.target, np.int64)


def synthesise_word(label: int, pitch: float, tract_scale: float,
                    noise: float, rng: np.random.Generator) -> np.ndarray:
  """One spoken-digit-like float waveform in [-1, 1] at _SAMPLE_RATE.

  Two syllables (the class's vowels), each of random length, with a gap and a
  random onset; harmonics of `pitch` (with vibrato) weighted by Gaussian
  formant resonances scaled by `tract_scale`, plus white noise.
  """
  pieces = [np.zeros(int(rng.uniform(0.0, 0.12) * _SAMPLE_RATE))]
  for i, vowel in enumerate(_SYLLABLES[label]):
    if i:
      pieces.append(np.zeros(int(rng.uniform(0.03, 0.08) * _SAMPLE_RATE)))
    length = int(rng.uniform(0.12, 0.26) * _SAMPLE_RATE)
    t = np.arange(length) / _SAMPLE_RATE
    f0 = pitch * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(f0) / _SAMPLE_RATE
    formants = _VOWELS[vowel] * tract_scale * rng.normal(1, 0.04, 2)
    syllable = np.zeros(length)
    for k in range(1, int(3800 / pitch)):
      gain = sum(np.exp(-((k * pitch - f) / 120.0) ** 2) for f in formants)
      syllable += (gain + 0.02) / k ** 0.5 * np.sin(k * phase)
    envelope = np.sin(np.pi * np.arange(length) / length) ** 0.5
    pieces.append(syllable * envelope)
  signal = np.concatenate(pieces)
  signal = signal / (np.abs(signal).max() + 1e-9) * rng.uniform(0.3, 0.9)
  signal = signal + rng.normal(0, noise, signal.shape)
  return np.clip(signal, -1, 1)


def write_wav(path: str, signal: np.ndarray, rate: int = _SAMPLE_RATE) -> None:
  """A mono 16-bit PCM WAV file of a float waveform in [-1, 1]."""
  with wave.open(path, 'wb') as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(rate)
    f.writeframes((np.clip(signal, -1, 1) * 32767).astype('<i2').tobytes())


def write_png(path: str, image: np.ndarray) -> None:
  """A uint8 [H, W, 3] image as a PNG file."""
  tf.io.write_file(path, tf.io.encode_png(image))


def normal_flow(frames: np.ndarray, eps: float = 1e-2) -> np.ndarray:
  """Optical flow [T-1, H, W, 2] of gray frames [T, H, W] from differences.

  The normal flow of the brightness-constancy equation Ix·u + Iy·v + It = 0:
  the flow along the image gradient, -It·∇I / (|∇I|² + eps), in pixels.
  """
  frames = np.asarray(frames, np.float64)
  flows = []
  for before, after in zip(frames[:-1], frames[1:]):
    gy, gx = np.gradient((before + after) / 2)
    dt = after - before
    scale = -dt / (gx ** 2 + gy ** 2 + eps)
    flows.append(np.stack([scale * gx, scale * gy], axis=-1))
  return np.stack(flows).astype(np.float32)


def _write_audio_image(directory, images, labels, num_speakers,
                       clips_per_class, rng) -> EncoderData:
  os.makedirs(directory, exist_ok=True)
  by_class = [rng.permutation(np.flatnonzero(labels == c))
              for c in range(NUM_CLASSES)]
  used = [0] * NUM_CLASSES
  rows = []
  for speaker in range(num_speakers):
    pitch = rng.uniform(90, 240)
    tract_scale = rng.uniform(0.85, 1.2)
    noise = rng.uniform(0.005, 0.05)
    for label in range(NUM_CLASSES):
      for take in range(clips_per_class):
        stem = f'{label}_speaker{speaker:02d}_{take:02d}'
        write_wav(os.path.join(directory, stem + '.wav'),
                  synthesise_word(label, pitch * rng.normal(1, 0.03),
                                  tract_scale, noise, rng))
        # Each image once while the class has unused ones (then reused).
        index = by_class[label][used[label] % len(by_class[label])]
        used[label] += 1
        os.makedirs(os.path.join(directory, stem), exist_ok=True)
        write_png(os.path.join(directory, stem, 'frame0.png'), images[index])
        rows.append({'audio': stem + '.wav', 'rgb': stem, 'label': label,
                     'client_id': f'speaker{speaker:02d}'})
  return _convert(directory, AUDIO_IMAGE, rows, AUDIO_IMAGE_MEDIA)


def _write_motion(directory, images, labels, num_clips, rng) -> EncoderData:
  os.makedirs(directory, exist_ok=True)
  order = rng.permutation(len(labels))[:num_clips]
  small = tf.image.resize(images.astype(np.float32) / 255.0,
                          (_DIGIT_SIZE, _DIGIT_SIZE)).numpy()
  room = _CANVAS - _DIGIT_SIZE
  rows = []
  for clip, index in enumerate(order):
    velocity = rng.choice([-1, 0, 1], size=2)
    if not velocity.any():
      velocity[rng.integers(2)] = 1
    start = rng.integers(0, room + 1, size=2)
    frames = np.zeros((_MOTION_FRAMES, _CANVAS, _CANVAS, 3), np.float32)
    for t in range(_MOTION_FRAMES):
      # Bounces off the canvas edges: positions fold back into [0, room].
      y, x = np.abs((start + t * velocity + room) % (2 * room) - room)
      frames[t, y:y + _DIGIT_SIZE, x:x + _DIGIT_SIZE] = small[index]
    stem = f'clip{clip:04d}'
    os.makedirs(os.path.join(directory, stem), exist_ok=True)
    pixels = np.round(frames * 255).astype(np.uint8)
    for t, frame in enumerate(pixels):
      write_png(os.path.join(directory, stem, f'frame{t}.png'), frame)
    # The flow of the frames as stored (what a flow tool would have read).
    np.save(os.path.join(directory, stem + '_flow.npy'),
            normal_flow(pixels[..., 0] / 255.0))
    rows.append({'rgb': stem, 'flow': stem + '_flow.npy',
                 'label': int(labels[index])})
  return _convert(directory, MOTION, rows, MOTION_MEDIA)


def _convert(directory: str, name: str, rows: list[dict],
             config: media.MediaConfig) -> EncoderData:
  """Writes the manifest and converts it with `media.write_tfrecords`."""
  manifest = os.path.join(directory, 'manifest.csv')
  with open(manifest, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  tfrecord = os.path.join(directory, f'{name}.tfrecord')
  media.write_tfrecords(manifest, tfrecord, config)
  return EncoderData(name, manifest, tfrecord)
