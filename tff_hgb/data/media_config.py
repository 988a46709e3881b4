"""How media clips become fixed-shape arrays (`MediaConfig`) and which reader
makes which modality kind; TensorFlow-free, so make_tfrecords checks flags first.
"""

from __future__ import annotations

import dataclasses
import math

from tff_hgb.data import dataset

AUDIO = 'audio'
RGB = 'rgb'
FLOW = 'flow'
READERS = {AUDIO: dataset.SPECTROGRAM, RGB: dataset.FRAMES, FLOW: dataset.FLOW}
# Floor added to mel energies before the log. Clips shorter than num_frames
# are padded with frames of exactly log(floor) in every bin (silence, not 0,
# which would be a loud, flat frame); normalisation leaves such frames out of
# its statistics (`normalization.normalize_features`).
LOG_MEL_FLOOR = 1e-6
LOG_MEL_PADDING = math.log(LOG_MEL_FLOOR)


@dataclasses.dataclass(frozen=True)
class MediaConfig:
  """How clips are turned into fixed-shape arrays."""

  sample_rate: int = 16000      # Hz, audio is resampled to it
  num_mel_bins: int = 64
  num_frames: int = 100         # spectrogram frames kept (crop / pad)
  frame_size: int = 400         # samples per STFT window (25 ms at 16 kHz)
  frame_step: int = 160         # samples between windows (10 ms at 16 kHz)
  num_video_frames: int = 8     # RGB / flow frames sampled per clip
  image_height: int = 64
  image_width: int = 64

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) < 1:
        raise dataset.DataError(f'{field.name} must be >= 1, got '
                        f'{getattr(self, field.name)}.')

  @property
  def fft_size(self) -> int:
    """The smallest power of two that holds one window."""
    return 1 << (self.frame_size - 1).bit_length()

  def shape_of(self, reader: str) -> tuple[int, ...]:
    if reader == AUDIO:
      return (self.num_frames, self.num_mel_bins)
    channels = 3 if reader == RGB else 2
    return (self.num_video_frames, self.image_height, self.image_width,
            channels)
