"""Reports of finished runs: one run's summary, a comparison's table and plot.

Reads rows and summaries (`results`); writes comparison.md/.png atomically.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from tff_hgb.experiment import results


# ---------------------------------------------------------------------------
# One run's summary from its rows.
# ---------------------------------------------------------------------------


def is_finite_number(value) -> bool:
  """Whether `value` is an int or float that is neither NaN nor infinite."""
  return isinstance(value, (int, float)) and math.isfinite(value)


def accuracy_curve(rows: Sequence[Mapping[str, Any]],
                   column: str = results.TEST_FUSION_ACCURACY
                   ) -> tuple[list[int], list[float]]:
  """(rounds, values) of the rows where `column` was evaluated."""
  points = [(int(r[results.ROUND]), float(r[column])) for r in rows
            if is_finite_number(r.get(column))]
  return [p[0] for p in points], [p[1] for p in points]


# The primary figure of a run (issue 20): its test accuracy averaged over the
# last this many evaluated rounds, less sensitive to one bad round than the
# final round's.
LAST_ROUNDS = 5

# Mechanism metrics summarised per run (mean over the rounds that logged
# them): the head weights z/<head>, the effective number of clients, MMPareto's
# conflict fraction and OGM-GE's coefficient per modality.
_MECHANISM = re.compile(r'^(z/.+|client_weight/effective_clients|'
                        r'[^/]+/conflict_fraction/.+|[^/]+/coefficient/.+)$')


def last_rounds_mean(values: Sequence[float], count: int = LAST_ROUNDS
                     ) -> Optional[float]:
  """The mean of the last `count` values (all of them if fewer); None if none.

  A non-finite value (a diverged round) makes the mean NaN: a collapse is not
  averaged away.
  """
  values = list(values)[-count:]
  return float(np.mean(values)) if values else None


def mechanism_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """column → mean over the rounds that logged it, for the mechanism columns."""
  columns = sorted({k for r in rows for k in r if _MECHANISM.match(k)})
  means = {}
  for column in columns:
    series = [float(r[column]) for r in rows if is_finite_number(r.get(column))]
    if series:
      means[column] = float(np.mean(series))
  return means


def summarize_rows(rows: Sequence[Mapping[str, Any]], *,
                   target_accuracy: Optional[float],
                   column: str = results.TEST_FUSION_ACCURACY
                   ) -> dict[str, Any]:
  """final/best accuracy, rounds to target and per-round medians of a run.

  final_accuracy is the value at the last evaluated round, last_rounds_accuracy
  the mean of the last `LAST_ROUNDS` evaluated rounds; rounds_to_target the
  first evaluated round whose accuracy is ≥ target_accuracy (None if never).
  """
  rounds, values = accuracy_curve(rows, column)
  seconds = [float(r[results.SECONDS]) for r in rows
             if is_finite_number(r.get(results.SECONDS))]
  summary = {
      'rounds_completed': max((int(r[results.ROUND]) for r in rows), default=0),
      'final_accuracy': values[-1] if values else None,
      'last_rounds_accuracy': last_rounds_mean(values),
      'best_accuracy': max(values) if values else None,
      'best_round': rounds[int(np.argmax(values))] if values else None,
      'rounds_to_target': None,
      'seconds_per_round_median': (statistics.median(seconds)
                                   if seconds else None),
  }
  if target_accuracy is not None:
    for r, v in zip(rounds, values):
      if v >= target_accuracy:
        summary['rounds_to_target'] = r
        break
  for name, key in ((results.EFFECTIVE_CLIENTS, 'effective_clients_mean'),
                    (results.FUSION_WEIGHT, 'fusion_weight_mean')):
    series = [float(r[name]) for r in rows if is_finite_number(r.get(name))]
    if series:
      summary[key] = float(np.mean(series))
  return summary


# ---------------------------------------------------------------------------
# Comparisons: many runs (algorithms × seeds).
# ---------------------------------------------------------------------------


def _mean_std(values: Iterable[Optional[float]]):
  values = [float(v) for v in values if is_finite_number(v)]
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values))


def aggregate(runs: Mapping[str, Sequence[Mapping[str, Any]]],
              *, baselines: Sequence[str] = ()) -> dict[str, Any]:
  """Per algorithm: means and spreads over its seeds' summary.json dicts.

  Args:
    runs: algorithm name → the summary dicts of its seeds.
    baselines: the names ΔCR compares against (the fastest of them).

  Returns:
    {name: {final_accuracy_mean, final_accuracy_std, best_accuracy_mean,
    best_accuracy_std, rounds_to_target_mean, rounds_to_target_reached,
    seeds, seconds_per_round_median, effective_clients_mean,
    fusion_weight_mean, missing_modality_accuracy: {m: mean}, tuned, delta_cr}}
  """
  table = {}
  for name, summaries in runs.items():
    summaries = list(summaries)
    final_mean, final_std = _mean_std(s.get('final_accuracy')
                                      for s in summaries)
    best_mean, best_std = _mean_std(s.get('best_accuracy') for s in summaries)
    reached = [s['rounds_to_target'] for s in summaries
               if s.get('rounds_to_target') is not None]
    seconds = [s.get('seconds_per_round_median') for s in summaries
               if is_finite_number(s.get('seconds_per_round_median'))]
    row = {
        'seeds': len(summaries),
        'final_accuracy_mean': final_mean,
        'final_accuracy_std': final_std,
        'best_accuracy_mean': best_mean,
        'best_accuracy_std': best_std,
        'rounds_to_target_mean': float(np.mean(reached)) if reached else None,
        'rounds_to_target_reached': len(reached),
        'rounds_completed': max((s.get('rounds_completed') or 0
                                 for s in summaries), default=0),
        'seconds_per_round_median': (statistics.median(seconds)
                                     if seconds else None),
    }
    for key in ('effective_clients_mean', 'fusion_weight_mean'):
      mean, _ = _mean_std(s.get(key) for s in summaries)
      if mean is not None:
        row[key] = mean
    missing = {}
    for s in summaries:
      for m, v in (s.get('missing_modality_accuracy') or {}).items():
        missing.setdefault(m, []).append(v)
    if missing:
      row['missing_modality_accuracy'] = {
          m: _mean_std(v)[0] for m, v in missing.items()}
    tuned = [s.get('tuned') for s in summaries if s.get('tuned')]
    if tuned:
      row['tuned'] = tuned[0]
    table[name] = row
  baseline_rounds = [table[b]['rounds_to_target_mean'] for b in baselines
                     if b in table and
                     table[b]['rounds_to_target_mean'] is not None]
  fastest = min(baseline_rounds) if baseline_rounds else None
  for name, row in table.items():
    row['is_baseline'] = (name in baselines) if baselines else None
    if name in baselines or not baselines:
      continue
    ours = row['rounds_to_target_mean']
    if ours is not None and fastest is not None:
      row['delta_cr'] = fastest - ours
    elif ours is not None and baselines:
      # No baseline reached the target within the run: at least this many.
      row['delta_cr_at_least'] = row['rounds_completed'] + 1 - ours
  return table


def pct(value, std=None) -> str:
  if value is None:
    return '—'
  if std is None:
    return f'{100 * value:.2f}'
  return f'{100 * value:.2f} ± {100 * std:.2f}'


def _number(value, digits=1) -> str:
  return '—' if value is None else f'{value:.{digits}f}'


def delta_cr_cell(row: Mapping[str, Any]) -> str:
  """ΔCR of a non-baseline row ('' for baselines, which have no ΔCR)."""
  if 'delta_cr' in row:
    return f'{row["delta_cr"]:+.1f}'
  if 'delta_cr_at_least' in row:
    return f'≥ {row["delta_cr_at_least"]:+.1f}'
  if row.get('is_baseline') is False:
    return 'target not reached'
  return ''


def edge_fields(record: Optional[Mapping[str, Any]]) -> list[str]:
  """The tuned fields whose chosen value lies on the edge of its grid.

  A value on the edge (the smallest or largest tried, of a grid of more than
  one value) says the grid may be too narrow: the optimum may lie outside it.

  Args:
    record: a tuning record (tuning.json: 'chosen' field → value and
      'candidates', each with its 'values'), or None.

  Returns:
    The fields on the edge, in the order of 'chosen' (empty without tuning).
  """
  if not record or not record.get('chosen'):
    return []
  edges = []
  for field, value in record['chosen'].items():
    grid = {c['values'][field] for c in record.get('candidates', ())
            if field in c['values']}
    if len(grid) > 1 and value in (min(grid), max(grid)):
      edges.append(field)
  return edges


def tuned_text(tuned: Optional[Mapping[str, Any]],
               edges: Sequence[str] = ()) -> str:
  """'field=value, ...' with ' (edge)' beside the values on their grid's edge."""
  return ', '.join(
      (f'{k}={v:g}' if isinstance(v, (int, float)) else f'{k}={v}') +
      (' (edge)' if k in edges else '') for k, v in (tuned or {}).items())


def comparison_markdown(table: Mapping[str, Mapping[str, Any]], *,
                        target_accuracy: Optional[float],
                        title: str = 'Comparison',
                        centralized: Optional[Mapping[str, Any]] = None,
                        notes: Sequence[str] = ()) -> str:
  """The comparison table (the paper's Table II layout) as Markdown."""
  modalities = sorted({m for row in table.values()
                       for m in row.get('missing_modality_accuracy', {})})
  header = ['algorithm', 'seeds', 'final top-1 (%)', 'best top-1 (%)',
            'rounds to target', 'ΔCR', 'effective clients',
            'mean fusion weight', 's/round', 'tuned']
  header += [f'without {m} (%)' for m in modalities]
  lines = [f'# {title}', '']
  if target_accuracy is not None:
    lines.append(f'Target accuracy: {100 * target_accuracy:.1f}% (test fusion '
                 'top-1). Mean ± std over seeds. ΔCR = rounds to target of the '
                 'fastest baseline minus this row\'s ("≥" when no baseline '
                 'reached the target).')
    lines.append('')
  lines.append('| ' + ' | '.join(header) + ' |')
  lines.append('|' + '---|' * len(header))
  for name, row in table.items():
    rounds = row.get('rounds_to_target_mean')
    rounds_text = ('—' if rounds is None else
                   f'{rounds:.1f} ({row["rounds_to_target_reached"]}/'
                   f'{row["seeds"]})')
    delta = delta_cr_cell(row)
    tuned = tuned_text(row.get('tuned'), row.get('tuned_edge', ()))
    cells = [f'`{name}`', str(row['seeds']),
             pct(row['final_accuracy_mean'], row['final_accuracy_std']),
             pct(row['best_accuracy_mean'], row['best_accuracy_std']),
             rounds_text, delta,
             _number(row.get('effective_clients_mean')),
             _number(row.get('fusion_weight_mean'), 3),
             _number(row.get('seconds_per_round_median'), 2),
             tuned]
    missing = row.get('missing_modality_accuracy', {})
    cells += [pct(missing.get(m)) for m in modalities]
    lines.append('| ' + ' | '.join(cells) + ' |')
  if centralized:
    cells = ['centralized (fused loss)', str(centralized.get('seeds', '')),
             pct(centralized.get('final_accuracy_mean'),
                  centralized.get('final_accuracy_std')),
             pct(centralized.get('best_accuracy_mean'),
                  centralized.get('best_accuracy_std')),
             '', '', '', '', '', '']
    cells += [''] * len(modalities)
    lines.append('| ' + ' | '.join(cells) + ' |')
  if notes:
    lines.append('')
    lines.extend(f'- {n}' for n in notes)
  return '\n'.join(lines) + '\n'


def plot_comparison(curves: Mapping[str, Sequence[tuple[Sequence[int],
                                                        Sequence[float]]]],
                    path: str, *, title: str = 'Test accuracy',
                    target_accuracy: Optional[float] = None,
                    centralized: Optional[float] = None) -> None:
  """Accuracy vs round: one line per algorithm (mean over seeds, min–max band).

  Args:
    curves: name → one (rounds, accuracies) pair per seed.
    path: the .png to write (atomically).
    title: plot title.
    target_accuracy: drawn as a dotted line when given.
    centralized: the centralized reference accuracy, drawn as a dashed line.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  figure, axes = plt.subplots(figsize=(7, 4.5))
  for name, seeds in curves.items():
    seeds = [s for s in seeds if len(s[0])]
    if not seeds:
      continue
    common = sorted(set.intersection(*[set(s[0]) for s in seeds]))
    if not common:
      continue
    values = np.array([[dict(zip(r, v))[c] for c in common] for r, v in seeds])
    mean = values.mean(axis=0)
    line, = axes.plot(common, 100 * mean, label=name, linewidth=1.6)
    if len(seeds) > 1:
      axes.fill_between(common, 100 * values.min(axis=0),
                        100 * values.max(axis=0), color=line.get_color(),
                        alpha=0.15, linewidth=0)
  if target_accuracy is not None:
    axes.axhline(100 * target_accuracy, color='grey', linestyle=':',
                 linewidth=1, label='target')
  if centralized is not None:
    axes.axhline(100 * centralized, color='black', linestyle='--',
                 linewidth=1, label='centralized')
  axes.set_xlabel('round')
  axes.set_ylabel('test top-1 accuracy (%), fusion head')
  axes.set_title(title)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8, loc='lower right')
  figure.tight_layout()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=directory, suffix='.png')
  os.close(fd)
  try:
    figure.savefig(temp, dpi=110)
    os.replace(temp, path)
  finally:
    plt.close(figure)
    if os.path.exists(temp):
      os.unlink(temp)
