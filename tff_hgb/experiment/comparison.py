"""Comparisons: algorithms × seeds of one configuration, tuned once per
algorithm, compare's presets; writes comparison.md/.png and summary.json.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from tff_hgb import algorithms
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import jobs
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
                   log: Callable[[str], None] = print,
                   pool: Optional[jobs.Pool] = None) -> dict[str, Any]:
  """Runs algorithms × seeds; writes comparison.md/.png and summary.json.

  Layout: output_dir/<algorithm>/seed_<s>/ (a full run directory each),
  output_dir/<algorithm>/tuning.json (tuned once per algorithm, on the first
  seed, with training-pool validation data), output_dir/centralized/.
  With `resume`, finished runs are reused and unfinished ones continue from
  their last checkpoint, so an interrupted comparison can simply be rerun.
  `data_cache` is the caller's, so a binary's data is loaded once.

  The runs (tuning values, seeds, the centralized reference) are independent
  tasks (tff_hgb.experiment.jobs): without `pool` they run here one after
  another; with one, in its worker processes, and the files are the same.

  Returns:
    The comparison summary (also output_dir/summary.json).

  Raises:
    jobs.RunsFailed: (with a pool) some runs failed; the others finished and
      nothing aggregated is written.
  """
  data_cache = data_cache or caches.DataCache()
  plan = _Comparison(comparison, output_dir=output_dir, resume=resume,
                     data_cache=data_cache)
  started = time.perf_counter()
  scheduler = jobs.Scheduler(pool, data_cache, caches.AlgorithmCache(), log)
  plan.submit(scheduler)
  scheduler.run()
  return plan.finish(time.perf_counter() - started,
                     process_builds=scheduler.builds)


def run_comparisons(items: Sequence[tuple[ComparisonConfig, str]], *,
                    resume: bool = False,
                    data_cache: Optional[caches.DataCache] = None,
                    log: Callable[[str], None] = print,
                    pool: Optional[jobs.Pool] = None
                    ) -> list[dict[str, Any]]:
  """Several comparisons ((config, output_dir) each) in one scheduler.

  Their runs are independent, so one queue keeps every worker busy until the
  last run (one comparison after another leaves workers idle at each end).
  Each comparison's files are what `run_comparison` writes.

  Raises:
    jobs.RunsFailed: (with a pool) some runs failed; the comparisons whose
      runs all finished were still aggregated.
  """
  data_cache = data_cache or caches.DataCache()
  plans = []
  for position, (comparison, output_dir) in enumerate(items):
    plan = _Comparison(comparison, output_dir=output_dir, resume=resume,
                       data_cache=data_cache)
    plan.key = (position,)
    plans.append(plan)
  started = time.perf_counter()
  scheduler = jobs.Scheduler(pool, data_cache, caches.AlgorithmCache(), log)
  for plan in plans:
    plan.submit(scheduler)
  failed = None
  try:
    scheduler.run()
  except jobs.RunsFailed as e:
    failed = e
  summaries = [plan.finish(time.perf_counter() - started,
                           process_builds=scheduler.builds)
               for plan in plans if plan.complete()]
  if failed is not None:
    raise failed
  return summaries


class _Comparison:
  """A comparison's runs as tasks: checked and submitted, then aggregated.

  Task keys follow the sequential order: uni:best's choice first, then per
  algorithm its tuning values and its seeds, then the centralized reference.
  """

  def __init__(self, comparison: ComparisonConfig, *, output_dir: str,
               resume: bool, data_cache: caches.DataCache):
    base = comparison.base
    flags = comparison.to_dict()
    results.check_output_dir(output_dir, flags, resume=resume)
    for name in comparison.algorithms:  # Data/algorithm errors up front.
      if name != BEST_UNIMODAL:
        config = base.replace(algorithm=name, seed=comparison.seeds[0])
        caches.check_algorithm(config, data_cache.get(config))
    # The partition's real number of clients (--num_clients is ignored by a
    # natural partition, which has one client per subject/speaker).
    self.num_clients = len(data_cache.get(base.replace(
        seed=comparison.seeds[0])).federated_data.client_ids)
    os.makedirs(output_dir, exist_ok=True)
    results.atomic_write_json(os.path.join(output_dir, results.FLAGS_JSON),
                              flags)
    self.comparison = comparison
    self.output_dir = output_dir
    self.resume = resume
    self.data_cache = data_cache
    self.names = list(comparison.algorithms)
    # Per algorithm index: the tuning record, and each seed's (summary, curve).
    self.records: dict[int, dict[str, Any]] = {}
    self.runs: dict[int, dict[int, tuple]] = collections.defaultdict(dict)
    self.central = None
    # Prepended to every task key: several comparisons share one scheduler
    # (`run_comparisons`).
    self.key = ()

  def complete(self) -> bool:
    """Whether every run came back (none failed)."""
    seeds = len(self.comparison.seeds)
    return (all(len(self.runs[i]) == seeds for i in range(len(self.names)))
            and (self.central is not None or not self.comparison.centralized))

  def submit(self, scheduler: jobs.Scheduler) -> None:
    for index, name in enumerate(self.names):
      if name == BEST_UNIMODAL:
        scheduler.submit(
            jobs.Task(self.key + (-1,), BEST_UNIMODAL, reference.best_unimodal_task,
                      (self.comparison.base,
                       os.path.join(self.output_dir, 'best_unimodal.json'))),
            then=functools.partial(self._chose_unimodal, scheduler, index))
      else:
        self._submit_algorithm(scheduler, index)
    if self.comparison.centralized:
      base = self.comparison.base

      def keep(central):
        self.central = central

      central_dir = os.path.join(self.output_dir, 'centralized')
      scheduler.submit(jobs.Task(
          self.key + (len(self.names),), 'centralized', reference.centralized_task,
          (base, tuple(self.comparison.seeds), central_dir, None, self.resume,
           tuple(reference.client_learning_rate_grid(base))), eager=True,
          cheap=self.resume and reference.centralized_is_stored(
              central_dir, self.comparison.seeds)), then=keep)

  def _chose_unimodal(self, scheduler, index: int, outcome) -> None:
    choice, scores = outcome
    scheduler.log(f'{BEST_UNIMODAL} → {choice} (held-out training-pool '
                  'accuracy: ' + ', '.join(f'{m} {v:.3f}'
                                           for m, v in scores.items()) + ')')
    self.names[index] = choice
    self._submit_algorithm(scheduler, index)

  def _submit_algorithm(self, scheduler: jobs.Scheduler, index: int) -> None:
    """The algorithm's tuning values, then (when all are done) its seeds."""
    name = self.names[index]
    config = self.comparison.base.replace(algorithm=name,
                                          seed=self.comparison.seeds[0])
    caches.check_algorithm(config, self.data_cache.get(config))
    if not config.run.tune:
      self._submit_seeds(scheduler, index, config)
      return
    tuning_run = tuning.Tuning(
        config, tuning_path=os.path.join(self.output_dir, run_slug(name),
                                         results.TUNING_JSON),
        data_cache=self.data_cache, resume=self.resume)

    def tuned(record):
      scheduler.log(
          f'{name}: tuned {record["chosen"]} (validation scores, mean over '
          f'{len(record["seeds"])} seed(s): ' +
          ', '.join(f'{c["values"]}: {c["score"]:.3f}'
                    for c in record['candidates']) + ')' +
          (f'; grid extension bound hit for {record["extension_bound_hit"]}'
           if record['extension_bound_hit'] else ''))
      self.records[index] = record
      self._submit_seeds(scheduler, index, config)

    tuning.submit(scheduler, tuning_run, key=self.key + (index, 0), label=name,
                  then=tuned)

  def _submit_seeds(self, scheduler: jobs.Scheduler, index: int,
                    config: config_lib.ExperimentConfig) -> None:
    record = self.records.get(index)
    tuned = record['chosen'] if record else None
    algorithm_dir = os.path.join(self.output_dir, run_slug(config.algorithm.name))
    for position, seed in enumerate(self.comparison.seeds):
      run_dir = os.path.join(algorithm_dir, f'seed_{seed}')
      run_config = config.replace(seed=seed, output_dir=run_dir,
                                  resume=self.resume)

      def done(summary, position=position, run_dir=run_dir):
        scheduler.log(run.result_line(summary))
        self.runs[index][position] = (summary, reports.accuracy_curve(
            results.read_metrics(os.path.join(run_dir, results.METRICS_CSV))))

      scheduler.submit(jobs.Task(
          self.key + (index, 1, position), f'{config.algorithm.name} seed {seed}',
          seed_task, (run_config, tuned, record),
          cheap=self.resume and results.run_is_complete(run_dir, run_config),
          affinity=caches.process_affinity(run_config)),
                       then=done)

  def finish(self, seconds: float, *, process_builds: int) -> dict[str, Any]:
    """Aggregates the finished runs: summary.json, comparison.md/.png."""
    base = self.comparison.base
    seeds = self.comparison.seeds
    summaries: dict[str, list] = collections.OrderedDict()
    curves: dict[str, list] = collections.OrderedDict()
    tuned_values: dict[str, Any] = {}
    tuned_edges: dict[str, list[str]] = {}
    for index, name in enumerate(self.names):
      if index in self.records:
        tuned_values[name] = self.records[index]['chosen']
        tuned_edges[name] = reports.edge_fields(self.records[index])
      runs = [self.runs[index][p] for p in range(len(seeds))]
      summaries[name] = [summary for summary, _ in runs]
      curves[name] = [curve for _, curve in runs]
    table = reports.aggregate(
        summaries, baselines=[n for n in self.names if is_baseline(n)])
    for name, edges in tuned_edges.items():
      table[name]['tuned_edge'] = edges
    summary = {
        'dataset': base.data.dataset, 'partition': base.data.partition,
        'rounds': base.run.rounds, 'num_clients': self.num_clients,
        'clients_per_round': base.run.clients_per_round,
        'seeds': list(seeds),
        'target_accuracy': base.run.target_accuracy,
        'tune': base.run.tune, 'tuned': tuned_values,
        # Per algorithm, the tuned fields whose value is on its grid's edge.
        'tuned_edge': tuned_edges,
        'algorithms': table,
        'centralized': self.central,
        'seconds': seconds,
        'process_builds': process_builds,
    }
    results.atomic_write_json(
        os.path.join(self.output_dir, results.SUMMARY_JSON), summary)
    summary['markdown'] = _write_report(
        self.comparison, self.output_dir, table, self.central, curves,
        seconds, self.num_clients)
    return summary


def seed_task(context, run_config: config_lib.ExperimentConfig,
              tuned: Optional[Mapping[str, Any]],
              record: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """One seed of a comparison (a --jobs task): its run's summary."""
  return run.run_experiment(
      run_config, data_cache=context.data_cache,
      algorithm_cache=context.algorithm_cache, tuned=tuned or {},
      tuning_record=record, skip_complete=True)


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
