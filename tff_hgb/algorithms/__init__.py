"""One registry of every algorithm the binaries compare (name → LearningProcess).

Every entry trains the same multi-modal model (`tff_hgb.models`) on the same
clients, and is evaluated the same way (`tff_hgb.evaluation`), so results
tables line up. Names:

  fedavg            TFF's build_weighted_fed_avg, fused loss only (paper's FedAvg)
  fedavg_tk         the same on each client's training part T_k only (the
                    V_k HGB holds out is not trained on: the audit's control)
  fedavg_all_heads  TFF's build_weighted_fed_avg, fixed equal weights on all heads
  fedavg_capped     TFF's build_weighted_fed_avg, fused loss, no client's share
                    above max_client_share (default 2/K of the round's K)
  fedprox           TFF's build_weighted_fed_prox, fused loss, μ = fedprox_mu
  fednova           ours (FedNova, Wang et al. 2020), fused loss
  fedattn           ours (FedAttn, Ji et al. 2019), fused loss
  mmpareto          ours (MMPareto, Wei & Hu 2024), all heads, Pareto-resolved
                    encoder gradients, γ = mmpareto_gamma
  ogm_ge, ogm       ours (OGM-GE, Peng et al. 2022), fused loss, the dominant
                    modality's encoder slowed (α = ogm_alpha); ogm: no noise
  uni:<modality>    TFF's FedAvg on a one-modality model, clients that hold it
  hgb, hgb_paper, m_gb, c_gb   ours (tff_hgb.hgb), see ALGORITHM.md §4–§5b

This module is the catalogue (names, `AlgorithmConfig`), free of TensorFlow so
that the binaries check their flags before loading it; `registry.py` builds the
processes (`build_algorithm`, `Algorithm`, also reachable from here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from tff_hgb import hgb_config
from tff_hgb import lazy
from tff_hgb import model_config
from tff_hgb.data import partition as partition_lib

HGB_MODES = ('hgb', 'hgb_paper', 'm_gb', 'c_gb')
TFF_FEDAVG_FAMILY = ('fedavg', 'fedavg_tk', 'fedavg_all_heads',
                     'fedavg_capped', 'fedprox')
OURS = ('fednova', 'fedattn')
# ALGORITHM.md §9 (tff_hgb/algorithms/balanced.py).
BALANCING = ('mmpareto', 'ogm_ge', 'ogm')
NAMES = TFF_FEDAVG_FAMILY + OURS + BALANCING + HGB_MODES
UNI_PREFIX = 'uni:'
# fedavg_capped's cap without max_client_share: 2/K (ALGORITHM.md §5b; a 2/K
# cap on FedAvg's own weights matched C-GB's gain in a pilot of ours).
DEFAULT_CAP_OVER_UNIFORM = 2.0


@dataclasses.dataclass(frozen=True)
class AlgorithmConfig:
  """Hyper-parameters shared by every algorithm, and each one's own."""

  client_learning_rate: float = 0.05
  server_learning_rate: float = 1.0
  client_momentum: float = 0.0
  local_epochs: int = 1
  batch_size: int = 16
  seed: int = 0
  model: model_config.ModelConfig = model_config.ModelConfig()
  fedprox_mu: float = 0.01
  fedattn_epsilon: float = 1.2
  # §9 MMPareto: γ multiplying the Pareto-resolved encoder gradients.
  mmpareto_gamma: float = 1.5
  # §9 OGM-GE / OGM: α of k = 1 − tanh(α·ρ); the GE noise's std in units of
  # std(g) (ogm_ge only; ogm has none); modulated rounds start ≤ r < end
  # (0-based, end 0 = to the last round).
  ogm_alpha: float = 0.5
  ogm_noise_scale: float = 1.0
  ogm_start_round: int = 0
  ogm_end_round: int = 0
  # HGBHParams fields overriding the mode's defaults (e.g. warmup_fraction).
  hgb_overrides: tuple[tuple[str, Any], ...] = ()
  # ALGORITHM.md §5b client-level switches of `hgb` (the other modes are
  # literal: hgb_paper and c_gb weight clients by u_k, m_gb by examples):
  # λ in p_k ∝ (1−λ)·n_k/Σn + λ·u_k/Σu (1 = the paper's u_k weights).
  client_weight_mix: float = hgb_config.DEFAULT_CLIENT_WEIGHT_MIX
  # β > 0: the OGR weight becomes n_k·u_k^β (0 = off).
  client_weight_temper: float = 0.0
  # c: no client's share of a round's mean above c (`hgb`, `fedavg_capped`;
  # 0 = off for hgb, 2/K for fedavg_capped).
  max_client_share: float = 0.0
  # Where every HGB mode's clients measure OGR's validation losses: their own
  # validation split ('local') or the shared set ('shared', §5b; a control).
  validation_source: str = partition_lib.LOCAL_VALIDATION
  # Every HGB mode: OGR's training losses on the whole T_k instead of its
  # first |V_k| examples (§5b; a control).
  full_probe: bool = False
  # §5: encoder/head m averaged only over clients holding m (all HGB modes).
  modality_aware: bool = False
  # Clients' training steps (and HGB's snapshots) run XLA-compiled
  # (`models.MultiModalModel`); off by default (docs/BENCHMARKS.md says where
  # it pays and that the TFF worker cannot).
  jit: bool = False

  def __post_init__(self):
    if not 0.0 <= self.max_client_share <= 1.0:
      raise ValueError('max_client_share must lie in [0, 1] (0 = off), got '
                       f'{self.max_client_share}.')
    for field in ('mmpareto_gamma', 'ogm_alpha', 'ogm_noise_scale',
                  'ogm_start_round', 'ogm_end_round'):
      if not getattr(self, field) >= 0:
        raise ValueError(f'{field} must be ≥ 0, got {getattr(self, field)}.')
    if 0 < self.ogm_end_round <= self.ogm_start_round:
      raise ValueError(f'ogm_end_round ({self.ogm_end_round}) must exceed '
                       f'ogm_start_round ({self.ogm_start_round}), or be 0.')
    if self.validation_source not in partition_lib.VALIDATION_SOURCES:
      raise ValueError(
          f'validation_source must be one of '
          f'{", ".join(partition_lib.VALIDATION_SOURCES)}, got '
          f'{self.validation_source!r}.')


def is_known(name: str, modalities: Optional[list[str]] = None) -> bool:
  if name.startswith(UNI_PREFIX):
    return modalities is None or name[len(UNI_PREFIX):] in modalities
  return name in NAMES


def describe_names(modalities: Optional[list[str]] = None) -> str:
  unis = ([f'{UNI_PREFIX}{m}' for m in modalities] if modalities else
          [f'{UNI_PREFIX}<modality>'])
  return ', '.join(list(NAMES) + unis)


def hgb_hparams_fields() -> list[str]:
  return [f.name for f in dataclasses.fields(hgb_config.HGBHParams)]


# The registry's builders need TensorFlow and TFF, so they load on first use
# (PEP 562) and `algorithms.build_algorithm(...)` keeps working.
_REGISTRY_SYMBOLS = ('Algorithm', 'BASELINE_LOOP', 'build_algorithm')


__getattr__ = lazy.module_getattr(
    __name__, {name: 'tff_hgb.algorithms.registry' for name in _REGISTRY_SYMBOLS})
