"""The §5b study's report: paired per-seed intervals against a baseline, each
setting's table and STUDY.md.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import reports

# The rows of a setting's table that every method is paired with.
BASELINE = 'fedavg'
HEADS_CONTROL = 'fedavg_all_heads'


# ---------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------


def paired_interval(values: Sequence[float], baseline: Sequence[float],
                    confidence: float = 0.95) -> dict[str, Any]:
  """Mean of values − baseline over paired seeds, with a t-interval.

  Returns {'mean', 'low', 'high', 'n'}; low/high are None with fewer than two
  pairs.
  """
  if len(values) != len(baseline):
    raise ValueError(f'paired samples differ in length: {len(values)} vs '
                     f'{len(baseline)}.')
  diffs = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
  n = len(diffs)
  if n == 0:
    return {'mean': None, 'low': None, 'high': None, 'n': 0}
  mean = float(diffs.mean())
  if n < 2:
    return {'mean': mean, 'low': None, 'high': None, 'n': n}
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) *
               diffs.std(ddof=1) / math.sqrt(n))
  return {'mean': mean, 'low': mean - half, 'high': mean + half, 'n': n}


def verdict(interval: Mapping[str, Any]) -> str:
  """'better' / 'worse' when the interval excludes 0, else 'tie'."""
  if interval.get('low') is None:
    return 'n/a'
  if interval['low'] > 0:
    return 'better'
  if interval['high'] < 0:
    return 'worse'
  return 'tie'


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def _pct(value) -> str:
  return '—' if value is None else f'{100 * value:.2f}'


def _interval_cell(interval: Mapping[str, Any]) -> str:
  if interval.get('mean') is None:
    return '—'
  if interval.get('low') is None:
    return f'{100 * interval["mean"]:+.2f}'
  return (f'{100 * interval["mean"]:+.2f} [{100 * interval["low"]:+.2f}, '
          f'{100 * interval["high"]:+.2f}] {verdict(interval)}')


def _paired(runs, reference_runs, key='final_accuracy'):
  by_seed = {r['seed']: r[key] for r in reference_runs}
  pairs = [(r[key], by_seed[r['seed']]) for r in runs if r['seed'] in by_seed]
  return paired_interval([p[0] for p in pairs], [p[1] for p in pairs])


def _chosen_value(tuning) -> str:
  if not tuning or not tuning.get('chosen'):
    return '—'
  text = ', '.join(f'{v:g}' for v in tuning['chosen'].values())
  return text + (' (edge)' if reports.edge_fields(tuning) else '')


def setting_table(setting_rows: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[list[str], dict[str, dict[str, Any]]]:
  """Markdown lines of one setting and its paired intervals per method."""
  baseline = setting_rows.get(BASELINE, {}).get('runs', [])
  heads = setting_rows.get(HEADS_CONTROL, {}).get('runs', [])
  lines = ['| method | lr | test top-1 (mean ± std) | − fedavg [95% CI] | '
           '− fedavg_all_heads [95% CI] | best top-1 | rounds to target | '
           'eff. clients | fusion z | z split |',
           '|---|---|---|---|---|---|---|---|---|---|']
  intervals = {}
  for label, row in setting_rows.items():
    runs = row['runs']
    finals = [r['final_accuracy'] for r in runs]
    mean = float(np.mean(finals)) if finals else None
    std = float(np.std(finals, ddof=1)) if len(finals) > 1 else None
    vs_base = _paired(runs, baseline)
    vs_heads = _paired(runs, heads)
    intervals[label] = {'fedavg': vs_base, 'fedavg_all_heads': vs_heads}
    reached = [r['rounds_to_target'] for r in runs
               if r.get('rounds_to_target') is not None]
    rounds = ((f'{np.mean(reached):.1f}' if reached else '—') +
              f' ({len(reached)}/{len(runs)})' if runs else '—')
    eff = [r.get('effective_clients_mean') for r in runs
           if r.get('effective_clients_mean') is not None]
    fusion = [r.get('fusion_weight_mean') for r in runs
              if r.get('fusion_weight_mean') is not None]
    splits = collections.defaultdict(list)
    for r in runs:
      for head, value in (r.get('z_split') or {}).items():
        if value is not None:
          splits[head].append(value)
    split = ', '.join(f'{h} {np.mean(v):.2f}' for h, v in sorted(
        splits.items())) or '—'
    bests = [r['best_accuracy'] for r in runs]
    best = (f'{100 * np.mean(bests):.2f} ± {100 * np.std(bests, ddof=1):.2f}'
            if len(bests) > 1 else '—')
    cell = ('—' if mean is None else
            f'{100 * mean:.2f} ± {100 * (std or 0):.2f} (n={len(finals)})')
    lines.append(
        f'| {label} | {_chosen_value(row.get("tuning"))} | {cell} | '
        f'{"—" if label == BASELINE else _interval_cell(vs_base)} | '
        f'{"—" if label == HEADS_CONTROL else _interval_cell(vs_heads)} | '
        f'{best} | {rounds} | {f"{np.mean(eff):.1f}" if eff else "—"} | '
        f'{f"{np.mean(fusion):.2f}" if fusion else "—"} | {split} |')
  return lines, intervals


def study_markdown(study: Mapping[str, Any]) -> str:
  selection = study['selection']
  lines = ['# Where HGB helps — study results', '',
           'Made by `make study` (`python -m experiments.study '
           '--output_dir=results/study`); every number below is in '
           '`study.json` beside this file.', '',
           '## Default `hgb`: chosen on validation data', '',
           'Candidates tuned (client learning rate) on the selection settings '
           'only; score = best mean validation fusion accuracy over the last '
           f'{config_lib.TUNE_EVALUATIONS} rounds, on data held out of the '
           'training pool.', '',
           '| candidate | configuration | ' + ' | '.join(
               n for n, s in study['settings'].items() if s['selection']) +
           ' | mean |',
           '|---|---|' + '---|' * (1 + sum(
               1 for s in study['settings'].values() if s['selection']))]
  for label, per in selection['scores'].items():
    marker = ' **(chosen)**' if label == selection['chosen'] else ''
    lines.append(f'| {label}{marker} | {selection["candidates"][label]} | ' +
                 ' | '.join(f'{100 * v:.2f}' for v in per.values()) + ' |')
  lines += ['', '## Settings', '']
  all_intervals = {}
  for name, rows in study['rows'].items():
    if not rows:
      continue
    info = study['settings'][name]
    lines += [f'### {name}', '', info['description'] + '; ' + ', '.join(
        f'{k} {v}' for k, v in info['overrides'].items()
        if k not in ('dataset', 'partition', 'tune')) + '.', '']
    table, intervals = setting_table(rows)
    all_intervals[name] = intervals
    lines += table + ['']
  lines += ['Methods: ' + '; '.join(
      f'{label} = {row["method"]}' for label, row in
      next(iter(study['rows'].values()), {}).items()) + '.', '',
            'Paired differences are in accuracy points, final-round test '
            'top-1 (best top-1: the best round\'s test accuracy, for '
            'context only — choosing a round by test accuracy is not a '
            'valid estimate), seed by seed (seed = initial weights and local data '
            'order), with a 95% t-interval; "better"/"worse" when the interval '
            'excludes 0. lr = the tuned client learning rate ("edge": the '
            'best value is at the grid\'s edge).', '']
  study['intervals'] = all_intervals
  return '\n'.join(lines)
