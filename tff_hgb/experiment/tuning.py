"""Tuning: every value of `--tune` trained on data held out of the training
pool, on several seeds, the grid extended past an edge; the best value chosen.

Validation data for tuning is carved from the TRAINING pool, never the test set:
before partitioning, a stratified `tune_val_fraction` of the training pool
(seeded by the tuning seed) is held out; the rest is partitioned with the same
scheme, each candidate value is trained for `tune_rounds` rounds on those
clients, and the held-out part is evaluated at the last
`config.TUNE_SCORE_ROUNDS` rounds (fewer if the runs are shorter).

Robust choice (issue 20):
* Each value is trained on `tune_seeds` seeds (run.seed, run.seed + 1, ...;
  each its own partition and hold-out). Its score is the mean over those seeds
  of the validation accuracy averaged over the last rounds, a seed whose run
  diverged (NaN) counting 0, so a value that collapses on any seed loses.
* When the best value of a field lies on the edge of that field's grid, the
  grid is extended by one step that way (the ratio of the two outer values,
  or their difference if either is ≤ 0) and the new values trained, until the
  best is interior or `tune_extensions` steps were taken for that field (the
  record then lists the field under 'extension_bound_hit').

The record (tuning.json) keeps every (value, seed) run with its score and
validation curve ('runs'), each value's mean ('candidates': score, per-seed
scores, mean curve), the extensions, and the value chosen (ties: the earlier
value in grid order). A finished (value, seed) run is never trained again:
with `resume`, the runs of an earlier record are reused. The test set is not
even loaded into the tuning runs' evaluation.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Mapping, Optional

import numpy as np

from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import jobs
from tff_hgb.experiment import loop
from tff_hgb.experiment import reports
from tff_hgb.experiment import results


def tune(config: config_lib.ExperimentConfig, *,
         tuning_path: Optional[str] = None,
         data_cache: Optional[caches.DataCache] = None,
         algorithm_cache: Optional[caches.AlgorithmCache] = None,
         resume: bool = False) -> dict[str, Any]:
  """Tunes config.run.tune here, one run after another; the record.

  Returns:
    The tuning record (also written to `tuning_path`; see the module
    docstring). Finished runs found in an existing record are reused when
    `resume`.
  """
  data_cache = data_cache or caches.DataCache()
  scheduler = jobs.Scheduler(None, data_cache,
                             algorithm_cache or caches.AlgorithmCache())
  tuning = Tuning(config, tuning_path=tuning_path, data_cache=data_cache,
                  resume=resume)
  finished = []
  submit(scheduler, tuning, key=(0,), label=config.algorithm.name,
         then=finished.append)
  scheduler.run()
  return finished[0]


def submit(scheduler: jobs.Scheduler, tuning: 'Tuning', *, key: tuple,
           label: str, then: Callable[[dict[str, Any]], None]) -> None:
  """Submits `tuning`'s runs (and its extensions') to `scheduler`.

  The one driver of a tuning: `then(record)` is called once, when the chosen
  value is known (at once if every run is stored). Task keys are
  key + (extension step, position, seed index), so the scheduler runs them in
  the sequential order.
  """

  def next_runs():
    while True:
      todo = tuning.pending()
      if todo:
        break
      if tuning.advance():
        then(tuning.finish())
        return
    for position, (values, seed) in enumerate(todo):
      scheduler.submit(jobs.Task(
          key + (tuning.step, position, tuning.seeds.index(seed)),
          f'tune {label} {_label(values)} seed {seed}', candidate_task,
          (tuning.config, values, seed),
          affinity=caches.process_affinity(tuning.config)), then=added)

  def added(entry):
    tuning.add(entry)
    if tuning.idle():
      next_runs()

  next_runs()


def choose(entries, rule: str = 'best') -> dict[str, Any]:
  """The values chosen among candidate entries ({values, score, seed_scores},
  in grid order) by `rule` (config.TUNE_RULES; ties: the earlier entry).

  'one_se': the smallest values (compared field by field in grid order) of
  those scoring at least the best score minus its standard error over the
  seeds (a diverged seed counting 0, as in its score); with one seed, 'best'.
  """
  scores = [e['score'] for e in entries]
  best = entries[int(np.argmax(scores))]
  if rule == 'best' or len(best['seed_scores']) < 2:
    return best['values']
  per_seed = _diverged_as_zero(best['seed_scores'].values())
  threshold = best['score'] - (np.std(per_seed, ddof=1) /
                               math.sqrt(len(per_seed)))
  close = [e for e in entries if e['score'] >= threshold]
  return min(close, key=lambda e: tuple(e['values'].values()))['values']


def tuning_seeds(config: config_lib.ExperimentConfig) -> list[int]:
  return [config.run.seed + i for i in range(config.run.tune_seeds)]


def score_rounds(config: config_lib.ExperimentConfig) -> int:
  """How many last rounds of a tuning run its score averages."""
  return min(config_lib.TUNE_SCORE_ROUNDS, config.run.effective_tune_rounds)


def seed_score(accuracy) -> float:
  """One run's score: its mean validation accuracy over the scored rounds."""
  values = [float(a) if a is not None else math.nan for a in accuracy]
  return float(np.mean(values)) if values else math.nan


def _diverged_as_zero(seed_scores) -> list[float]:
  """Seed scores with a diverged seed's (None or NaN) counted as 0."""
  return [s if s is not None and math.isfinite(s) else 0.0
          for s in seed_scores]


def value_score(seed_scores) -> float:
  """A value's score: the mean over seeds, a diverged seed (NaN) counting 0."""
  return float(np.mean(_diverged_as_zero(seed_scores)))


class Tuning:
  """One tuning under way: its grid, its finished runs and its record.

  `pending` hands out the (value, seed) runs to train (each once), `add`
  takes a finished run's entry (any order), and once every handed-out run is
  back (`idle`), `advance` either extends the grid (new runs pending) or
  decides; `finish` writes the record. `submit` drives it.
  """

  def __init__(self, config: config_lib.ExperimentConfig, *,
               tuning_path: Optional[str], data_cache: caches.DataCache,
               resume: bool):
    self.config = config
    self.tuning_path = tuning_path
    self.grid = [(name, list(values))
                 for name, values in config_lib.parse_tune(config.run.tune)]
    self.seeds = tuning_seeds(config)
    self.step = 0
    self.extensions: list[dict[str, Any]] = []
    self.bound_hit: list[str] = []
    self.record = _new_record(config, data_cache.get(_trial_base(config),
                                                     for_tuning=True))
    self._runs: dict[tuple, dict[str, Any]] = {}
    if resume and tuning_path and os.path.exists(tuning_path):
      for entry in _stored_runs(config, results.read_json(tuning_path)):
        if entry['seed'] in self.seeds:
          self._runs[_run_key(entry['values'], entry['seed'])] = entry
    self._handed_out: set[tuple] = set()

  def candidates(self) -> list[dict[str, Any]]:
    """The grid's values (field → value), in grid order."""
    return config_lib.grid_candidates(self.grid)

  def missing(self) -> list[tuple[dict[str, Any], int]]:
    """The (value, seed) runs of the current grid not trained yet."""
    return [(v, s) for v in self.candidates() for s in self.seeds
            if _run_key(v, s) not in self._runs]

  def pending(self) -> list[tuple[dict[str, Any], int]]:
    """The missing runs not handed out yet; hands them out."""
    todo = [(v, s) for v, s in self.missing()
            if _run_key(v, s) not in self._handed_out]
    self._handed_out.update(_run_key(v, s) for v, s in todo)
    return todo

  def idle(self) -> bool:
    """Whether every run handed out is back."""
    return self._handed_out <= set(self._runs)

  def add(self, entry: Mapping[str, Any]) -> None:
    """A finished run's entry (`train_candidate`); rewrites the record."""
    entry = dict(entry)
    self._runs[_run_key(entry['values'], entry['seed'])] = entry
    self._write()

  def advance(self) -> bool:
    """Every run of the grid is done: extend past an edge, or decide.

    Returns:
      True when decided (no edge left to extend); False when the grid grew
      (its new runs are pending).
    """
    chosen = self._best()
    for name, values in self.grid:
      if len(values) < 2 or chosen[name] not in (min(values), max(values)):
        continue
      if sum(e['field'] == name for e in self.extensions) >= (
          self.config.run.tune_extensions):
        if self.config.run.tune_extensions and name not in self.bound_hit:
          self.bound_hit.append(name)
        continue
      up = chosen[name] == max(values)
      value = extend_value(values, up=up)
      try:
        config_lib.with_values(_trial_base(self.config), {name: value})
      except config_lib.UsageError:
        value = None  # E.g. a momentum of 1: the grid cannot go further.
      if value is None or value in values:
        if name not in self.bound_hit:
          self.bound_hit.append(name)
        continue
      values.append(value)
      self.step += 1
      self.extensions.append({'field': name, 'value': value,
                              'direction': 'up' if up else 'down',
                              'best_before': chosen[name]})
      return False
    return True

  def _best(self) -> dict[str, Any]:
    return choose(self._candidate_entries(), self.config.run.tune_rule)

  def _candidate_entries(self) -> list[dict[str, Any]]:
    """Each value of the grid with all its seeds done: its record entry."""
    entries = []
    for values in self.candidates():
      runs = [self._runs.get(_run_key(values, s)) for s in self.seeds]
      if any(r is None for r in runs):
        continue
      curves = [[math.nan if a is None else a
                 for a in r['validation_accuracy']] for r in runs]
      length = min(len(c) for c in curves)
      mean_curve = (np.mean([c[:length] for c in curves], axis=0).tolist()
                    if length else [])
      entries.append({
          'values': dict(values),
          'score': value_score([r['score'] for r in runs]),
          'validation_accuracy': [float(a) for a in mean_curve],
          'seed_scores': {str(r['seed']): r['score'] for r in runs},
      })
    return entries

  def finish(self) -> dict[str, Any]:
    """The record with the best value 'chosen' (every run done)."""
    self.record['chosen'] = self._best()
    self._write()
    return self.record

  def _write(self) -> None:
    self.record['candidates'] = self._candidate_entries()
    self.record['runs'] = sorted(
        self._runs.values(),
        key=lambda r: (_run_key(r['values'], 0), r['seed']))
    self.record['extensions'] = list(self.extensions)
    self.record['extension_bound_hit'] = list(self.bound_hit)
    if self.tuning_path:
      results.atomic_write_json(self.tuning_path, self.record)


def extend_value(values, *, up: bool):
  """One more grid step beyond the largest (up) or smallest value.

  Geometric (the ratio of the two outer values) when both are > 0, else
  arithmetic (their difference); integers stay integers and move.
  """
  ordered = sorted(values)
  edge, inner = (ordered[-1], ordered[-2]) if up else (ordered[0], ordered[1])
  if edge > 0 and inner > 0:
    value = edge * (edge / inner)
  else:
    value = edge + (edge - inner)
  if isinstance(edge, int) and not isinstance(edge, bool):
    value = int(round(value))
    if value == edge:
      value = edge + (1 if up else -1)
  else:
    value = float(f'{value:.6g}')  # 0.1 * 0.5 is 0.05, not 0.05000000000000001.
  return value


def _label(values: Mapping[str, Any]) -> str:
  return ','.join(f'{k}={v:g}' for k, v in values.items())


def _run_key(values: Mapping[str, Any], seed: int) -> tuple:
  return (tuple(sorted(values.items())), seed)


def _trial_base(config: config_lib.ExperimentConfig
                ) -> config_lib.ExperimentConfig:
  """What every tuning run of `config` trains (before its values and seed)."""
  return config.replace(tune='', resume=False,
                        rounds=config.run.effective_tune_rounds,
                        output_dir=None)


def train_candidate(config: config_lib.ExperimentConfig,
                    values: Mapping[str, Any], *,
                    data_cache: caches.DataCache,
                    algorithm_cache: caches.AlgorithmCache,
                    seed: Optional[int] = None) -> dict[str, Any]:
  """Trains one value of config.run.tune on one seed; its run entry."""
  seed = config.run.seed if seed is None else seed
  rounds = config.run.effective_tune_rounds
  last = set(range(rounds - score_rounds(config) + 1, rounds + 1))
  base = _trial_base(config).replace(seed=seed)
  data = data_cache.get(base, for_tuning=True)
  trial = config_lib.with_values(base, values)
  algorithm = algorithm_cache.get(trial, data)
  label = _label(values)
  started = time.perf_counter()
  _, rows = loop.train(trial, data, algorithm,
                       eval_rounds=lambda r: r in last,
                       desc=f'tune {config.algorithm.name} {label} s{seed}')
  _, accuracy = reports.accuracy_curve(
      rows, f'{caches.VALIDATION_PREFIX}/{loop.FUSION}/accuracy')
  # A diverged round's accuracy is not a number: the seed scores NaN (0 in
  # the value's mean).
  if len(accuracy) < len(last):
    accuracy = accuracy + [math.nan] * (len(last) - len(accuracy))
  return {'values': dict(values), 'seed': seed, 'score': seed_score(accuracy),
          'validation_accuracy': accuracy,
          'seconds': time.perf_counter() - started}


def candidate_task(context, config: config_lib.ExperimentConfig,
                   values: Mapping[str, Any], seed: int) -> dict[str, Any]:
  """`train_candidate` as a --jobs task (tff_hgb.experiment.jobs)."""
  return train_candidate(config, values, data_cache=context.data_cache,
                         algorithm_cache=context.algorithm_cache, seed=seed)


def _stored_runs(config: config_lib.ExperimentConfig,
                 record: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The finished runs of an earlier record of `config`'s tuning runs.

  Runs of another length or score window are not comparable and are
  dropped. A record written before runs were kept per seed (one seed,
  'candidates' only) still gives its runs when its window matches.
  """
  if record.get('rounds') != config.run.effective_tune_rounds:
    return []
  window = score_rounds(config)
  if 'runs' in record:
    runs = record['runs']
  else:
    runs = [dict(c, seed=record.get('seed')) for c in record.get(
        'candidates', ())]
  return [{'values': dict(r['values']), 'seed': r['seed'],
           'score': r['score'],
           'validation_accuracy': list(r['validation_accuracy']),
           'seconds': r.get('seconds')}
          for r in runs if len(r.get('validation_accuracy') or ()) == window]


def _new_record(config: config_lib.ExperimentConfig,
                data: caches.ExperimentData) -> dict[str, Any]:
  """An empty tuning record describing its validation data."""
  return {
      'algorithm': config.algorithm.name,
      'tune': config.run.tune,
      'rounds': config.run.effective_tune_rounds,
      'seed': config.run.seed,
      'seeds': tuning_seeds(config),
      'validation': {
          'source': 'held out of the training pool before partitioning '
                    '(stratified by label); the test set is not used',
          'fraction_of_training_pool': config.run.tune_val_fraction,
          'examples': len(data.evaluation_set),
          'training_examples': len(data.train_pool),
          'score': f'mean validation fusion accuracy over the last '
                   f'{score_rounds(config)} rounds',
          'over_seeds': 'a value scores the mean over the tuning seeds (a '
                        'diverged seed counts 0)',
      },
      'max_extensions': config.run.tune_extensions,
      'rule': config.run.tune_rule,
      'candidates': [],
      'chosen': None,
  }
