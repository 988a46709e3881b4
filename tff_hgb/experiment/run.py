"""One run end to end: data, optional tuning, the rounds, summary.json — and the
one-line result a binary prints.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from tff_hgb import export
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import loop
from tff_hgb.experiment import reports
from tff_hgb.experiment import results
from tff_hgb.experiment import tuning


def run_experiment(config: config_lib.ExperimentConfig, *,
                   data_cache: Optional[caches.DataCache] = None,
                   algorithm_cache: Optional[caches.AlgorithmCache] = None,
                   tuned: Optional[Mapping[str, Any]] = None,
                   tuning_record: Optional[Mapping[str, Any]] = None,
                   skip_complete: bool = False) -> dict[str, Any]:
  """One configuration end to end into config.run.output_dir; its summary.

  Args:
    config: a valid run (`config.validate` passed: the binaries check their
      flags once, up front); with config.run.tune, tune first, then train at the
      best value.
    data_cache: the caller's data (a binary loads it before the run, a
      comparison shares it across runs), so nothing is loaded twice.
    algorithm_cache: shared across the runs of a comparison.
    tuned: values chosen by an earlier tuning (a comparison tunes once per
      algorithm); applied to config and recorded in the summary.
    tuning_record: that tuning's record, copied to this run's tuning.json.
    skip_complete: with config.run.resume, return the stored summary of a run
      that already finished instead of re-evaluating it.

  The final global model (trained at the tuned values, if any) is exported to
  config.run.export_dir (default output_dir/model) for `tff_hgb.load_model`.

  Raises:
    config_lib.UsageError: the output or export directory or the data does not
      fit the run (one line, names the flag).
  """
  flags = config.to_dict()
  output_dir = config.run.output_dir
  results.check_output_dir(output_dir, flags, resume=config.run.resume)
  export_dir = config.run.export_dir or os.path.join(output_dir, 'model')
  _export_or_usage_error(export.check_writable, export_dir)
  if skip_complete and config.run.resume and results.run_is_complete(
      output_dir, config):
    return results.read_json(os.path.join(output_dir, results.SUMMARY_JSON))
  data_cache = data_cache or caches.DataCache()
  algorithm_cache = algorithm_cache or caches.AlgorithmCache()
  data = data_cache.get(config)
  caches.check_algorithm(config, data)
  writer = results.RunWriter(output_dir)
  try:
    writer.write_json(results.FLAGS_JSON, flags)
    writer.write_text(results.PARTITION_TXT, data.describe() + '\n')
    writer.write_text(results.PARTITION_JSON, data.partition.to_json())
    if config.run.tune and tuned is None:
      tuning_record = tuning.tune(
          config, tuning_path=writer.path(results.TUNING_JSON),
          data_cache=data_cache, algorithm_cache=algorithm_cache,
          resume=config.run.resume)
      tuned = tuning_record['chosen']
    elif tuning_record is not None:
      writer.write_json(results.TUNING_JSON, tuning_record)
    run_config = config_lib.with_values(config, tuned or {})
    algorithm = algorithm_cache.get(run_config, data)
    state, rows = loop.train(
        run_config, data, algorithm, writer=writer,
        desc=f'{config.algorithm.name} seed {config.run.seed}')
    summary = _summary(run_config, data, algorithm, state, rows, tuned)
    # Before summary.json: a run whose export failed is not complete.
    _export_or_usage_error(_export_model, export_dir, run_config, data,
                           algorithm, state, tuned)
    writer.write_json(results.SUMMARY_JSON, summary)
  finally:
    writer.close()
  return summary


def _export_or_usage_error(fn, export_dir: str, *args) -> None:
  try:
    fn(export_dir, *args)
  except export.ExportError as e:
    raise config_lib.UsageError('export_dir', str(e)) from None


def _export_model(export_dir: str, run_config: config_lib.ExperimentConfig,
                  data: caches.ExperimentData, algorithm, state,
                  tuned: Optional[Mapping[str, Any]]) -> None:
  """The final global model, with its inputs' specs, into export_dir."""
  pool = data.train_pool
  export.export_model(
      algorithm.keras_model_fn(), export_dir,
      weights=algorithm.process.get_model_weights(state),
      modalities=algorithm.federated_data.modalities,
      class_names=pool.class_names, normalization=pool.normalization,
      metadata={'algorithm': run_config.algorithm.name,
                'dataset': run_config.data.dataset,
                'seed': run_config.run.seed,
                'rounds': run_config.run.rounds,
                'tuned': dict(tuned or {})})


def _summary(run_config: config_lib.ExperimentConfig,
             data: caches.ExperimentData, algorithm, state, rows,
             tuned: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """summary.json of a finished run (trained at `run_config`)."""
  summary = {
      'algorithm': run_config.algorithm.name,
      'dataset': run_config.data.dataset,
      'partition': run_config.data.partition,
      'seed': run_config.run.seed,
      'num_clients': len(algorithm.client_ids),
      'target_accuracy': run_config.run.target_accuracy,
  }
  summary.update(reports.summarize_rows(
      rows, target_accuracy=run_config.run.target_accuracy))
  if rows and results.TEST_FUSION_ACCURACY in rows[-1]:
    summary['final_head_accuracy'] = {
        k.split('/')[1]: v for k, v in rows[-1].items()
        if k.startswith(f'{caches.TEST_PREFIX}/') and k.endswith('/accuracy')}
  summary['missing_modality_accuracy'] = loop.missing_modality_accuracy(
      algorithm, state, data.evaluation_set)
  summary['tuned'] = dict(tuned or {})
  summary['learning_rates'] = {
      'client': run_config.algorithm.client_learning_rate,
      'server': run_config.algorithm.server_learning_rate}
  return summary


def result_line(summary: Mapping[str, Any], output_dir: str = '') -> str:
  """The one-line result a binary prints at the end."""

  def pct(v):
    return 'n/a' if v is None else f'{100 * v:.2f}%'

  target = summary.get('target_accuracy')
  reached = summary.get('rounds_to_target')
  target_text = ('' if target is None else
                 f', target {100 * target:.0f}% ' +
                 (f'at round {reached}' if reached else 'not reached'))
  spr = summary.get('seconds_per_round_median')
  text = (f'{summary["algorithm"]} on {summary["dataset"]}/'
          f'{summary["partition"]} seed {summary["seed"]}: final '
          f'{pct(summary.get("final_accuracy"))}, best '
          f'{pct(summary.get("best_accuracy"))} after '
          f'{summary.get("rounds_completed")} rounds{target_text}')
  if spr is not None:
    text += f', {spr:.2f} s/round'
  if summary.get('tuned'):
    text += ' (tuned ' + ', '.join(f'{k}={v:g}' for k, v in
                                   summary['tuned'].items()) + ')'
  if output_dir:
    text += f' → {output_dir}'
  return text
