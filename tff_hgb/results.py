"""The one writer of experiment results: metrics.csv, JSON files, TensorBoard,
comparison tables and plots.

Every file is written atomically (a temporary file in the same directory, then
`os.replace`), so a run killed at any moment leaves either the previous or the
new version of a file, never half of one. `metrics.csv` is small (one row per
round) and is rewritten as a whole after each round, which also lets a resumed
run drop the rows after its checkpoint (`RunWriter.truncate`).

A run directory holds:

  flags.json        the configuration the run used (ExperimentConfig fields)
  partition.txt     the partition's human-readable report
  partition.json    the partition itself (client → examples, modalities)
  metrics.csv       one row per round (see `experiment.py` for the columns)
  tensorboard/      the same scalars as TensorBoard events
  tuning.json       (with --tune) validation accuracy of every tried value
  summary.json      final/best accuracy, rounds to target, missing-modality
                    accuracies, chosen tuned values (`summarize_rows` + extras)
  state/            program state (`tff.program.FileProgramStateManager`)

A comparison directory (experiments/compare.py) holds one run directory per
algorithm and seed, and `comparison.md`, `comparison.png` and `summary.json`
(`aggregate`, `comparison_markdown`, `plot_comparison`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

METRICS_CSV = 'metrics.csv'
SUMMARY_JSON = 'summary.json'
FLAGS_JSON = 'flags.json'
TUNING_JSON = 'tuning.json'
PARTITION_TXT = 'partition.txt'
PARTITION_JSON = 'partition.json'
TENSORBOARD_DIR = 'tensorboard'
STATE_DIR = 'state'
COMPARISON_MD = 'comparison.md'
COMPARISON_PNG = 'comparison.png'

# Column names shared by the training loop and the readers below.
ROUND = 'round'
SECONDS = 'seconds'
TEST_FUSION_ACCURACY = 'test/fusion/accuracy'
EFFECTIVE_CLIENTS = 'client_weight/effective_clients'
FUSION_WEIGHT = 'z/fusion'

# Columns that come first in metrics.csv, in this order; the rest are sorted.
_LEADING = (ROUND, SECONDS, 'eval_seconds', TEST_FUSION_ACCURACY)


# ---------------------------------------------------------------------------
# Atomic files.
# ---------------------------------------------------------------------------


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and `os.replace`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, temp = tempfile.mkstemp(dir=directory,
                              prefix=f'.{os.path.basename(path)}.',
                              suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.unlink(temp)
    raise


def _json_default(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (set, frozenset, tuple)):
    return list(value)
  raise TypeError(f'{type(value).__name__} is not JSON serializable')


def clean_for_json(value):
  """NaN/inf → None (strict JSON), NumPy → Python, recursively."""
  if isinstance(value, Mapping):
    return {str(k): clean_for_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [clean_for_json(v) for v in value]
  if isinstance(value, np.ndarray):
    return clean_for_json(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def atomic_write_json(path: str, value: Any) -> None:
  atomic_write_text(
      path, json.dumps(clean_for_json(value), indent=2, sort_keys=False,
                       default=_json_default, allow_nan=False) + '\n')


def read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


# ---------------------------------------------------------------------------
# metrics.csv
# ---------------------------------------------------------------------------


def _to_float(text: str):
  if text == '':
    return None
  try:
    number = float(text)
  except ValueError:
    return text
  if number.is_integer() and 'e' not in text.lower() and '.' not in text:
    return int(number)
  return number


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  seen = set()
  for row in rows:
    seen.update(row)
  leading = [c for c in _LEADING if c in seen]
  return leading + sorted(seen - set(leading))


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns_of(rows),
                          lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: ('' if v is None or (isinstance(v, float) and
                                             math.isnan(v)) else v)
                     for k, v in row.items()})
  return buffer.getvalue()


def read_metrics(path: str) -> list[dict[str, Any]]:
  """Rows of a metrics.csv (numbers parsed, empty cells → None)."""
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8', newline='') as f:
    return [{k: _to_float(v) for k, v in row.items()}
            for row in csv.DictReader(f)]


def flatten_metrics(metrics: Any, prefix: str = '') -> dict[str, float]:
  """A nested structure of scalars → {'a/b/c': float}; non-scalars skipped."""
  flat = {}
  if hasattr(metrics, 'items'):
    for key, value in metrics.items():
      flat.update(flatten_metrics(value, f'{prefix}{key}/'))
    return flat
  if isinstance(metrics, (list, tuple)) and not hasattr(metrics, 'shape'):
    for i, value in enumerate(metrics):
      flat.update(flatten_metrics(value, f'{prefix}{i}/'))
    return flat
  array = np.asarray(metrics)
  if array.size == 1 and np.issubdtype(array.dtype, np.number):
    flat[prefix.rstrip('/')] = float(array.reshape(()))
  return flat


class RunWriter:
  """Writes one run's files into `output_dir` (metrics rows, JSON, events).

  `append(row)` adds a round's row, rewrites metrics.csv atomically and writes
  the row's numbers to TensorBoard (step = round).
  """

  def __init__(self, output_dir: str, *, tensorboard: bool = True):
    self.output_dir = output_dir
    os.makedirs(output_dir, exist_ok=True)
    self.rows: list[dict[str, Any]] = read_metrics(self.path(METRICS_CSV))
    self._tensorboard = tensorboard
    self._summary_writer = None

  def path(self, name: str) -> str:
    return os.path.join(self.output_dir, name)

  def truncate(self, last_round: int) -> None:
    """Drops the rows after `last_round` (they are redone on resume)."""
    kept = [r for r in self.rows if int(r[ROUND]) <= last_round]
    if len(kept) != len(self.rows) or not os.path.exists(
        self.path(METRICS_CSV)):
      self.rows = kept
      atomic_write_text(self.path(METRICS_CSV), rows_to_csv(self.rows))

  def append(self, row: Mapping[str, Any]) -> None:
    self.rows = [r for r in self.rows if int(r[ROUND]) != int(row[ROUND])]
    self.rows.append(dict(row))
    atomic_write_text(self.path(METRICS_CSV), rows_to_csv(self.rows))
    if self._tensorboard:
      self._write_events(row)

  def _write_events(self, row):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self._summary_writer is None:
      self._summary_writer = tf.summary.create_file_writer(
          self.path(TENSORBOARD_DIR))
    step = int(row[ROUND])
    with self._summary_writer.as_default():
      for key, value in row.items():
        if key == ROUND or not isinstance(value, (int, float, np.number)):
          continue
        if isinstance(value, float) and not math.isfinite(value):
          continue
        tf.summary.scalar(key, float(value), step=step)
    self._summary_writer.flush()

  def write_json(self, name: str, value: Any) -> None:
    atomic_write_json(self.path(name), value)

  def write_text(self, name: str, text: str) -> None:
    atomic_write_text(self.path(name), text)

  def close(self) -> None:
    if self._summary_writer is not None:
      self._summary_writer.close()
      self._summary_writer = None


# ---------------------------------------------------------------------------
# One run's summary from its rows.
# ---------------------------------------------------------------------------


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def accuracy_curve(rows: Sequence[Mapping[str, Any]],
                   column: str = TEST_FUSION_ACCURACY
                   ) -> tuple[list[int], list[float]]:
  """(rounds, values) of the rows where `column` was evaluated."""
  points = [(int(r[ROUND]), float(r[column])) for r in rows
            if _finite(r.get(column))]
  return [p[0] for p in points], [p[1] for p in points]


def summarize_rows(rows: Sequence[Mapping[str, Any]], *,
                   target_accuracy: Optional[float],
                   column: str = TEST_FUSION_ACCURACY) -> dict[str, Any]:
  """final/best accuracy, rounds to target and per-round medians of a run.

  final_accuracy is the value at the last evaluated round; rounds_to_target the
  first evaluated round whose accuracy is ≥ target_accuracy (None if never).
  """
  rounds, values = accuracy_curve(rows, column)
  seconds = [float(r[SECONDS]) for r in rows if _finite(r.get(SECONDS))]
  summary = {
      'rounds_completed': max((int(r[ROUND]) for r in rows), default=0),
      'final_accuracy': values[-1] if values else None,
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
  for name, key in ((EFFECTIVE_CLIENTS, 'effective_clients_mean'),
                    (FUSION_WEIGHT, 'fusion_weight_mean')):
    series = [float(r[name]) for r in rows if _finite(r.get(name))]
    if series:
      summary[key] = float(np.mean(series))
  return summary


# ---------------------------------------------------------------------------
# Comparisons: many runs (algorithms × seeds).
# ---------------------------------------------------------------------------


def _mean_std(values: Iterable[Optional[float]]):
  values = [float(v) for v in values if _finite(v)]
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
    final_mean, final_std = _mean_std(s.get('final_accuracy') for s in summaries)
    best_mean, best_std = _mean_std(s.get('best_accuracy') for s in summaries)
    reached = [s['rounds_to_target'] for s in summaries
               if s.get('rounds_to_target') is not None]
    seconds = [s.get('seconds_per_round_median') for s in summaries
               if _finite(s.get('seconds_per_round_median'))]
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


def _pct(value, std=None) -> str:
  if value is None:
    return '—'
  if std is None:
    return f'{100 * value:.2f}'
  return f'{100 * value:.2f} ± {100 * std:.2f}'


def _number(value, digits=1) -> str:
  return '—' if value is None else f'{value:.{digits}f}'


def _delta_cr_cell(row: Mapping[str, Any]) -> str:
  """ΔCR of a non-baseline row ('' for baselines, which have no ΔCR)."""
  if 'delta_cr' in row:
    return f'{row["delta_cr"]:+.1f}'
  if 'delta_cr_at_least' in row:
    return f'≥ {row["delta_cr_at_least"]:+.1f}'
  if row.get('is_baseline') is False:
    return 'target not reached'
  return ''


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
    delta = _delta_cr_cell(row)
    tuned = ', '.join(f'{k}={v:g}' if isinstance(v, (int, float)) else
                      f'{k}={v}' for k, v in (row.get('tuned') or {}).items())
    cells = [f'`{name}`', str(row['seeds']),
             _pct(row['final_accuracy_mean'], row['final_accuracy_std']),
             _pct(row['best_accuracy_mean'], row['best_accuracy_std']),
             rounds_text, delta,
             _number(row.get('effective_clients_mean')),
             _number(row.get('fusion_weight_mean'), 3),
             _number(row.get('seconds_per_round_median'), 2),
             tuned]
    missing = row.get('missing_modality_accuracy', {})
    cells += [_pct(missing.get(m)) for m in modalities]
    lines.append('| ' + ' | '.join(cells) + ' |')
  if centralized:
    cells = ['centralized (fused loss)', str(centralized.get('seeds', '')),
             _pct(centralized.get('final_accuracy_mean'),
                  centralized.get('final_accuracy_std')),
             _pct(centralized.get('best_accuracy_mean'),
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


# ---------------------------------------------------------------------------
# The paper's tables beside ours (experiments/paper_tables.py).
# ---------------------------------------------------------------------------

# ALGORITHM.md §1 and §8 (Chen & Li, INFOCOM 2022), top-1 %.
PAPER_TABLE_I = {
    # Kinetics, FedAvg vs centralized, by modality set.
    'one': {'label': 'RGB', 'centralized': 71.52, 'fedavg': 58.43},
    'all': {'label': 'A+RGB (OF+RGB 52.57; A+OF+RGB: centralized 73.62, '
                     'FedAvg 38.62)',
            'centralized': None, 'fedavg': 49.91},
}
PAPER_TABLE_II = {
    'mixed_b': {'Kinetics': {'fedavg': 38.04, 'fedattn': 51.79,
                             'fednova': 55.12, 'hgb': 62.97, 'uni': 62.33},
                'FineGym': {'fedavg': 42.33, 'fedattn': 58.07,
                            'fednova': 63.92, 'hgb': 71.66, 'uni': 70.52}},
    '2m_b': {'Kinetics': {'fedavg': 44.32, 'fedattn': 56.91,
                          'fednova': 58.76, 'hgb': 64.39, 'uni': None}},
}
PAPER_TABLE_III_NOTE = ('The paper reports (Table III) that M-GB gives more '
                        'accuracy and C-GB faster convergence, and HGB (both) '
                        'the best of both, on every setting.')


def _cell(row: Optional[Mapping[str, Any]]) -> str:
  if not row or row.get('final_accuracy_mean') is None:
    return '—'
  return _pct(row['final_accuracy_mean'], row.get('final_accuracy_std'))


def _rounds_cell(row: Optional[Mapping[str, Any]],
                 key: str = 'rounds_to_target_mean') -> str:
  if not row:
    return '—'
  value = row.get(key)
  if value is None:
    return 'not reached'
  reached = row.get('rounds_to_target_reached')
  suffix = f' ({reached}/{row["seeds"]})' if reached is not None else ''
  return f'{value:.1f}{suffix}'


def _paper(value) -> str:
  return '—' if value is None else f'{value:.2f}'


def paper_tables_markdown(settings: Mapping[str, Mapping[str, Any]],
                          centralized: Mapping[str, Optional[Mapping]],
                          *, tables: Sequence[int], modalities: Sequence[str],
                          notes: Sequence[str] = ()) -> str:
  """RESULTS.md: Tables I–III of the paper with ours beside them.

  Args:
    settings: scheme → comparison summary (experiment.run_comparison).
    centralized: '+'-joined modality set → centralized reference row.
    tables: which tables were run.
    modalities: the data set's modalities.
    notes: lines describing the run.
  """
  lines = ['# The paper\'s tables on our data', '',
           'Ours: test fusion top-1 %, mean ± std over seeds; rounds to the '
           'target accuracy (seeds that reached it). Paper: Chen & Li, '
           'INFOCOM 2022 (Kinetics/FineGym video, not comparable in '
           'absolute terms: compare the orderings).', '']
  lines += [f'- {n}' for n in notes]
  lines.append('')
  if 1 in tables:
    table = (settings.get('case_a') or {}).get('algorithms', {})
    lines += ['## Table I — modality sets: centralized vs FedAvg (case A)', '',
              '| modalities | centralized (ours) | FedAvg (ours) | FedAvg '
              'rounds to target | centralized epochs to target | paper '
              'centralized | paper FedAvg |',
              '|---|---|---|---|---|---|---|']
    sets = [[m] for m in modalities] + [list(modalities)]
    for subset in sets:
      label = '+'.join(subset)
      name = 'fedavg' if len(subset) > 1 else f'uni:{subset[0]}'
      paper = PAPER_TABLE_I['all' if len(subset) > 1 else 'one']
      central = centralized.get(label)
      lines.append(
          f'| {label} | {_cell(central)} | {_cell(table.get(name))} | '
          f'{_rounds_cell(table.get(name))} | '
          f'{_rounds_cell(central, "epochs_to_target_mean") if central else "—"}'
          f' | {paper["label"]}: {_paper(paper["centralized"])} | '
          f'{_paper(paper["fedavg"])} |')
    lines.append('')
  if 2 in tables:
    lines += ['## Table II — case B: baselines, HGB and the best uni-modal '
              'model', '']
    for scheme in ('mixed_b', '2m_b'):
      summary = settings.get(scheme)
      if not summary:
        continue
      table = summary.get('algorithms', {})
      paper = PAPER_TABLE_II.get(scheme, {})
      datasets = list(paper)
      lines += [f'### {scheme}', '',
                '| algorithm | ours top-1 | rounds to target | ΔCR | ' +
                ' | '.join(f'paper {d}' for d in datasets) + ' |',
                '|---|---|---|---|' + '---|' * len(datasets)]
      names = ['fedavg', 'fedattn', 'fednova', 'hgb_paper']
      names += [n for n in table if n.startswith('uni:')]
      for name in names:
        row = table.get(name)
        key = ('uni' if name.startswith('uni:') else
               'hgb' if name == 'hgb_paper' else name)
        delta = _delta_cr_cell(row) if row else ''
        lines.append(f'| `{name}` | {_cell(row)} | {_rounds_cell(row)} | '
                     f'{delta} | ' + ' | '.join(
                         _paper(paper[d].get(key)) for d in datasets) + ' |')
      lines.append('')
  if 3 in tables:
    lines += ['## Table III — ablation: M-GB vs C-GB (and both = HGB)', '',
              PAPER_TABLE_III_NOTE, '',
              '| setting | M-GB top-1 | M-GB rounds | C-GB top-1 | C-GB rounds '
              '| HGB (`hgb_paper`) top-1 | HGB rounds |', '|---|---|---|---|---|---|---|']
    for scheme in ('case_a', '1m_b', '2m_b', 'mixed_b', 'case_c'):
      summary = settings.get(scheme)
      if not summary:
        continue
      table = summary.get('algorithms', {})
      cells = []
      for name in ('m_gb', 'c_gb', 'hgb_paper'):
        cells += [_cell(table.get(name)), _rounds_cell(table.get(name))]
      lines.append(f'| {scheme} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  return '\n'.join(lines)
