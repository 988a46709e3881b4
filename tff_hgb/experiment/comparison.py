"""Comparisons: algorithms × seeds of one configuration, tuned once per
algorithm, compare's presets; writes comparison.md/.png and summary.json.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import time
from typing import Any, Callable, Optional

from tff_hgb import algorithms
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import presets
from tff_hgb.experiment import reference
from tff_hgb.experiment import reports
from tff_hgb.experiment import results
from tff_hgb.experiment import run
from tff_hgb.experiment import tuning

# In a comparison: the uni-modal FedAvg of the best single modality.
BEST_UNIMODAL = presets.BEST_UNIMODAL


HGB_VARIANTS = algorithms.HGB_MODES

# compare's --config presets (flag name → value; flags given win).
PRESETS = presets.COMPARISON_PRESETS


def run_slug(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]', '_', name)


def is_baseline(name: str) -> bool:
  return name not in HGB_VARIANTS


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
  """algorithms × seeds of one base configuration (compare's flags)."""

  base: config_lib.ExperimentConfig
  algorithms: tuple[str, ...]
  seeds: tuple[int, ...]
  centralized: bool = False
  title: str = ''

  def __post_init__(self):
    validate_comparison(self)

  def to_dict(self) -> dict[str, Any]:
    values = self.base.to_dict()
    values.update(algorithms=list(self.algorithms), seeds=list(self.seeds),
                  centralized=self.centralized)
    values.pop('algorithm')
    return values


def validate_comparison(comparison: ComparisonConfig) -> None:
  """What a comparison adds to its (valid) base: algorithms, seeds, a dir."""
  if not comparison.algorithms:
    raise config_lib.UsageError('algorithms', 'give at least one algorithm.')
  if len(set(comparison.algorithms)) != len(comparison.algorithms):
    raise config_lib.UsageError('algorithms', 'an algorithm is listed twice.')
  for name in comparison.algorithms:
    if name == BEST_UNIMODAL:
      continue
    if not algorithms.is_known(name):
      raise config_lib.UsageError(
          'algorithms', f'unknown algorithm {name!r}; expected one of '
          f'{algorithms.describe_names()}.')
  if not comparison.seeds:
    raise config_lib.UsageError('seeds', 'give at least one seed.')
  config_lib.validate(comparison.base)


def run_comparison(comparison: ComparisonConfig, *, output_dir: str,
                   resume: bool = False,
                   data_cache: Optional[caches.DataCache] = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs algorithms × seeds; writes comparison.md/.png and summary.json.

  Layout: output_dir/<algorithm>/seed_<s>/ (a full run directory each),
  output_dir/<algorithm>/tuning.json (tuned once per algorithm, on the first
  seed, with training-pool validation data), output_dir/centralized/.
  With `resume`, finished runs are reused and unfinished ones continue from
  their last checkpoint, so an interrupted comparison can simply be rerun.
  `data_cache` is the caller's, so a binary's data is loaded once.

  Returns:
    The comparison summary (also output_dir/summary.json).
  """
  base = comparison.base
  flags = comparison.to_dict()
  results.check_output_dir(output_dir, flags, resume=resume)
  data_cache = data_cache or caches.DataCache()
  for name in comparison.algorithms:  # Data/algorithm errors up front.
    if name != BEST_UNIMODAL:
      config = base.replace(algorithm=name, seed=comparison.seeds[0])
      caches.check_algorithm(config, data_cache.get(config))
  # The partition's real number of clients (--num_clients is ignored by a
  # natural partition, which has one client per subject/speaker).
  num_clients = len(data_cache.get(base.replace(
      seed=comparison.seeds[0])).federated_data.client_ids)
  os.makedirs(output_dir, exist_ok=True)
  results.atomic_write_json(os.path.join(output_dir, results.FLAGS_JSON), flags)
  algorithm_cache = caches.AlgorithmCache()
  started = time.perf_counter()
  summaries: dict[str, list] = collections.OrderedDict()
  curves: dict[str, list] = collections.OrderedDict()
  tuned_values: dict[str, Any] = {}
  tuned_edges: dict[str, list[str]] = {}
  names = list(comparison.algorithms)
  if BEST_UNIMODAL in names:
    choice, scores = reference.best_unimodal(
        base, data_cache, path=os.path.join(output_dir, 'best_unimodal.json'))
    log(f'{BEST_UNIMODAL} → {choice} (held-out training-pool accuracy: ' +
        ', '.join(f'{m} {v:.3f}' for m, v in scores.items()) + ')')
    names = [choice if n == BEST_UNIMODAL else n for n in names]
  for name in names:
    algorithm_dir = os.path.join(output_dir, run_slug(name))
    config = base.replace(algorithm=name, seed=comparison.seeds[0])
    caches.check_algorithm(config, data_cache.get(config))
    tuned, record = None, None
    if base.run.tune:
      record = _tune(config, algorithm_dir, data_cache, algorithm_cache,
                     resume=resume, log=log)
      tuned = tuned_values[name] = record['chosen']
      tuned_edges[name] = reports.edge_fields(record)
    summaries[name], curves[name] = _run_seeds(
        config, comparison.seeds, algorithm_dir, data_cache, algorithm_cache,
        tuned=tuned, record=record, resume=resume, log=log)
  central = None
  if comparison.centralized:
    central = reference.centralized_reference(
        base, comparison.seeds, output_dir=os.path.join(output_dir,
                                                        'centralized'),
        data_cache=data_cache, resume=resume,
        learning_rates=reference.client_learning_rate_grid(base), log=log)
  table = reports.aggregate(
      summaries, baselines=[n for n in names if is_baseline(n)])
  for name, edges in tuned_edges.items():
    table[name]['tuned_edge'] = edges
  seconds = time.perf_counter() - started
  summary = {
      'dataset': base.data.dataset, 'partition': base.data.partition,
      'rounds': base.run.rounds, 'num_clients': num_clients,
      'clients_per_round': base.run.clients_per_round,
      'seeds': list(comparison.seeds),
      'target_accuracy': base.run.target_accuracy,
      'tune': base.run.tune, 'tuned': tuned_values,
      # Per algorithm, the tuned fields whose value is on its grid's edge.
      'tuned_edge': tuned_edges,
      'algorithms': table,
      'centralized': central,
      'seconds': seconds,
      'process_builds': algorithm_cache.builds,
  }
  results.atomic_write_json(os.path.join(output_dir, results.SUMMARY_JSON),
                            summary)
  summary['markdown'] = _write_report(comparison, output_dir, table, central,
                                      curves, seconds, num_clients)
  return summary


def _tune(config: config_lib.ExperimentConfig, algorithm_dir: str,
          data_cache: caches.DataCache, algorithm_cache: caches.AlgorithmCache,
          *, resume: bool, log: Callable[[str], None]) -> dict[str, Any]:
  """One algorithm's tuning (on the first seed), logged; its record."""
  record = tuning.tune(
      config, tuning_path=os.path.join(algorithm_dir, results.TUNING_JSON),
      data_cache=data_cache, algorithm_cache=algorithm_cache, resume=resume)
  log(f'{config.algorithm.name}: tuned {record["chosen"]} (validation scores '
      + ', '.join(f'{c["values"]}: {c["score"]:.3f}'
                  for c in record['candidates']) + ')')
  return record


def _run_seeds(config: config_lib.ExperimentConfig, seeds, algorithm_dir: str,
               data_cache: caches.DataCache,
               algorithm_cache: caches.AlgorithmCache, *, tuned, record,
               resume: bool, log: Callable[[str], None]):
  """One algorithm's run per seed: (their summaries, their accuracy curves)."""
  summaries, curves = [], []
  for seed in seeds:
    run_dir = os.path.join(algorithm_dir, f'seed_{seed}')
    run_config = config.replace(seed=seed, output_dir=run_dir, resume=resume)
    summary = run.run_experiment(
        run_config, data_cache=data_cache, algorithm_cache=algorithm_cache,
        tuned=tuned or {}, tuning_record=record, skip_complete=True)
    log(run.result_line(summary))
    summaries.append(summary)
    curves.append(reports.accuracy_curve(results.read_metrics(
        os.path.join(run_dir, results.METRICS_CSV))))
  return summaries, curves


def _write_report(comparison: ComparisonConfig, output_dir: str, table,
                  central, curves, seconds: float, num_clients: int) -> str:
  """comparison.md and comparison.png; returns the markdown."""
  base = comparison.base
  title = comparison.title or (
      f'{base.data.dataset} / {base.data.partition}: '
      f'{num_clients} clients, {base.run.rounds} rounds, '
      f'{len(comparison.seeds)} seed(s)')
  notes = [f'Local epochs {base.algorithm.local_epochs}, batch '
           f'{base.algorithm.batch_size}, clients per round '
           f'{base.run.clients_per_round or "all"}, α = {base.data.alpha}.']
  if base.run.tune:
    notes.append(f'Tuned per algorithm ({base.run.tune}) on validation data '
                 'held out of the training pool (never the test set).')
  if central:
    notes.append(f'Centralized: the same model, fused loss, '
                 f'{central["epochs"]} epochs of SGD (learning rate '
                 f'{central["learning_rate"]:g}, chosen on validation data) on '
                 'the whole training pool; best = test accuracy at the epoch '
                 'with the best validation accuracy.')
  notes.append(f'Wall time {seconds / 60:.1f} min.')
  markdown = reports.comparison_markdown(
      table, target_accuracy=base.run.target_accuracy, title=title,
      centralized=central, notes=notes)
  results.atomic_write_text(os.path.join(output_dir, results.COMPARISON_MD),
                            markdown)
  reports.plot_comparison(
      curves, os.path.join(output_dir, results.COMPARISON_PNG), title=title,
      target_accuracy=base.run.target_accuracy,
      centralized=central['final_accuracy_mean'] if central else None)
  return markdown
