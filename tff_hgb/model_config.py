"""The sizes of the default encoders (`tff_hgb.models`), as a frozen config.

Free of TensorFlow, like `hgb_config`, so that binaries check their flags
before loading it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of the default encoders (small: the data sets are small)."""

  feature_dim: int = 32
  hidden_units: int = 64
  conv_filters: int = 16
  dropout: float = 0.0
  seed: int = 0
