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
from typing import Any, Optional

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
  candidates = config_lib.tune_candidates(config.run.tune)
  rounds = config.run.effective_tune_rounds
  record = None
  if resume and tuning_path and os.path.exists(tuning_path):
    record = _stored_record(config, tuning_path, candidates)
  base = config.replace(tune='', resume=False, rounds=rounds,
                        output_dir=None)
  data = data_cache.get(base, for_tuning=True)
  if record is None:
    record = _new_record(config, data)
  done = {tuple(sorted(c['values'].items())): c for c in record['candidates']}
  last = set(range(rounds - config_lib.TUNE_EVALUATIONS + 1, rounds + 1))
  for values in candidates:
    key = tuple(sorted(values.items()))
    if key in done:
      continue
    trial = config_lib.with_values(base, values)
    algorithm = algorithm_cache.get(trial, data)
    label = ','.join(f'{k}={v:g}' for k, v in values.items())
    _, rows = loop.train(trial, data, algorithm,
                         eval_rounds=lambda r: r in last,
                         desc=f'tune {config.algorithm.name} {label}')
    _, accuracy = reports.accuracy_curve(
        rows, f'{caches.VALIDATION_PREFIX}/{loop.FUSION}/accuracy')
    score = float(np.mean(accuracy)) if accuracy else float('nan')
    entry = {'values': values, 'score': score,
             'validation_accuracy': accuracy}
    record['candidates'].append(entry)
    done[key] = entry
    if tuning_path:
      results.atomic_write_json(tuning_path, record)
  ordered = [done[tuple(sorted(v.items()))] for v in candidates]
  scores = [c['score'] if c['score'] is not None and math.isfinite(c['score'])
            else -1.0 for c in ordered]
  record['chosen'] = ordered[int(np.argmax(scores))]['values']
  if tuning_path:
    results.atomic_write_json(tuning_path, record)
  return record


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
