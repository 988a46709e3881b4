"""What the binaries' presets run: compare's --config, the paper tables' and the
studies' settings and methods, as flag values (TensorFlow-free: read when flags
are defined), and the study's size estimate.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

# In a comparison: the uni-modal FedAvg of the best single modality.
BEST_UNIMODAL = 'uni:best'

# Robust tuning (tff_hgb.experiment.tuning, issue 20): every value on 3 seeds,
# scored by the mean over them of the last rounds' validation accuracy, and a
# best value on the grid's edge extends the grid, at most 3 steps per field.
ROBUST_TUNING = {'tune_seeds': 3, 'tune_extensions': 3}

# Presets of experiments/compare.py --config (flag name → value). Flags given
# on the command line win.
COMPARISON_PRESETS = {
    # `make run`: htad Mixed-B (the paper's Table II setting), every baseline,
    # MMPareto (the v1 evidence's best candidate on htad: 88.2 ± 1.7 against
    # fedavg 85.1 ± 1.2 over 3 seeds, 30 rounds), the best uni-modal model and
    # HGB, each with the client learning rate tuned the robust way
    # (ROBUST_TUNING: 3 tuning seeds, last-5-rounds score, the grid extended
    # past an edge) on training-pool validation data, the value chosen by
    # the one-standard-error rule (the smallest learning rate scoring within
    # a standard error over the tuning seeds of the best), and tuning runs as
    # long as the final ones (40 rounds). With 30-round tuning runs hgb took
    # 1.6 under either rule (0.7775 against 0.7550 at 0.8, a standard error
    # of 0.0221 short by 0.0004) and lost two of three seeds after round 30
    # of the final runs; over 40 rounds 1.6 still scores best (0.7877) but
    # 0.8 (0.7847) is within its standard error, so hgb takes 0.8 and loses
    # no seed (docs/STUDY.md, "make run").
    # --jobs (default one process per core)
    # runs its runs in parallel (docs/BENCHMARKS.md). uni:best: the modality
    # that is best on its own, picked by a quick centralized check on
    # training data (`best_unimodal`); on htad audio and accel are within ~2
    # points of each other centrally, so it is measured rather than fixed.
    'default': {
        'dataset': 'htad',
        'partition': 'mixed_b',
        'algorithms': ['fedavg', 'fedattn', 'fednova', 'mmpareto',
                       BEST_UNIMODAL, 'hgb'],
        'centralized': True,
        'seeds': '3',
        'num_clients': 10,
        'clients_per_round': 0,
        'rounds': 40,
        'local_epochs': 1,
        'batch_size': 16,
        'eval_every': 1,
        'checkpoint_every': 10,
        'target_accuracy': 0.7,
        'tune': 'client_learning_rate:0.2,0.4,0.8,1.6',
        'tune_rounds': 40,
        **ROBUST_TUNING,
        'tune_rule': 'one_se',
        'output_dir': 'results/default',
    },
}


# The preset of `make paper` (flags given on the command line win).
PAPER_PRESET = {
    'dataset': 'htad',
    'num_clients': 10,
    'clients_per_round': 0,
    'rounds': 40,
    'eval_every': 1,
    'checkpoint_every': 10,
    'target_accuracy': 0.7,
    'tune': 'client_learning_rate:0.1,0.2,0.4,0.8,1.6',
    'output_dir': 'results/paper',
}
# --quick: shows the machinery end to end in about a minute.
PAPER_QUICK = {
    'num_clients': 4,
    'rounds': 2,
    'tune': '',
    'target_accuracy': 0.5,
}


@dataclasses.dataclass(frozen=True)
class Setting:
  """One data setting of the study (`tff_hgb.experiment.study`): overrides."""

  name: str
  overrides: Mapping[str, Any]
  selection: bool = False  # Used to choose the default hgb.
  description: str = ''


_HTAD_GRID = 'client_learning_rate:0.1,0.2,0.4,0.8,1.6,3.2'
_SLOW_GRID = 'client_learning_rate:0.025,0.05,0.1,0.2,0.4,0.8'
# The settings after the selection ones: a grid of 5 (the budget of ~2 h on
# 2 cores); the tables mark a choice on its edge.
_SHORT_GRID = 'client_learning_rate:0.05,0.1,0.2,0.4,0.8'

SETTINGS = (
    Setting('htad_mixed_b_e1', dict(
        dataset='htad', partition='mixed_b', num_clients=10, rounds=30,
        local_epochs=1, eval_every=1, tune=_HTAD_GRID, target_accuracy=0.7),
            selection=True,
            description='htad (audio MFCC + accelerometer statistics, MLP '
            'encoders), Mixed-B, 10 clients, E = 1'),
    Setting('synthetic_case_a_e5', dict(
        dataset='synthetic', partition='case_a', num_clients=10, rounds=20,
        local_epochs=5, eval_every=2, tune=_SLOW_GRID, target_accuracy=0.6),
            selection=True,
            description='synthetic paper regime (a wide memorising modality '
            '+ a slow clean one), case A (Dirichlet α = 0.1), 10 clients, '
            'E = 5'),
    Setting('digits_mixed_b_e2', dict(
        dataset='digits', partition='mixed_b', num_clients=10, rounds=20,
        local_epochs=2, eval_every=2, tune=_SHORT_GRID, target_accuracy=0.8),
            description='digits (UCI handwritten digits: top and bottom '
            'halves as two 4×8 image modalities, 2-D conv encoders), '
            'Mixed-B, 10 clients, E = 2'),
    Setting('watch_natural_e2', dict(
        dataset='watch', partition='natural', num_clients=10, rounds=20,
        local_epochs=2, eval_every=2, tune=_SHORT_GRID, target_accuracy=0.6),
            description='watch raw accelerometer + gyroscope windows '
            '(1-D conv encoders), one client per subject, E = 2'),
    Setting('synthetic_mixed_b_e5', dict(
        dataset='synthetic', partition='mixed_b', num_clients=10, rounds=20,
        local_epochs=5, eval_every=2, tune=_SHORT_GRID, target_accuracy=0.6),
            description='synthetic paper regime, Mixed-B, 10 clients, E = 5'),
)


@dataclasses.dataclass(frozen=True)
class Method:
  """A row of a study: a registry algorithm with its switches.

  options: AlgorithmConfig fields (e.g. validation_source); hgb: HGBHParams
  overrides; overrides: other flags of its runs (e.g. the data's
  shared_validation_fraction).
  """

  label: str
  algorithm: str
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  hgb: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def describe(self) -> str:
    parts = [f'{k}={v}' for k, v in sorted(self.options.items())]
    parts += [f'hgb_{k}={v}' for k, v in sorted(self.hgb.items())]
    parts += [f'{k}={v}' for k, v in sorted(self.overrides.items())]
    return f'`{self.algorithm}`' + (f' ({", ".join(parts)})' if parts else '')


# ---------------------------------------------------------------------------
# Study v2 (issue 20): decide with power. Every method tuned the robust way on
# every setting, then 10 paired seeds; the report (study_report) gives the
# last-5-rounds figure, paired intervals, half-widths and seeds needed.
# ---------------------------------------------------------------------------

# Learning-rate grids of 3 values (ratio 2) centred on the v1 study's choices
# (docs/STUDY_V1.md); an edge choice extends the grid (ROBUST_TUNING), so a
# short grid costs little in reach (the budget's cut: grid values and tuning
# rounds before seeds).
_V2_GRID_HIGH = 'client_learning_rate:0.4,0.8,1.6'
_V2_GRID_LOW = 'client_learning_rate:0.1,0.2,0.4'


def _v2(name, description, tune_rounds, selection=False, **overrides):
  return Setting(name, dict(overrides, tune_rounds=tune_rounds, **ROBUST_TUNING),
                 selection=selection, description=description)


# Tuning runs are shorter than the final runs (tune_rounds), the budget's
# first cut (issue 20: cut grid values or rounds before seeds).
SETTINGS_V2 = (
    _v2('htad_mixed_b_e1', 'htad (audio MFCC + accelerometer statistics, MLP '
        'encoders), Mixed-B, 10 clients, E = 1', 15, selection=True,
        dataset='htad', partition='mixed_b', num_clients=10, rounds=30,
        local_epochs=1, eval_every=1, tune=_V2_GRID_HIGH,
        target_accuracy=0.7),
    _v2('htad_mixed_b_e5', 'htad, Mixed-B, 10 clients, E = 5', 10,
        dataset='htad', partition='mixed_b', num_clients=10, rounds=15,
        local_epochs=5, eval_every=1, tune=_V2_GRID_LOW,
        target_accuracy=0.7),
    _v2('synthetic_case_a_e5', 'synthetic paper regime (a wide memorising '
        'modality + a slow clean one), case A (Dirichlet α = 0.1), 10 '
        'clients, E = 5', 10, selection=True, dataset='synthetic',
        partition='case_a', num_clients=10, rounds=20, local_epochs=5,
        eval_every=2, tune=_V2_GRID_HIGH, target_accuracy=0.6),
    _v2('synthetic_case_a_e1', 'synthetic paper regime, case A, 10 clients, '
        'E = 1', 20, dataset='synthetic', partition='case_a', num_clients=10,
        rounds=40, local_epochs=1, eval_every=2, tune=_V2_GRID_HIGH,
        target_accuracy=0.6),
    _v2('digits_mixed_b_e2', 'digits (top and bottom halves of UCI '
        'handwritten digits, 2-D conv encoders), Mixed-B, 10 clients, E = 2',
        10, dataset='digits', partition='mixed_b', num_clients=10,
        rounds=20, local_epochs=2, eval_every=2, tune=_V2_GRID_LOW,
        target_accuracy=0.8),
    _v2('watch_natural_e2', 'watch raw accelerometer + gyroscope windows '
        '(1-D conv encoders), one client per subject, E = 2', 10,
        dataset='watch', partition='natural', num_clients=10, rounds=20,
        local_epochs=2, eval_every=2, tune=_V2_GRID_LOW,
        target_accuracy=0.6),
    _v2('har_natural_e1', 'har (UCI smartphone accelerometer + gyroscope), '
        '30 natural users, all per round, E = 1', 10, dataset='har',
        partition='natural', rounds=20, local_epochs=1, eval_every=2,
        tune=_V2_GRID_LOW, target_accuracy=0.8),
    _v2('har_natural_s10_e1', 'har, 30 natural users, 10 sampled per round, '
        'E = 1', 10, dataset='har', partition='natural', rounds=20,
        clients_per_round=10, local_epochs=1, eval_every=2,
        tune=_V2_GRID_LOW, target_accuracy=0.8),
    _v2('synthetic4_mixed_b_e2', 'synthetic, four modalities (the paper '
        'regime\'s wide and clean + two mid-sized), Mixed-B, 10 clients, '
        'E = 2', 10, dataset='synthetic4', partition='mixed_b',
        num_clients=10, rounds=20, local_epochs=2, eval_every=2,
        tune=_V2_GRID_HIGH, target_accuracy=0.6),
)

# The server-held shared validation set of the C-GB control (a fraction of
# the training pool held out before partitioning; ALGORITHM.md §5b).
_SHARED_VALIDATION = 0.1

METHODS_V2 = (
    Method('fedavg', 'fedavg'),
    Method('fedavg_tk', 'fedavg_tk'),
    Method('fedavg_all_heads', 'fedavg_all_heads'),
    Method('mmpareto', 'mmpareto'),
    Method('ogm_ge', 'ogm_ge'),
    Method('hgb', 'hgb'),
    Method('hgb_paper', 'hgb_paper'),
    Method('m_gb', 'm_gb'),
    Method('c_gb', 'c_gb'),
    Method('c_gb_shared', 'c_gb',
           dict(validation_source='shared', full_probe=True),
           overrides=dict(shared_validation_fraction=_SHARED_VALIDATION)),
)
# The controls that answer one question each run on the selection settings
# only (the budget): is the hold-out of V_k what costs HGB (fedavg_tk), is
# C-GB's failure the small local estimate (c_gb_shared), the literal paper,
# M-GB (never better than either control in v1).
SELECTION_ONLY_V2 = ('fedavg_tk', 'hgb_paper', 'm_gb', 'c_gb', 'c_gb_shared')


@dataclasses.dataclass(frozen=True)
class StudyPlan:
  """A study's settings, methods and seeds (`tff_hgb.experiment.study`).

  methods empty: the v1 rows (study.methods, after its selection of the
  default hgb among `candidates`); selection_only: labels run on the
  selection settings only.
  """

  name: str
  title: str
  settings: tuple[Setting, ...]
  seeds: int
  methods: tuple[Method, ...] = ()
  selection_only: tuple[str, ...] = ()
  select_default: bool = False


STUDY_PLANS = {
    'v1': StudyPlan('v1', 'Where HGB helps — study results', SETTINGS, 5,
                    select_default=True),
    'v2': StudyPlan('v2', 'Study v2: which method to use, with power',
                    SETTINGS_V2, 10, METHODS_V2, SELECTION_ONLY_V2),
}


def plan_methods(plan: StudyPlan, setting: Setting) -> list[Method]:
  """The rows of `setting` in a plan with its own methods."""
  return [m for m in plan.methods
          if setting.selection or m.label not in plan.selection_only]


# ---------------------------------------------------------------------------
# The study's size: runs and wall time at measured speeds.
# ---------------------------------------------------------------------------

# Seconds of one final fedavg run of each setting (its rounds at its
# eval_every, seed 0, one process, the in-process runtime, the algorithm's
# build and first round included), measured on this 2-core machine with
# `python -m experiments.study --plan=v2 --measure_speed=fedavg
# --output_dir=/tmp/speed` on 2026-11-29 22:45-22:50 UTC with nothing else
# running (load ~1). The first measurement (20:21-20:33, load 8-21 from other
# sessions' jobs) was 4-8x slower; the study is sized with the quiet figures.
MEASURED_RUN_SECONDS: dict[str, float] = {
    'htad_mixed_b_e1': 8.1, 'htad_mixed_b_e5': 4.9,
    'synthetic_case_a_e5': 8.0, 'synthetic_case_a_e1': 7.6,
    'digits_mixed_b_e2': 9.6, 'watch_natural_e2': 11.9,
    'har_natural_e1': 29.4, 'har_natural_s10_e1': 12.3,
    'synthetic4_mixed_b_e2': 9.5,
}
# A method's run time relative to fedavg's; methods not listed cost as much as
# fedavg (make run's training s/round, htad: mmpareto 0.23, hgb 0.14, fedattn
# 0.23, fednova 0.25 against fedavg 0.30: within the load's noise).
MEASURED_METHOD_FACTOR: dict[str, float] = {}
# What --jobs=2 gains on 2 cores (docs/BENCHMARKS.md: ~1.6-1.8x).
JOBS_SPEEDUP = {1: 1.0, 2: 1.6}
# Each extension step adds one value × the tuning seeds; expected steps per
# (setting, method) from the v1 edges (about 1 in 3 choices on an edge).
EXPECTED_EXTENSIONS = 0.5


def estimate(plan: StudyPlan, *, seeds: int, jobs: int,
             settings: Optional[Sequence[Setting]] = None,
             run_seconds: Optional[Mapping[str, float]] = None
             ) -> dict[str, Any]:
  """Runs and wall time of `plan` (before any is done): per setting and total.

  A tuning run costs tune_rounds / rounds of a final run (no test
  evaluation; its validation evaluations are few).
  """
  run_seconds = dict(MEASURED_RUN_SECONDS, **(run_seconds or {}))
  rows, total_runs, total_seconds = [], 0, 0.0
  for setting in settings or plan.settings:
    o = setting.overrides
    grid = len(o['tune'].partition(':')[2].split(',')) if o.get('tune') else 0
    tune_seeds = o.get('tune_seeds', 1)
    tuning_runs = tune_seeds * (grid + EXPECTED_EXTENSIONS) if grid else 0
    labels = ([m.algorithm for m in plan_methods(plan, setting)]
              if plan.methods else ['fedavg'] * 7)
    methods = len(labels)
    cost = sum(MEASURED_METHOD_FACTOR.get(a, 1.0) for a in labels)
    per_run = run_seconds.get(setting.name)
    fraction = o.get('tune_rounds', o['rounds']) / o['rounds']
    runs = methods * (seeds + math.ceil(tuning_runs))
    seconds = (None if per_run is None else
               cost * per_run * (seeds + tuning_runs * fraction))
    rows.append({'setting': setting.name, 'methods': methods, 'runs': runs,
                 'seconds': seconds})
    total_runs += runs
    total_seconds += seconds or 0.0
  speedup = JOBS_SPEEDUP.get(jobs, jobs * 0.8)
  return {'settings': rows, 'runs': total_runs,
          'compute_seconds': total_seconds,
          'wall_seconds': total_seconds / speedup,
          'unmeasured': [r['setting'] for r in rows if r['seconds'] is None]}
