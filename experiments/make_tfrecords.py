r"""Converts a manifest of a user's media clips into TFRecords + a JSON sidecar.

  python -m experiments.make_tfrecords --manifest=clips.csv \
      --output=data/clips.tfrecord --sample_rate=16000 --num_mel_bins=64 \
      --num_frames=100 --frame_size=400 --frame_step=160 \
      --num_video_frames=8 --image_size=64

The manifest has one row per clip: a path column per modality (named `audio`,
`rgb` or `flow`, or mapped with --modality_columns=mic=audio,cam=rgb), a
`label` column and optionally `client_id` (see tff_hgb/data/media.py). Train on
the result with `--dataset=tfrecord:data/clips.tfrecord`.
"""

from absl import flags

from experiments import startup
from tff_hgb.data import media_config

_DEFAULTS = media_config.MediaConfig()

_MANIFEST = flags.DEFINE_string('manifest', None, 'The CSV manifest.')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'TFRecord file to write (sidecar: <output>.json).')
_SAMPLE_RATE = flags.DEFINE_integer(
    'sample_rate', _DEFAULTS.sample_rate, 'Audio is resampled to this (Hz).')
_NUM_MEL_BINS = flags.DEFINE_integer(
    'num_mel_bins', _DEFAULTS.num_mel_bins, 'Mel bins of the spectrogram.')
_NUM_FRAMES = flags.DEFINE_integer(
    'num_frames', _DEFAULTS.num_frames,
    'Spectrogram frames per clip (cropped or padded with silence).')
_FRAME_SIZE = flags.DEFINE_integer(
    'frame_size', _DEFAULTS.frame_size, 'STFT window, in samples.')
_FRAME_STEP = flags.DEFINE_integer(
    'frame_step', _DEFAULTS.frame_step, 'STFT hop, in samples.')
_NUM_VIDEO_FRAMES = flags.DEFINE_integer(
    'num_video_frames', _DEFAULTS.num_video_frames,
    'RGB / optical-flow frames sampled uniformly per clip.')
_IMAGE_SIZE = flags.DEFINE_integer(
    'image_size', _DEFAULTS.image_height,
    'Frames are resized to image_size x image_size.')
_MODALITY_COLUMNS = flags.DEFINE_list(
    'modality_columns', [],
    'column=reader pairs (readers: audio, rgb, flow) for columns not named '
    'after their reader.')


def check_flags() -> tuple[media_config.MediaConfig, dict[str, str]]:
  """The media settings and column readers (TensorFlow-free; startup.run)."""
  try:
    if not _MANIFEST.value or not _OUTPUT.value:
      raise ValueError('--manifest and --output are required')
    columns = {}
    for pair in _MODALITY_COLUMNS.value:
      column, sep, reader = pair.partition('=')
      if not sep or not column or not reader:
        raise ValueError(f'--modality_columns: {pair!r} is not column=reader')
      columns[column] = reader
    config = media_config.MediaConfig(
        sample_rate=_SAMPLE_RATE.value, num_mel_bins=_NUM_MEL_BINS.value,
        num_frames=_NUM_FRAMES.value, frame_size=_FRAME_SIZE.value,
        frame_step=_FRAME_STEP.value,
        num_video_frames=_NUM_VIDEO_FRAMES.value,
        image_height=_IMAGE_SIZE.value, image_width=_IMAGE_SIZE.value)
  except ValueError as e:  # DataError is a ValueError.
    raise SystemExit(f'error: {e}') from None
  return config, columns


def main(checked: tuple[media_config.MediaConfig, dict[str, str]]) -> None:
  # Reading media needs TensorFlow, loaded once the flags were checked.
  from tff_hgb.data import datasets  # pylint: disable=g-import-not-at-top
  from tff_hgb.data import media  # pylint: disable=g-import-not-at-top
  config, columns = checked
  try:
    converted = media.write_tfrecords(_MANIFEST.value, _OUTPUT.value, config,
                                      columns)
  except ValueError as e:  # DataError is a ValueError.
    raise SystemExit(f'error: {e}') from None
  print(f'wrote {_OUTPUT.value} and {media.sidecar_path(_OUTPUT.value)}\n'
        + datasets.describe(converted))


if __name__ == '__main__':
  startup.run(main, check_flags)
