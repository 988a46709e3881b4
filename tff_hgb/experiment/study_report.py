"""The study's report: paired per-seed intervals and their power (half-width,
seeds needed), each setting's table and STUDY.md, from the runs' files alone.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from tff_hgb import algorithms
from tff_hgb.experiment import reports

# The rows of a setting's table that every method is paired with.
BASELINE = 'fedavg'
HEADS_CONTROL = 'fedavg_all_heads'
# The primary figure of a run: test top-1 averaged over its last
# reports.LAST_ROUNDS evaluated rounds; the final round's is reported too.
PRIMARY = 'last_rounds_accuracy'
FINAL = 'final_accuracy'
# Rows of HGB's family (the candidates for the default `hgb`).
HGB_LIKE = algorithms.HGB_MODES
# The half-width (accuracy, 3 points) a paired comparison should reach.
TARGET_HALF_WIDTH = 0.03


# ---------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------


def t_quantile(probability: float, df: int) -> float:
  """Student's t quantile (scipy): t such that P(T ≤ t) = probability."""
  return float(stats.t.ppf(probability, df))


def paired_interval(values: Sequence[float], baseline: Sequence[float],
                    confidence: float = 0.95) -> dict[str, Any]:
  """Mean of values − baseline over paired seeds, with a t-interval.

  Returns {'mean', 'low', 'high', 'half', 'sd', 'n'}: half is the interval's
  half-width, sd the differences' standard deviation; low/high/half/sd are
  None with fewer than two pairs.
  """
  if len(values) != len(baseline):
    raise ValueError(f'paired samples differ in length: {len(values)} vs '
                     f'{len(baseline)}.')
  diffs = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
  n = len(diffs)
  if n == 0:
    return {'mean': None, 'low': None, 'high': None, 'half': None,
            'sd': None, 'n': 0}
  mean = float(diffs.mean())
  if n < 2:
    return {'mean': mean, 'low': None, 'high': None, 'half': None,
            'sd': None, 'n': n}
  sd = float(diffs.std(ddof=1))
  half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
  return {'mean': mean, 'low': mean - half, 'high': mean + half,
          'half': half, 'sd': sd, 'n': n}


def seeds_needed(sd: float, half_width: float = TARGET_HALF_WIDTH,
                 confidence: float = 0.95, limit: int = 1000):
  """The fewest paired seeds whose t-interval half-width is ≤ half_width.

  Estimated from the measured standard deviation `sd` of the paired
  differences (taken as the true one): the smallest n ≥ 2 with
  t(1 − (1 − confidence)/2, n − 1) · sd / √n ≤ half_width; None above `limit`.
  """
  for n in range(2, limit + 1):
    if t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) <= (
        half_width):
      return n
  return None


def verdict(interval: Mapping[str, Any]) -> str:
  """'better' / 'worse' when the interval excludes 0, else 'tie'."""
  if interval.get('low') is None:
    return 'n/a'
  if interval['low'] > 0:
    return 'better'
  if interval['high'] < 0:
    return 'worse'
  return 'tie'


def paired(runs, reference_runs, key: str = PRIMARY) -> dict[str, Any]:
  """The paired interval of runs − reference_runs over their common seeds,
  with the seeds a ±TARGET_HALF_WIDTH interval would need when it is wider."""
  by_seed = {r['seed']: r.get(key) for r in reference_runs}
  pairs = [(r.get(key), by_seed[r['seed']]) for r in runs
           if r['seed'] in by_seed and reports.is_finite_number(r.get(key)) and
           reports.is_finite_number(by_seed[r['seed']])]
  interval = paired_interval([p[0] for p in pairs], [p[1] for p in pairs])
  if interval['half'] is not None and interval['half'] > TARGET_HALF_WIDTH:
    interval['seeds_needed'] = seeds_needed(interval['sd'])
  return interval


def _mean_std(values):
  values = [v for v in values if reports.is_finite_number(v)]
  if not values:
    return None, None, 0
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std, len(values)


def mechanisms(runs) -> dict[str, Any]:
  """Per method: z split, effective clients, conflict fraction, OGM
  coefficient (means over its seeds of each run's mean over rounds)."""
  columns = collections.defaultdict(list)
  for r in runs:
    for column, value in (r.get('mechanism') or {}).items():
      columns[column].append(value)
  means = {c: float(np.mean(v)) for c, v in columns.items()}
  out = {}
  z = {c[2:]: v for c, v in means.items() if c.startswith('z/')}
  if z:
    out['z_split'] = dict(sorted(z.items()))
  if 'client_weight/effective_clients' in means:
    out['effective_clients'] = means['client_weight/effective_clients']
  conflict = [v for c, v in means.items() if '/conflict_fraction/' in c]
  if conflict:
    out['conflict_fraction'] = float(np.mean(conflict))
  ogm = {c.rsplit('/', 1)[1]: v for c, v in means.items()
         if '/coefficient/' in c}
  if ogm:
    out['ogm_coefficient'] = dict(sorted(ogm.items()))
  return out


# ---------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------


def _figure(mean, std, n) -> str:
  if mean is None:
    return '—'
  return f'{100 * mean:.2f} ± {100 * (std or 0):.2f} (n={n})'


def _interval_cell(interval: Mapping[str, Any]) -> str:
  if interval.get('mean') is None:
    return '—'
  if interval.get('low') is None:
    return f'{100 * interval["mean"]:+.2f}'
  cell = (f'{100 * interval["mean"]:+.2f} [{100 * interval["low"]:+.2f}, '
          f'{100 * interval["high"]:+.2f}] ±{100 * interval["half"]:.2f} '
          f'{verdict(interval)}')
  if 'seeds_needed' in interval:
    needed = interval['seeds_needed']
    cell += f' (±3: n≈{needed if needed else ">1000"})'
  return cell


def _chosen_value(tuning) -> str:
  if not tuning or not tuning.get('chosen'):
    return '—'
  text = ', '.join(f'{v:g}' for v in tuning['chosen'].values())
  if reports.edge_fields(tuning):
    text += (' (edge, bound hit)' if tuning.get('extension_bound_hit')
             else ' (edge)')
  if tuning.get('extensions'):
    text += f' [+{len(tuning["extensions"])} ext]'
  return text


def _mechanism_cells(summary: Mapping[str, Any]) -> list[str]:
  z = summary.get('z_split')
  ogm = summary.get('ogm_coefficient')
  return [f'{summary["effective_clients"]:.1f}'
          if 'effective_clients' in summary else '—',
          ', '.join(f'{h} {v:.2f}' for h, v in z.items()) if z else '—',
          f'{summary["conflict_fraction"]:.2f}'
          if 'conflict_fraction' in summary else '—',
          ', '.join(f'{m} {v:.2f}' for m, v in ogm.items()) if ogm else '—']


def best_method(setting_rows: Mapping[str, Mapping[str, Any]],
                key: str = PRIMARY, exclude: str = ''):
  """The label with the highest mean primary figure (None without runs)."""
  means = {label: _mean_std(r.get(key) for r in row['runs'])[0]
           for label, row in setting_rows.items() if label != exclude}
  means = {k: v for k, v in means.items() if v is not None}
  return max(means, key=means.get) if means else None


def setting_table(setting_rows: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[list[str], dict[str, dict[str, Any]]]:
  """Markdown lines of one setting and, per method, its figures and its
  paired intervals (primary and final) against fedavg, fixed heads and the
  best method (the best itself: against the runner-up)."""
  best = best_method(setting_rows)
  runner_up = best_method(setting_rows, exclude=best) if best else None
  references = {BASELINE: BASELINE, HEADS_CONTROL: HEADS_CONTROL}
  lines = ['| method | lr | **last-5 top-1** (mean ± std) | final top-1 | '
           f'− {BASELINE} [95% CI] ±half | − {HEADS_CONTROL} | '
           f'− best ({best}) | rounds to target | eff. clients | z split | '
           'conflict fraction | OGM coefficient |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  stats_of = {}
  for label, row in setting_rows.items():
    runs = row['runs']
    entry = {'primary': _mean_std(r.get(PRIMARY) for r in runs),
             'final': _mean_std(r.get(FINAL) for r in runs),
             'mechanisms': mechanisms(runs), 'vs': {}}
    versus = dict(references, best=runner_up if label == best else best)
    cells = []
    for name, other in versus.items():
      if other is None or other == label or other not in setting_rows:
        cells.append('—')
        continue
      other_runs = setting_rows[other]['runs']
      entry['vs'][name] = {'against': other,
                           'primary': paired(runs, other_runs, PRIMARY),
                           'final': paired(runs, other_runs, FINAL)}
      cells.append(_interval_cell(entry['vs'][name]['primary']) +
                   (f' vs {other}' if name == 'best' else ''))
    reached = [r['rounds_to_target'] for r in runs
               if r.get('rounds_to_target') is not None]
    rounds = ((f'{np.mean(reached):.1f}' if reached else '—') +
              f' ({len(reached)}/{len(runs)})') if runs else '—'
    lines.append(
        f'| {label} | {_chosen_value(row.get("tuning"))} | '
        f'{_figure(*entry["primary"])} | {_figure(*entry["final"])} | ' +
        ' | '.join(cells) + f' | {rounds} | ' +
        ' | '.join(_mechanism_cells(entry['mechanisms'])) + ' |')
    stats_of[label] = entry
  return lines, stats_of


def overview(study: Mapping[str, Any], tables: Mapping[str, Mapping]
             ) -> list[str]:
  """One line per setting: the best method and the power of the comparisons
  the issue targets (hgb − fedavg, hgb − the best other method)."""
  lines = ['| setting | best (last-5) | best − fedavg | best − fixed heads | '
           'hgb − fedavg ±half | hgb − best other ±half |',
           '|---|---|---|---|---|---|']
  for name, rows in study['rows'].items():
    entries = tables.get(name)
    if not entries:
      continue
    best = best_method(rows)
    best_entry = entries.get(best, {'vs': {}})
    hgb = entries.get('hgb', {'vs': {}})
    best_other = best_method(rows, exclude='hgb')

    def cell(entry, name):
      vs = entry['vs'].get(name)
      return _interval_cell(vs['primary']) if vs else '—'

    hgb_best = '—'
    if 'hgb' in rows and best_other:
      interval = paired(rows['hgb']['runs'], rows[best_other]['runs'])
      hgb_best = _interval_cell(interval) + f' vs {best_other}'
    lines.append(f'| {name} | {best} | {cell(best_entry, BASELINE)} | '
                 f'{cell(best_entry, HEADS_CONTROL)} | '
                 f'{cell(hgb, BASELINE)} | {hgb_best} |')
  return lines


def _selection_settings(study: Mapping[str, Any]) -> list[str]:
  """The settings that choose the default hgb, in the study's order."""
  return [n for n, s in study['settings'].items() if s['selection']]


def _selection_lines(study: Mapping[str, Any]) -> list[str]:
  selection = study.get('selection')
  if not selection:
    return []
  selecting = _selection_settings(study)
  lines = ['## Default `hgb`: chosen on validation data', '',
           'Candidates tuned on the selection settings only; score = the '
           'tuning score (validation data held out of the training pool).',
           '', '| candidate | configuration | ' + ' | '.join(selecting) +
           ' | mean |', '|---|---|' + '---|' * (1 + len(selecting))]
  for label, per in selection['scores'].items():
    marker = ' **(chosen)**' if label == selection['chosen'] else ''
    lines.append(f'| {label}{marker} | {selection["candidates"][label]} | ' +
                 ' | '.join(f'{100 * v:.2f}' for v in per.values()) + ' |')
  return lines + ['']


# The literal paper is a reference row, never a candidate for the default.
_NOT_A_DEFAULT = ('hgb_paper',)


def validation_choice(study: Mapping[str, Any]) -> Optional[dict[str, Any]]:
  """The default `hgb` re-chosen on validation data (a plan with its own
  methods): on the selection settings, each method's tuning score at its
  chosen value (validation held out of the training pool, never the test
  set), averaged over those settings; the best HGB-like candidate against
  the best control. None without selection settings or tuning records.
  """
  selecting = _selection_settings(study)
  scores: dict[str, dict[str, float]] = collections.OrderedDict()
  kinds = {}
  for name in selecting:
    for label, row in study['rows'].get(name, {}).items():
      tuning = row.get('tuning') or {}
      chosen = [c for c in tuning.get('candidates', ())
                if c.get('values') == tuning.get('chosen')]
      if chosen and reports.is_finite_number(chosen[0].get('score')):
        scores.setdefault(label, {})[name] = chosen[0]['score']
        kinds[label] = ('HGB-like' if row.get('algorithm') in HGB_LIKE
                        else 'control')
  complete = {label: float(np.mean(list(per.values())))
              for label, per in scores.items() if len(per) == len(selecting)}
  if not selecting or not complete:
    return None
  candidates = {k: v for k, v in complete.items()
                if kinds[k] == 'HGB-like' and k not in _NOT_A_DEFAULT}
  controls = {k: v for k, v in complete.items() if kinds[k] == 'control'}
  best_hgb = max(candidates, key=candidates.get) if candidates else None
  best_control = max(controls, key=controls.get) if controls else None
  beats = (best_hgb is not None and best_control is not None and
           candidates[best_hgb] > controls[best_control])
  return {'settings': selecting, 'scores': scores, 'means': complete,
          'kinds': kinds, 'best_hgb_like': best_hgb,
          'best_control': best_control, 'hgb_like_beats_controls': beats}


def _validation_choice_lines(study: Mapping[str, Any]) -> list[str]:
  choice = validation_choice(study)
  if choice is None:
    return []
  study['validation_choice'] = choice
  lines = ['## Default `hgb`: re-chosen on validation data', '',
           'Each method\'s tuning score at its chosen learning rate on the '
           'selection settings (mean over the tuning seeds of the validation '
           'accuracy of the last rounds; validation held out of the training '
           'pool, never the test set).', '',
           '| method | kind | ' + ' | '.join(choice['settings']) + ' | mean |',
           '|---|---|' + '---|' * (1 + len(choice['settings']))]
  for label, per in choice['scores'].items():
    mean = choice['means'].get(label)
    lines.append(
        f'| {label} | {choice["kinds"][label]} | ' +
        ' | '.join(f'{100 * per[n]:.2f}' if n in per else '—'
                   for n in choice['settings']) +
        f' | {"—" if mean is None else f"{100 * mean:.2f}"} |')
  best_hgb, best_control = choice['best_hgb_like'], choice['best_control']
  if best_hgb is None:
    verdict = ('No HGB-like candidate has a score on every selection setting '
               'yet.')
  elif choice['hgb_like_beats_controls']:
    verdict = (f'The best HGB-like candidate, `{best_hgb}`, beats the best '
               f'control, `{best_control}`, on validation.')
  else:
    verdict = (f'No HGB-like candidate beats the best control on validation '
               f'(best HGB-like `{best_hgb}`, best control `{best_control}`): '
               'the default `hgb` stays as it is (hgb_paper is the literal '
               'paper, not a candidate).')
  return lines + ['', verdict, '']


def _time_lines(study: Mapping[str, Any]) -> list[str]:
  timing = study.get('timing') or {}
  if not timing:
    return []
  return [f'Wall time: {timing["wall_seconds"] / 3600:.2f} h over '
          f'{timing["sittings"]} sitting(s) of the runner; compute in the '
          f'runs themselves {timing["run_seconds"] / 3600:.2f} h '
          f'({timing["runs"]} final runs, {timing["tuning_runs"]} tuning '
          'runs).', '']


def study_markdown(study: Mapping[str, Any]) -> str:
  """STUDY.md of a study record (`study.run_study`); adds its 'intervals'."""
  lines = [f'# {study.get("title", "Study results")}', '',
           'Every number below is computed from the run directories beside '
           'this file (regenerate with `--report_only`).', '']
  if study.get('quick'):
    lines += ['**Quick**: a few rounds, 4 clients, 2 learning rates, 2 tuning '
              'seeds (the machinery, not results); the settings below list '
              'the full study\'s overrides.', '']
  lines += _time_lines(study)
  tables, sections = {}, []
  for name, rows in study['rows'].items():
    if not rows:
      continue
    info = study['settings'][name]
    table, entries = setting_table(rows)
    tables[name] = entries
    sections += [f'### {name}', '', info['description'] + '; ' + ', '.join(
        f'{k} {v}' for k, v in info['overrides'].items()
        if k not in ('dataset', 'partition', 'tune')) + '.', ''] + table + ['']
  lines += ['## Overview', ''] + overview(study, tables) + ['']
  lines += _selection_lines(study)
  lines += _validation_choice_lines(study)
  lines += ['## Settings', ''] + sections
  lines += ['Methods: ' + '; '.join(
      f'{label} = {row["method"]}' for label, row in
      next(iter(study['rows'].values()), {}).items()) + '.', '',
            f'Primary figure: test top-1 averaged over the last '
            f'{reports.LAST_ROUNDS} evaluated rounds of each run (final: the '
            'last round\'s). Paired differences are in accuracy points on the '
            'primary figure, seed by seed (seed = initial weights, partition '
            'and local data order), with a 95% t-interval and its half-width; '
            '"better"/"worse" when the interval excludes 0; where the '
            f'half-width exceeds {100 * TARGET_HALF_WIDTH:.0f} points, the '
            'seeds a ±3 interval would need at the measured variance. lr = '
            'the tuned value ("edge": on its grid\'s edge; "ext": grid '
            'extensions past an edge).', '']
  study['intervals'] = tables
  return '\n'.join(lines)
