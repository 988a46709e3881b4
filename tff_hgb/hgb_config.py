"""What an HGB process is configured with, decided once (ALGORITHM.md §4–§5b).

The head-blend and client-weighting choices as enums, the numeric
hyper-parameters (`HGBHParams`, carried in the process state), the modes, and
`HGBConfig`: one frozen, self-validating value that the client work
(`tff_hgb.client_work`) and the aggregator (`tff_hgb.hgb`) both read, so how
the server weights a client is decided in one place
(`HGBConfig.client_weighting`).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import NamedTuple, Optional

import numpy as np

# The OGR guards' defaults (`tff_hgb.ogr` uses them); here so that this module,
# which the flag parser reads, stays free of TensorFlow.
DEFAULT_EPSILON = 1e-8
DEFAULT_DELTA = 1e-8


class Blend(enum.StrEnum):
  """How the heads' losses are weighted during local training."""
  OGR = 'ogr'          # M-GB: z^k from ΔG/ΔO² after the warm-up.
  PRIOR = 'prior'      # The global prior z̄ (restricted to H_k) throughout.
  UNIFORM = 'uniform'  # Equal weights over H_k (C-GB only; fixed aux heads).
  FUSED = 'fused'      # The fusion head only (the paper's FedAvg).


class ClientWeighting(enum.StrEnum):
  """What a client reports as its update weight.

  HGB's counterpart of `tff.learning.ClientWeighting`: the weight is chosen by
  this value in `client_work.choose_client_weight`, as TFF's client works
  choose theirs from a `ClientWeighting`.
  """
  OGR = 'ogr'                    # C-GB: u_k = ΔG/(2ΔO²) + δ·n_k.
  NUM_EXAMPLES = 'num_examples'  # FedAvg's weighting.
  # OrderedDict(num_examples, ogr, modalities), for
  # `tff_hgb.aggregation.build_structured_mean` (λ-mixing, modality-aware).
  STRUCTURED = 'structured'


BLENDS = tuple(Blend)
# The weightings a mode chooses between (STRUCTURED follows from the switches).
WEIGHTINGS = (ClientWeighting.OGR, ClientWeighting.NUM_EXAMPLES)


@dataclasses.dataclass(frozen=True)
class HGBHParams:
  """Numeric hyper-parameters; they live in the process state (set_hparams).

  Attributes:
    local_epochs: E, local epochs per round.
    warmup_fraction: φ, warm-up steps as a fraction of one local epoch.
    epsilon: floor of ΔO² (§3).
    delta: δ in u_k = ΔG/(2ΔO²) + δ·n_k (fallback to example counts).
    blend_smoothing: γ, z ← (1−γ)·z + γ·uniform (§5b; 0 = paper).
    fusion_weight_floor: z_fusion ≥ floor (§5b; 0 = paper).
    blend_scale: the blended loss is multiplied by this (§5b; 1 = sum to 1).
    delta_o_relative_floor: κ, ΔO² ≥ κ·mean over heads (§5b; 0 = absolute only).
    prior_momentum: η, z̄ ← (1−η)·z̄ + η·(this round's mean z^k): an EMA of the
      blend across rounds (§5b; 1 = paper, the round's mean replaces z̄).
  """

  local_epochs: int = 1
  warmup_fraction: float = 0.5
  epsilon: float = DEFAULT_EPSILON
  delta: float = DEFAULT_DELTA
  blend_smoothing: float = 0.0
  fusion_weight_floor: float = 0.0
  blend_scale: float = 1.0
  delta_o_relative_floor: float = 0.0
  prior_momentum: float = 1.0

  def __post_init__(self):
    if self.local_epochs < 1:
      raise ValueError(f'local_epochs must be ≥ 1, got {self.local_epochs}.')
    for name in ('warmup_fraction', 'blend_smoothing', 'prior_momentum',
                 'fusion_weight_floor'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'{name} must lie in [0, 1], got '
                         f'{getattr(self, name)}.')
    for name in ('epsilon', 'delta', 'blend_scale', 'delta_o_relative_floor'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be ≥ 0, got {getattr(self, name)}.')

  def as_state(self) -> collections.OrderedDict:
    return collections.OrderedDict(
        local_epochs=np.int32(self.local_epochs),
        warmup_fraction=np.float32(self.warmup_fraction),
        epsilon=np.float32(self.epsilon),
        delta=np.float32(self.delta),
        blend_smoothing=np.float32(self.blend_smoothing),
        fusion_weight_floor=np.float32(self.fusion_weight_floor),
        blend_scale=np.float32(self.blend_scale),
        delta_o_relative_floor=np.float32(self.delta_o_relative_floor),
        prior_momentum=np.float32(self.prior_momentum),
    )


class Mode(NamedTuple):
  """A mode: how heads are blended on clients, how the server weights them."""
  blend: Blend
  weighting: ClientWeighting


MODES = {
    # The paper's algorithm, literally (ALGORITHM.md §4, no §5b stabiliser).
    'hgb_paper': Mode(Blend.OGR, ClientWeighting.OGR),
    # The default configuration (see DEFAULT_HGB_HPARAMS).
    'hgb': Mode(Blend.OGR, ClientWeighting.OGR),
    # Ablations of the paper's Table III.
    'm_gb': Mode(Blend.OGR, ClientWeighting.NUM_EXAMPLES),
    'c_gb': Mode(Blend.UNIFORM, ClientWeighting.OGR),
    # Blending switched off: fused loss, example-count weights (= FedAvg).
    'fused': Mode(Blend.FUSED, ClientWeighting.NUM_EXAMPLES),
    # Fixed, equal head weights with example-count weights.
    'all_heads': Mode(Blend.UNIFORM, ClientWeighting.NUM_EXAMPLES),
}

# The literal paper: no stabiliser.
PAPER_HPARAMS = HGBHParams()
# The default `hgb` configuration, chosen by the study of ALGORITHM.md §5b
# (study v1, docs/STUDY_V1.md) among four stabilised candidates on validation
# data of htad Mixed-B and the synthetic paper regime in case A only: OGR
# blending of the heads with a floor of ~1/|H| on the fusion head's weight and
# an EMA (η = 0.5) of the blend across rounds, and clients weighted by their
# example counts (λ = 0). Every candidate that kept OGR client weights (λ = 1
# tempered with β = 0.5, or capped at 0.2) scored lower on both settings, as
# the literal C-GB had (docs/HGB_MODES.md).
DEFAULT_HGB_HPARAMS = HGBHParams(fusion_weight_floor=0.34, prior_momentum=0.5)
DEFAULT_CLIENT_WEIGHT_MIX = 0.0  # The `hgb` mode's λ.

OWN_AGGREGATION_ERROR = (
    'modality_aware and a client_weight_mix strictly between 0 and 1 use their '
    'own aggregation (tff_hgb.aggregation); they cannot be combined with '
    'model_aggregator or max_client_share.')


@dataclasses.dataclass(frozen=True)
class HGBConfig:
  """One HGB process's choices (ALGORITHM.md §4–§5b), checked on creation.

  Attributes:
    blend: how the heads' losses are weighted on the clients.
    weighting: the mode's client weighting, `ClientWeighting.OGR` (u_k) or
      `ClientWeighting.NUM_EXAMPLES` (n_k); `client_weight_mix` overrides it.
    hparams: the numeric hyper-parameters (the process state's initial ones).
    client_weight_mix: λ of §5b, p_k ∝ (1−λ)·n_k/Σn + λ·u_k/Σu; None = 1 for
      the OGR weighting, 0 for example counts.
    client_weight_temper: β of §5b: the OGR weight becomes n_k·u_k^β (None or
      0 = off; stored as None).
    max_client_share: c of §5b: no client's share of the round's mean above c
      (None or 0 = off; stored as None).
    modality_aware: average encoder m and head m only over the clients that
      hold m (§5).
  """

  blend: Blend = Blend.OGR
  weighting: ClientWeighting = ClientWeighting.OGR
  hparams: HGBHParams = HGBHParams()
  client_weight_mix: Optional[float] = None
  client_weight_temper: Optional[float] = None
  max_client_share: Optional[float] = None
  modality_aware: bool = False

  def __post_init__(self):
    if self.blend not in BLENDS:
      raise ValueError(f'blend must be one of {tuple(map(str, BLENDS))}, got '
                       f'{self.blend!r}.')
    if self.weighting not in WEIGHTINGS:
      raise ValueError(f'weighting must be one of '
                       f'{tuple(map(str, WEIGHTINGS))}, got '
                       f'{self.weighting!r}.')
    if not isinstance(self.hparams, HGBHParams):
      raise TypeError('hparams must be an HGBHParams, got '
                      f'{type(self.hparams).__name__}.')
    mix = self.client_weight_mix
    if mix is not None and not 0.0 <= mix <= 1.0:
      raise ValueError(f'client_weight_mix must lie in [0, 1], got {mix}.')
    if self.client_weight_temper is not None and self.client_weight_temper < 0:
      raise ValueError('client_weight_temper must be ≥ 0, got '
                       f'{self.client_weight_temper}.')
    if self.max_client_share and not 0.0 < self.max_client_share <= 1.0:
      raise ValueError('max_client_share must lie in [0, 1] (0 = off), got '
                       f'{self.max_client_share}.')
    # One spelling of "off", so that readers test `is None`.
    object.__setattr__(self, 'blend', Blend(self.blend))
    object.__setattr__(self, 'weighting', ClientWeighting(self.weighting))
    object.__setattr__(self, 'client_weight_temper',
                       self.client_weight_temper or None)
    object.__setattr__(self, 'max_client_share', self.max_client_share or None)
    if self.client_weighting is ClientWeighting.STRUCTURED and (
        self.max_client_share is not None):
      raise ValueError(OWN_AGGREGATION_ERROR)

  @classmethod
  def for_mode(cls, mode: str, *, hparams: Optional[HGBHParams] = None,
               client_weight_mix: Optional[float] = None,
               client_weight_temper: Optional[float] = None,
               max_client_share: Optional[float] = None,
               modality_aware: bool = False,
               **hparam_overrides) -> HGBConfig:
    """The configuration of a mode of `MODES` with the §5b switches given.

    `hparams` defaults to `DEFAULT_HGB_HPARAMS` for 'hgb' and `PAPER_HPARAMS`
    otherwise, and 'hgb' weights clients by λ = `DEFAULT_CLIENT_WEIGHT_MIX`
    unless `client_weight_mix` is given; `hparam_overrides` are fields of
    `HGBHParams` replacing those of `hparams`.
    """
    if mode not in MODES:
      raise ValueError(f'Unknown HGB mode {mode!r}; expected one of '
                       f'{sorted(MODES)}.')
    if hparams is None:
      hparams = DEFAULT_HGB_HPARAMS if mode == 'hgb' else PAPER_HPARAMS
    if mode == 'hgb' and client_weight_mix is None:
      client_weight_mix = DEFAULT_CLIENT_WEIGHT_MIX
    if hparam_overrides:
      hparams = dataclasses.replace(hparams, **hparam_overrides)
    return cls(*MODES[mode], hparams=hparams,
               client_weight_mix=client_weight_mix,
               client_weight_temper=client_weight_temper,
               max_client_share=max_client_share,
               modality_aware=modality_aware)

  @property
  def mix(self) -> float:
    """λ: `client_weight_mix`, or what the mode's weighting stands for."""
    if self.client_weight_mix is not None:
      return self.client_weight_mix
    return 1.0 if self.weighting is ClientWeighting.OGR else 0.0

  @property
  def client_weighting(self) -> ClientWeighting:
    """The weight each client reports, so the aggregation the server needs.

    A scalar u_k (λ = 1) or n_k (λ = 0) goes to any weighted aggregation; a
    λ strictly between 0 and 1, or modality-aware averaging, needs both and
    the modalities a client trained.
    """
    if self.modality_aware or 0.0 < self.mix < 1.0:
      return ClientWeighting.STRUCTURED
    return (ClientWeighting.OGR if self.mix == 1.0 else
            ClientWeighting.NUM_EXAMPLES)
