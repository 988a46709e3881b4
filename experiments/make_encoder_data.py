r"""Writes media of every kind (WAV, PNG frames, .npy flow) for the encoder checks.

  python -m experiments.make_encoder_data --output_dir=/tmp/encoder_data
  python -m experiments.check_encoders \
      --dataset=tfrecord:/tmp/encoder_data/audio_image/audio_image.tfrecord

No downloads: synthesised spoken-digit-like audio paired with scikit-learn's
digit images, and moving digits with their optical flow, converted through
make_tfrecords' readers (tff_hgb/data/encoder_data.py says what each holds).
"""

from absl import flags

from experiments import startup

_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Directory to write the sets into.')
_NUM_SPEAKERS = flags.DEFINE_integer(
    'num_speakers', 12, 'Speakers (natural clients) of the audio set.')
_CLIPS_PER_CLASS = flags.DEFINE_integer(
    'clips_per_class', 12, 'Recordings of each digit per speaker.')
_MOTION_CLIPS = flags.DEFINE_integer('motion_clips', 1000,
                                     'Clips of the motion (frames + flow) set.')
_SEED = flags.DEFINE_integer('seed', 0, 'Fixes every random choice.')


def check_flags() -> None:
  """TensorFlow-free checks; a one-line error names the flag."""
  if not _OUTPUT_DIR.value:
    raise SystemExit('error: --output_dir is required.')
  for flag, value, low in (('num_speakers', _NUM_SPEAKERS.value, 1),
                           ('clips_per_class', _CLIPS_PER_CLASS.value, 1),
                           ('motion_clips', _MOTION_CLIPS.value, 10)):
    if value < low:
      raise SystemExit(f'error: --{flag} must be >= {low}, got {value}.')


def main(unused_checked) -> None:
  from tff_hgb.data import datasets  # pylint: disable=g-import-not-at-top
  from tff_hgb.data import encoder_data  # pylint: disable=g-import-not-at-top
  written = encoder_data.write_encoder_data(
      _OUTPUT_DIR.value, num_speakers=_NUM_SPEAKERS.value,
      clips_per_class=_CLIPS_PER_CLASS.value,
      motion_clips=_MOTION_CLIPS.value, seed=_SEED.value)
  for data in written:
    full, _ = datasets.load(data.dataset, test_fraction=0.0, normalize=False)
    print(f'--dataset={data.dataset}\n{datasets.describe(full)}')


if __name__ == '__main__':
  startup.run(main, check_flags)
