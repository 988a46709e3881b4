"""Where HGB helps: the study of ALGORITHM.md §5b (`make study`): its settings,
methods, the selection of the default `hgb` and the runs (report: study_report).

Question: does OGR-driven blending beat fixed auxiliary uni-modal heads, does
the client level (C-GB) help anywhere, and which configuration should the
default `hgb` have?

Procedure (every accuracy used for a choice is on validation data held out of
the training pool; the test set only scores the final runs):

1. Selection. Each candidate configuration of `hgb` (`CANDIDATES`) is tuned
   (client learning rate) on the SELECTION settings only (htad Mixed-B and the
   synthetic paper regime in case A); its score is its best validation
   accuracy, averaged over those settings. The best candidate becomes the
   study's `hgb` row, unchanged on every setting.
2. Comparison. On every setting, every method (`methods(chosen)`) is tuned the
   same way and then run on `seeds` seeds at its chosen value, through
   `comparison.run_comparison` (resumable: rerunning continues).
3. Report. For each setting: each method's test accuracy (mean ± std), the
   paired per-seed difference to tuned fused FedAvg and to `fedavg_all_heads`
   with 95% t-intervals, rounds to target, effective number of clients, mean
   fusion-head weight and the z split between heads.

Paired differences: seed s fixes the model's initial weights and every
client's local data order for all methods (the partition is fixed by
`data_seed`), so method − baseline is compared seed by seed.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from tff_hgb.experiment import caches
from tff_hgb.experiment import comparison as comparison_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import jobs
from tff_hgb.experiment import presets
from tff_hgb.experiment import reports
from tff_hgb.experiment import results
from tff_hgb.experiment import study_report
from tff_hgb.experiment import tuning


# ---------------------------------------------------------------------------
# Settings and methods.
# ---------------------------------------------------------------------------


Setting = presets.Setting
SETTINGS = presets.SETTINGS


# A row of a study: a registry algorithm with its switches.
Method = presets.Method


# A floor of 1/|H| on the fusion head's weight: with 2 modalities, 3 heads.
_FLOOR = 0.34

# Candidates for the default `hgb` (ALGORITHM.md §5b switches). Each keeps the
# OGR blend on the heads and differs in how clients are weighted or where OGR
# is measured.
CANDIDATES = (
    Method('cand_mgb_floor', 'hgb', dict(client_weight_mix=0.0),
           dict(fusion_weight_floor=_FLOOR, prior_momentum=0.5)),
    Method('cand_tempered', 'hgb', dict(client_weight_mix=1.0,
                                        client_weight_temper=0.5),
           dict(fusion_weight_floor=_FLOOR, prior_momentum=0.5)),
    Method('cand_capped', 'hgb', dict(client_weight_mix=1.0,
                                      max_client_share=0.2),
           dict(fusion_weight_floor=_FLOOR, prior_momentum=0.5)),
    Method('cand_shared_val', 'hgb', dict(client_weight_mix=0.0,
                                          validation_source='shared'),
           dict(fusion_weight_floor=_FLOOR, prior_momentum=0.5)),
)

# The rows every other method is paired with (study_report).
BASELINE = study_report.BASELINE
HEADS_CONTROL = study_report.HEADS_CONTROL


# The controls that separate "flatter client weights" (fedavg_capped) and the
# client level alone (c_gb) run on the selection settings, where C-GB was
# measured; the other settings, run within the time budget, keep the rest.
SELECTION_ONLY = ('fedavg_capped', 'c_gb')


def methods(chosen: Method, setting: Optional[Setting] = None) -> list[Method]:
  """The rows of `setting`; `chosen` is the selected default `hgb`."""
  rows = [
      Method(BASELINE, 'fedavg'),
      Method(HEADS_CONTROL, 'fedavg_all_heads'),
      Method('fedavg_capped', 'fedavg_capped'),
      Method('hgb_paper', 'hgb_paper'),
      Method('m_gb', 'm_gb'),
      Method('c_gb', 'c_gb'),
      dataclasses.replace(chosen, label='hgb'),
  ]
  if setting is not None and not setting.selection:
    rows = [m for m in rows if m.label not in SELECTION_ONLY]
  return rows


def setting_config(setting: Setting, method: Method, *, output_dir: str,
                   quick: bool = False) -> config_lib.ExperimentConfig:
  values = dict(setting.overrides, **method.overrides)
  if quick and 'tune_seeds' in values:  # Robust tuning: every part of it.
    values.update(rounds=5, tune_rounds=5, num_clients=4, eval_every=1,
                  tune='client_learning_rate:0.1,0.4', tune_seeds=2,
                  tune_extensions=1)
  elif quick:
    values.update(rounds=3, tune_rounds=3, num_clients=4, eval_every=1,
                  tune='client_learning_rate:0.1,0.4')
  return config_lib.ExperimentConfig.from_dict(dict(
      values, algorithm=method.algorithm, hgb=method.hgb,
      algorithm_options=method.options, output_dir=output_dir, resume=True))


# ---------------------------------------------------------------------------
# Running.
# ---------------------------------------------------------------------------


def select_default(output_dir: str, *, settings: Sequence[Setting] = SETTINGS,
                   candidates: Sequence[Method] = CANDIDATES,
                   quick: bool = False,
                   data_cache: Optional[caches.DataCache] = None,
                   log: Callable[[str], None] = print,
                   pool: Optional[jobs.Pool] = None) -> dict[str, Any]:
  """Tunes each candidate on the selection settings; picks the best.

  The tuning values of every candidate and setting are independent runs (in
  `pool`'s processes if given).

  Returns (and writes output_dir/selection.json) {'chosen': label, 'scores':
  {label: {setting: best validation accuracy, 'mean': ...}}}.
  """
  data_cache = data_cache or caches.DataCache()
  scheduler = jobs.Scheduler(pool, data_cache, log=log)
  best: dict[tuple[int, int], float] = {}
  for c, candidate in enumerate(candidates):
    for s, setting in enumerate(settings):
      if setting.selection:
        _submit_selection(scheduler, (c, s), candidate, setting, best,
                          output_dir=output_dir, quick=quick,
                          data_cache=data_cache)
  scheduler.run()
  scores = collections.OrderedDict()
  for c, candidate in enumerate(candidates):
    per_setting = collections.OrderedDict(
        (setting.name, best[c, s]) for s, setting in enumerate(settings)
        if setting.selection)
    per_setting['mean'] = float(np.mean(list(per_setting.values())))
    scores[candidate.label] = per_setting
  chosen = max(scores, key=lambda label: scores[label]['mean'])
  selection = {'chosen': chosen, 'scores': scores,
               'candidates': {c.label: c.describe() for c in candidates}}
  results.atomic_write_json(os.path.join(output_dir, 'selection.json'),
                            selection)
  log(f'selected default hgb: {chosen}')
  return selection


def _submit_selection(scheduler: jobs.Scheduler, key: tuple[int, int],
                      candidate: Method, setting: Setting,
                      best: dict[tuple[int, int], float], *, output_dir: str,
                      quick: bool, data_cache: caches.DataCache) -> None:
  """One candidate's tuning on one selection setting; its best score → best."""
  config = setting_config(setting, candidate, output_dir=None, quick=quick)
  tuning_run = tuning.Tuning(
      config, tuning_path=os.path.join(output_dir, 'selection', setting.name,
                                       candidate.label, results.TUNING_JSON),
      data_cache=data_cache, resume=True)

  def finish(record):
    best[key] = max(c['score'] for c in record['candidates']
                    if c['score'] is not None and math.isfinite(c['score']))
    scheduler.log(f'selection {candidate.label} on {setting.name}: best '
                  f'validation accuracy {best[key]:.4f} at {record["chosen"]}')

  tuning.submit(scheduler, tuning_run, key=key,
                label=f'selection {candidate.label} {setting.name}',
                then=finish)


def _mean_of_column(rows: Sequence[Mapping[str, Any]], column: str
                    ) -> Optional[float]:
  values = [r.get(column) for r in rows]
  values = [v for v in values if isinstance(v, float) and math.isfinite(v)]
  return float(np.mean(values)) if values else None


def collect(method_dir: str, algorithm: str, seeds: Sequence[int]
            ) -> list[dict[str, Any]]:
  """Per-seed results of one method (finished runs only)."""
  runs = []
  algorithm_dir = os.path.join(method_dir, comparison_lib.run_slug(algorithm))
  for seed in seeds:
    run_dir = os.path.join(algorithm_dir, f'seed_{seed}')
    path = os.path.join(run_dir, results.SUMMARY_JSON)
    if not os.path.exists(path):
      continue
    summary = results.read_json(path)
    metrics = os.path.join(run_dir, results.METRICS_CSV)
    z, extra = {}, {}
    if os.path.exists(metrics):
      rows = results.read_metrics(metrics)
      for column in results.columns_of(rows):
        if column.startswith('z/'):
          z[column[2:]] = _mean_of_column(rows, column)
      # From the rows, so a run finished before these figures existed
      # reports them too.
      _, accuracy = reports.accuracy_curve(rows)
      extra = {'last_rounds_accuracy': reports.last_rounds_mean(accuracy),
               'mechanism': reports.mechanism_means(rows),
               'run_seconds': sum(
                   float(r.get(k) or 0.0) for r in rows
                   for k in (results.SECONDS, 'eval_seconds')
                   if isinstance(r.get(k), float) and math.isfinite(r[k]))}
    runs.append(dict(summary, z_split=z, **extra))
  return runs


def _prepare_method(setting: Setting, method: Method,
                    base: config_lib.ExperimentConfig, seeds: Sequence[int], *,
                    tuning_path: str, selected_path: str
                    ) -> tuple[comparison_lib.ComparisonConfig, str]:
  """One setting × method: a resumable comparison in base's output_dir."""
  if (method.label == 'hgb' and base.run.tune and selected_path and
      os.path.exists(selected_path) and not os.path.exists(tuning_path)):
    # The chosen candidate was tuned on this setting already (same
    # configuration, grid, rounds and seed): reuse rather than redo.
    os.makedirs(os.path.dirname(tuning_path), exist_ok=True)
    results.atomic_write_json(tuning_path, results.read_json(selected_path))
  comparison = comparison_lib.ComparisonConfig(
      base=base, algorithms=(method.algorithm,), seeds=tuple(seeds),
      title=f'{setting.name} / {method.label}')
  return comparison, base.run.output_dir


def run_study(output_dir: str, *, seeds: Sequence[int],
              settings: Optional[Sequence[Setting]] = None,
              candidates: Sequence[Method] = CANDIDATES,
              method_labels: Optional[Sequence[str]] = None,
              plan: Optional[presets.StudyPlan] = None,
              quick: bool = False,
              report_only: bool = False,
              log: Callable[[str], None] = print,
              pool: Optional[jobs.Pool] = None) -> dict[str, Any]:
  """Every setting × method of `plan`; writes STUDY.md and study.json.

  Args:
    output_dir: everything goes here (resumable: rerun to continue, in any
      number of sittings; each sitting's wall time is kept in sittings.json).
    seeds: the seeds of the final runs (tuning uses the first and the next
      tune_seeds − 1).
    settings: the data settings (default the plan's; v1: those with
      `selection` choose the default).
    candidates: (v1) the configurations the default `hgb` is chosen from.
    method_labels: run only these rows (default all).
    plan: the study (presets.STUDY_PLANS; default v1).
    quick: a tiny version (a few rounds, 4 clients, 2 learning rates) that
      exercises the machinery.
    report_only: run nothing; report what output_dir holds so far (e.g.
      while another process runs the study). v1 needs the selection done.
    pool: run the independent runs (tuning values, seeds) in its processes.

  Raises:
    jobs.RunsFailed: (with a pool) some runs failed; every other method still
      ran, and STUDY.md is not written.
  """
  plan = plan or presets.STUDY_PLANS['v1']
  settings = list(settings or plan.settings)
  started = time.perf_counter()
  data_cache = caches.DataCache()
  if not report_only:  # A report reads while the study's own process runs.
    results.claim_output_dir(output_dir)
  os.makedirs(output_dir, exist_ok=True)
  try:
    selection, chosen = _selection(
        output_dir, plan, settings=settings, candidates=candidates,
        quick=quick, report_only=report_only, data_cache=data_cache, log=log,
        pool=pool)
    rows, failed = _run_rows(
        output_dir, plan, settings, chosen, seeds=seeds,
        method_labels=method_labels, quick=quick, report_only=report_only,
        data_cache=data_cache, log=log, pool=pool)
  finally:
    if not report_only:
      _log_sitting(output_dir, time.perf_counter() - started)
  if failed:
    raise jobs.RunsFailed(failed)
  study = {'plan': plan.name, 'title': plan.title, 'selection': selection,
           'seeds': list(seeds), 'quick': quick,
           'settings': {s.name: {'description': s.description,
                                 'overrides': dict(s.overrides),
                                 'selection': s.selection} for s in settings},
           'rows': rows, 'seconds': time.perf_counter() - started,
           'timing': timing(output_dir, rows)}
  study['complete'] = not report_only
  markdown = study_report.study_markdown(study)
  name = 'STUDY_PARTIAL.md' if report_only else 'STUDY.md'
  results.atomic_write_json(os.path.join(output_dir, name.replace(
      'STUDY', 'study').replace('.md', '.json')), study)
  results.atomic_write_text(os.path.join(output_dir, name), markdown)
  study['markdown'] = markdown
  return study


def _selection(output_dir, plan, *, settings, candidates, quick, report_only,
               data_cache, log, pool):
  """(selection record or None, the `hgb` row's Method or None)."""
  if not plan.select_default:
    return None, None
  selection_path = os.path.join(output_dir, 'selection.json')
  if report_only:
    if not os.path.exists(selection_path):
      raise config_lib.UsageError(
          'report_only', f'{selection_path} does not exist yet: the default '
          'is chosen first.')
    selection = results.read_json(selection_path)
  else:
    selection = select_default(output_dir, settings=settings,
                               candidates=candidates, quick=quick,
                               data_cache=data_cache, log=log, pool=pool)
  return selection, next(c for c in candidates
                         if c.label == selection['chosen'])


def _run_rows(output_dir, plan, settings, chosen, *, seeds, method_labels,
              quick, report_only, data_cache, log, pool):
  """Runs (or, report_only, reads) every setting × method: (rows, failed).

  The methods of a setting share one queue of runs (run_comparisons), so the
  workers stay busy from its first tuning run to its last seed.
  """
  rows = collections.OrderedDict()
  failed = []
  for setting in settings:
    setting_methods = (presets.plan_methods(plan, setting) if plan.methods
                       else methods(chosen, setting))
    setting_methods = [m for m in setting_methods if method_labels is None or
                       m.label in method_labels]
    paths, items = {}, []
    for method in setting_methods:
      method_dir = os.path.join(output_dir, setting.name, method.label)
      base = setting_config(setting, method, output_dir=method_dir,
                            quick=quick)
      paths[method.label] = (method_dir, os.path.join(
          method_dir, comparison_lib.run_slug(method.algorithm),
          results.TUNING_JSON))
      if not report_only:
        selected_path = (os.path.join(output_dir, 'selection', setting.name,
                                      chosen.label, results.TUNING_JSON)
                         if chosen else '')
        items.append(_prepare_method(
            setting, method, base, seeds, tuning_path=paths[method.label][1],
            selected_path=selected_path))
    if items:
      log(f'== {setting.name}: ' + ', '.join(m.label for m in setting_methods))
      try:
        comparison_lib.run_comparisons(items, resume=True,
                                       data_cache=data_cache, log=log,
                                       pool=pool)
      except jobs.RunsFailed as e:  # The other settings still run.
        failed += e.labels
    rows[setting.name] = collections.OrderedDict()
    for method in setting_methods:
      method_dir, tuning_path = paths[method.label]
      if report_only and not os.path.isdir(method_dir):
        continue
      rows[setting.name][method.label] = {
          'method': method.describe(),
          'algorithm': method.algorithm,
          'runs': collect(method_dir, method.algorithm, seeds),
          'tuning': (results.read_json(tuning_path)
                     if os.path.exists(tuning_path) else None),
      }
  return rows, failed


_SITTINGS_JSON = 'sittings.json'


def _log_sitting(output_dir: str, seconds: float) -> None:
  """Adds this invocation's wall time to output_dir/sittings.json."""
  path = os.path.join(output_dir, _SITTINGS_JSON)
  sittings = results.read_json(path) if os.path.exists(path) else []
  sittings.append({'ended': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                   'seconds': seconds})
  results.atomic_write_json(path, sittings)


def timing(output_dir: str, rows: Mapping[str, Mapping[str, Any]]
           ) -> dict[str, Any]:
  """The study's time from its files: the runner's sittings (wall) and the
  rounds of every final and tuning run (compute)."""
  path = os.path.join(output_dir, _SITTINGS_JSON)
  sittings = results.read_json(path) if os.path.exists(path) else []
  run_seconds, final_runs, tuning_runs = 0.0, 0, 0
  for methods_of_setting in rows.values():
    for row in methods_of_setting.values():
      for run in row['runs']:
        run_seconds += run.get('run_seconds') or 0.0
        final_runs += 1
      for entry in (row.get('tuning') or {}).get('runs', ()):
        run_seconds += entry.get('seconds') or 0.0
        tuning_runs += 1
  return {'wall_seconds': sum(s['seconds'] for s in sittings),
          'sittings': len(sittings), 'run_seconds': run_seconds,
          'runs': final_runs, 'tuning_runs': tuning_runs}
