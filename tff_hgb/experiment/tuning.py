"""Tuning: every value of `--tune` trained on data held out of the training
pool, the best by validation accuracy chosen (the test set is never used).

Validation data for tuning is carved from the TRAINING pool, never the test set:
before partitioning, a stratified `tune_val_fraction` of the training pool
(seeded by `seed`) is held out; the rest is partitioned with the same scheme,
each candidate value is trained for `tune_rounds` rounds on those clients, and
the held-out part is evaluated at the last `config.TUNE_EVALUATIONS` rounds.
The value with the best mean validation fusion accuracy over those evaluations
wins (ties: the earlier value in the list), and the run (or every seed of a
comparison) then trains on the full training pool at that value. The test set
is not even loaded into the tuning runs' evaluation.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional

import numpy as np

from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import loop
from tff_hgb.experiment import reports
from tff_hgb.experiment import results


def tune(config: config_lib.ExperimentConfig, *,
         tuning_path: Optional[str] = None,
         data_cache: Optional[caches.DataCache] = None,
         algorithm_cache: Optional[caches.AlgorithmCache] = None,
         resume: bool = False) -> dict[str, Any]:
  """Tries every value of config.run.tune on training-pool validation data.

  Returns:
    The tuning record (also written to `tuning_path`): 'chosen' (field →
    value), 'candidates' (values, score, per-round validation accuracy) and a
    description of the validation data. Finished candidates found in an
    existing record are reused when `resume`.
  """
  data_cache = data_cache or caches.DataCache()
  algorithm_cache = algorithm_cache or caches.AlgorithmCache()
  tuning = Tuning(config, tuning_path=tuning_path, data_cache=data_cache,
                  resume=resume)
  for values in tuning.missing():
    tuning.add(train_candidate(config, values, data_cache=data_cache,
                               algorithm_cache=algorithm_cache))
  return tuning.finish()


class Tuning:
  """One tuning under way: its record and the values still to train.

  The values are independent runs (`train_candidate`; a comparison runs them
  in parallel with --jobs): `add` their entries in any order, then `finish`.
  The record lists the candidates as the sequential loop would (those of a
  resumed record first, then the new ones in grid order).
  """

  def __init__(self, config: config_lib.ExperimentConfig, *,
               tuning_path: Optional[str], data_cache: caches.DataCache,
               resume: bool):
    self.config = config
    self.tuning_path = tuning_path
    self.candidates = config_lib.tune_candidates(config.run.tune)
    record = None
    if resume and tuning_path and os.path.exists(tuning_path):
      record = _stored_record(config, tuning_path, self.candidates)
    if record is None:
      record = _new_record(config, data_cache.get(_trial_base(config),
                                                  for_tuning=True))
    self.record = record
    self._resumed = len(record['candidates'])
    self._done = {_key(c['values']): c for c in record['candidates']}

  def missing(self) -> list[dict[str, Any]]:
    """The values not trained yet, in grid order."""
    return [v for v in self.candidates if _key(v) not in self._done]

  def add(self, entry: Mapping[str, Any]) -> None:
    """A trained value's entry (`train_candidate`); rewrites the record."""
    entry = dict(entry)
    self._done[_key(entry['values'])] = entry
    order = {_key(v): i for i, v in enumerate(self.candidates)}
    new = self.record['candidates'][self._resumed:] + [entry]
    new.sort(key=lambda c: order[_key(c['values'])])
    self.record['candidates'][self._resumed:] = new
    if self.tuning_path:
      results.atomic_write_json(self.tuning_path, self.record)

  def finish(self) -> dict[str, Any]:
    """The record with the best value 'chosen' (every value trained)."""
    ordered = [self._done[_key(v)] for v in self.candidates]
    scores = [c['score'] if c['score'] is not None and
              math.isfinite(c['score']) else -1.0 for c in ordered]
    self.record['chosen'] = ordered[int(np.argmax(scores))]['values']
    if self.tuning_path:
      results.atomic_write_json(self.tuning_path, self.record)
    return self.record


def _key(values: Mapping[str, Any]) -> tuple:
  return tuple(sorted(values.items()))


def _trial_base(config: config_lib.ExperimentConfig
                ) -> config_lib.ExperimentConfig:
  """What every tuning run of `config` trains (before its values)."""
  return config.replace(tune='', resume=False,
                        rounds=config.run.effective_tune_rounds,
                        output_dir=None)


def train_candidate(config: config_lib.ExperimentConfig,
                    values: Mapping[str, Any], *,
                    data_cache: caches.DataCache,
                    algorithm_cache: caches.AlgorithmCache
                    ) -> dict[str, Any]:
  """Trains one value of config.run.tune; its record entry (with the score)."""
  rounds = config.run.effective_tune_rounds
  last = set(range(rounds - config_lib.TUNE_EVALUATIONS + 1, rounds + 1))
  base = _trial_base(config)
  data = data_cache.get(base, for_tuning=True)
  trial = config_lib.with_values(base, values)
  algorithm = algorithm_cache.get(trial, data)
  label = ','.join(f'{k}={v:g}' for k, v in values.items())
  _, rows = loop.train(trial, data, algorithm,
                       eval_rounds=lambda r: r in last,
                       desc=f'tune {config.algorithm.name} {label}')
  _, accuracy = reports.accuracy_curve(
      rows, f'{caches.VALIDATION_PREFIX}/{loop.FUSION}/accuracy')
  score = float(np.mean(accuracy)) if accuracy else float('nan')
  return {'values': dict(values), 'score': score,
          'validation_accuracy': accuracy}


def candidate_task(context, config: config_lib.ExperimentConfig,
                   values: Mapping[str, Any]) -> dict[str, Any]:
  """`train_candidate` as a --jobs task (tff_hgb.experiment.jobs)."""
  return train_candidate(config, values, data_cache=context.data_cache,
                         algorithm_cache=context.algorithm_cache)


def _stored_record(config: config_lib.ExperimentConfig, tuning_path: str,
                   candidates: list[dict[str, Any]]
                   ) -> Optional[dict[str, Any]]:
  """The record of an earlier tuning of `config`, or None if it is another's.

  A changed grid (e.g. widened because the best value sat on an edge) keeps
  the finished values it still contains.
  """
  record = results.read_json(tuning_path)
  if (record.get('rounds') != config.run.effective_tune_rounds or
      record.get('seed') != config.run.seed):
    return None
  if record.get('tune') != config.run.tune:
    wanted = {tuple(sorted(v.items())) for v in candidates}
    record['candidates'] = [
        c for c in record['candidates']
        if tuple(sorted(c['values'].items())) in wanted]
    record['tune'] = config.run.tune
  return record


def _new_record(config: config_lib.ExperimentConfig,
                data: caches.ExperimentData) -> dict[str, Any]:
  """An empty tuning record describing its validation data."""
  return {
      'algorithm': config.algorithm.name,
      'tune': config.run.tune,
      'rounds': config.run.effective_tune_rounds,
      'seed': config.run.seed,
      'validation': {
          'source': 'held out of the training pool before partitioning '
                    '(stratified by label); the test set is not used',
          'fraction_of_training_pool': config.run.tune_val_fraction,
          'examples': len(data.evaluation_set),
          'training_examples': len(data.train_pool),
          'score': f'mean validation fusion accuracy over the last '
                   f'{config_lib.TUNE_EVALUATIONS} rounds',
      },
      'candidates': [],
      'chosen': None,
  }
