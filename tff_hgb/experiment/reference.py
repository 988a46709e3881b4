"""Centrally trained references: the uni-modal model a comparison's `uni:best`
stands for, and the centralized row (same model, fused loss, whole pool).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tff_hgb import algorithms
from tff_hgb import centralized
from tff_hgb import models
from tff_hgb.data import datasets
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import loop
from tff_hgb.experiment import results


def best_unimodal(config: config_lib.ExperimentConfig,
                  data_cache: caches.DataCache, *,
                  epochs: int = 10, path: Optional[str] = None
                  ) -> tuple[str, dict[str, float]]:
  """'uni:<m>' for the modality that is best on its own, chosen centrally.

  A quick centralized check on training data only: each modality's model is
  trained for `epochs` epochs on 80% of the training pool and scored on the
  other 20% (stratified, seeded); the test set is not used. The choice is
  stored in `path` (JSON) and reused from there.
  """
  if path and os.path.exists(path):
    record = results.read_json(path)
    return record['algorithm'], record['validation_accuracy']
  train_pool, _ = data_cache.load(config)
  fit, holdout = datasets.hold_out_test(train_pool, test_fraction=0.2,
                                        seed=config.data.data_seed + 104729)
  scores = {}
  for name in train_pool.modality_names:
    outcome = centralized.train_centralized(
        fit.with_modalities([name]), holdout.with_modalities([name]),
        model_config=models.ModelConfig(
            seed=config.data.data_seed, encoders=tuple(
                (m, kind) for m, kind in config.algorithm.encoder
                if m == name)),
        epochs=epochs, batch_size=config.algorithm.batch_size,
        learning_rate=config.algorithm.client_learning_rate,
        seed=config.data.data_seed,
        eval_every=epochs)
    scores[name] = float(outcome.final_accuracy)
  best = max(scores, key=lambda m: (scores[m], -list(scores).index(m)))
  choice = f'{algorithms.UNI_PREFIX}{best}'
  if path:
    results.atomic_write_json(path, {
        'algorithm': choice, 'validation_accuracy': scores,
        'how': f'centralized, {epochs} epochs on 80% of the training pool, '
               'accuracy on the other 20% (the test set is not used)'})
  return choice, scores


def _centralized_run(train_pool, test, config, seed,
                     learning_rate, epochs):
  """One centralized training; the summary dict stored per seed."""
  started = time.perf_counter()
  outcome = centralized.train_centralized(
      train_pool, test, model_config=models.ModelConfig(
          seed=seed, encoders=config.algorithm.encoder),
      epochs=epochs, batch_size=config.algorithm.batch_size,
      learning_rate=learning_rate, seed=seed, eval_every=config.run.eval_every)
  history = list(outcome.history or [])
  curve = [(int(h['epoch']), float(h[f'test/{loop.FUSION}/accuracy']))
           for h in history if f'test/{loop.FUSION}/accuracy' in h]
  validation = [float(h[f'val/{loop.FUSION}/accuracy']) for h in history
                if f'val/{loop.FUSION}/accuracy' in h]
  epochs_to_target = next((e for e, a in curve
                           if config.run.target_accuracy is not None and
                           a >= config.run.target_accuracy), None)
  return {'algorithm': 'centralized', 'seed': seed,
          'modalities': train_pool.modality_names,
          'epochs': epochs,
          'learning_rate': learning_rate,
          'final_accuracy': float(outcome.final_accuracy),
          'best_accuracy': float(outcome.best_accuracy),
          'epochs_to_target': epochs_to_target,
          # Selection score: mean validation fusion accuracy of the last
          # evaluations (validation = tff_hgb.centralized's split of the
          # training pool).
          'validation_score': (
              float(np.mean(validation[-config_lib.TUNE_EVALUATIONS:]))
              if validation else None),
          'seconds': time.perf_counter() - started,
          'curve': curve}


def centralized_reference(config: config_lib.ExperimentConfig,
                          seeds: Sequence[int], *,
                          output_dir: str, data_cache: caches.DataCache,
                          modalities: Optional[Sequence[str]] = None,
                          resume: bool = True,
                          learning_rates: Sequence[float] = (),
                          log: Callable[[str], None] = print
                          ) -> dict[str, Any]:
  """The same model trained centrally with the fused loss, one run per seed.

  Trains on the whole training pool (every modality present unless
  `modalities` restricts it) for rounds × local_epochs epochs with plain SGD
  and reports test accuracy (tff_hgb.centralized). With several
  `learning_rates`, the first seed is trained at each and the one with the
  best validation accuracy (tff_hgb.centralized's validation split of the
  TRAINING pool, never the test set) is used for every seed: a learning rate
  tuned for one local epoch of FL is no choice for tens of central epochs.
  Per-seed summaries are stored in output_dir/seed_<s>/summary.json (and the
  choice in output_dir/tuning.json) and reused when `resume`.
  """
  train_pool, test = data_cache.load(config)
  if modalities:
    train_pool = train_pool.with_modalities(list(modalities))
    test = test.with_modalities(list(modalities))
  epochs = config.run.rounds * config.algorithm.local_epochs
  learning_rates = (list(learning_rates) or
                    [config.algorithm.client_learning_rate])
  chosen = learning_rates[0]
  reusable = {}
  if len(learning_rates) > 1:
    chosen, reusable = _choose_learning_rate(
        train_pool, test, config, seeds[0], learning_rates, epochs,
        tuning_path=os.path.join(output_dir, results.TUNING_JSON),
        resume=resume)
    log(f'centralized: learning rate {chosen:g} (validation)')
  summaries = []
  for seed in seeds:
    path = os.path.join(output_dir, f'seed_{seed}', results.SUMMARY_JSON)
    if resume and os.path.exists(path):
      stored = results.read_json(path)
      if stored.get('learning_rate') == chosen and stored.get(
          'epochs') == epochs:
        summaries.append(stored)
        continue
    summary = reusable.get(seed) or _centralized_run(
        train_pool, test, config, seed, chosen, epochs)
    results.atomic_write_json(path, summary)
    summaries.append(summary)
  finals = [s['final_accuracy'] for s in summaries]
  bests = [s['best_accuracy'] for s in summaries]
  reached = [s['epochs_to_target'] for s in summaries
             if s.get('epochs_to_target') is not None]
  return {'seeds': len(summaries),
          'final_accuracy_mean': float(np.mean(finals)),
          'final_accuracy_std': float(np.std(finals)),
          'best_accuracy_mean': float(np.mean(bests)),
          'best_accuracy_std': float(np.std(bests)),
          'epochs_to_target_mean': (float(np.mean(reached)) if reached
                                    else None),
          'epochs': epochs,
          'learning_rate': chosen,
          'modalities': train_pool.modality_names}


def _choose_learning_rate(train_pool, test, config, seed, learning_rates,
                          epochs, *, tuning_path: str, resume: bool):
  """(the rate with the best validation score on `seed`, {seed: its run}).

  Reuses the choice stored in `tuning_path` when it was made for the same
  rates, seed and epochs (then no run is reusable); else writes it there.
  """
  record = (results.read_json(tuning_path)
            if resume and os.path.exists(tuning_path) else None)
  if record and record.get('learning_rates') == learning_rates and (
      record.get('seed') == seed and record.get('epochs') == epochs):
    return record['chosen'], {}
  trials = {}
  for rate in learning_rates:
    trials[rate] = _centralized_run(train_pool, test, config, seed, rate,
                                    epochs)
  scores = {r: (t['validation_score'] if t['validation_score'] is not None
                else -1.0) for r, t in trials.items()}
  chosen = max(learning_rates, key=lambda r: scores[r])
  results.atomic_write_json(tuning_path, {
      'learning_rates': learning_rates, 'seed': seed,
      'epochs': epochs, 'chosen': chosen,
      'validation_score': {str(r): scores[r] for r in learning_rates},
      'validation': 'tff_hgb.centralized validation split of the '
                    'training pool; the test set is not used'})
  return chosen, {seed: trials[chosen]}


def client_learning_rate_grid(config: config_lib.ExperimentConfig
                              ) -> list[float]:
  """The client learning rates --tune tries ([] when it tunes none)."""
  for name, values in config_lib.parse_tune(config.run.tune):
    if name == 'client_learning_rate':
      return list(values)
  return []


def centralized_is_stored(output_dir: str, seeds: Sequence[int]) -> bool:
  """Whether `centralized_reference` would only read stored results."""
  return all(os.path.exists(os.path.join(output_dir, f'seed_{seed}',
                                         results.SUMMARY_JSON))
             for seed in seeds)


# As --jobs tasks (tff_hgb.experiment.jobs): `context` holds the process's
# caches and log.


def best_unimodal_task(context, config: config_lib.ExperimentConfig,
                       path: str) -> tuple[str, dict[str, float]]:
  return best_unimodal(config, context.data_cache, path=path)


def centralized_task(context, config: config_lib.ExperimentConfig,
                     seeds: Sequence[int], output_dir: str,
                     modalities: Optional[Sequence[str]], resume: bool,
                     learning_rates: Sequence[float]) -> dict[str, Any]:
  return centralized_reference(
      config, seeds, output_dir=output_dir, data_cache=context.data_cache,
      modalities=modalities, resume=resume, learning_rates=learning_rates,
      log=context.log)
