"""The paper's Tables I–III on our data (`make paper`): which comparisons they
need, running them resumably, and RESULTS.md beside the paper's numbers.
"""

from __future__ import annotations

import collections
import os
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from tff_hgb import algorithms
from tff_hgb.data import partition as partition_lib
from tff_hgb.experiment import caches
from tff_hgb.experiment import comparison as comparison_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import jobs
from tff_hgb.experiment import presets
from tff_hgb.experiment import reference
from tff_hgb.experiment import reports
from tff_hgb.experiment import results


# Table III's settings (ALGORITHM.md §5, §6).
PAPER_ABLATION_SCHEMES = (partition_lib.CASE_A, partition_lib.ONE_MODALITY_B,
                          partition_lib.TWO_MODALITIES_B,
                          partition_lib.MIXED_B, partition_lib.CASE_C)
PAPER_TABLE_II_SCHEMES = (partition_lib.MIXED_B,
                          partition_lib.TWO_MODALITIES_B)
# The tables reproduce the paper, so HGB there is the literal algorithm
# (`hgb_paper`), whatever configuration the default `hgb` has.
PAPER_TABLE_II_ALGORITHMS = ('fedavg', 'fedattn', 'fednova', 'hgb_paper',
                             comparison_lib.BEST_UNIMODAL)
PAPER_TABLE_III_ALGORITHMS = ('m_gb', 'c_gb', 'hgb_paper')

# The preset of `make paper` and its --quick (flags given on the command line
# win).
PAPER_PRESET = presets.PAPER_PRESET
PAPER_QUICK = presets.PAPER_QUICK


def paper_plan(tables: Sequence[int], modalities: Sequence[str]
               ) -> 'collections.OrderedDict[str, list[str]]':
  """Partition scheme → the algorithms the selected tables need there.

  Table I: case A, FedAvg on every modality alone and on all of them (plus
  centralized runs, see `run_paper_tables`). Table II: Mixed-B and 2M-B, the
  baselines, HGB and the best uni-modal model. Table III: M-GB, C-GB and HGB
  on every setting.
  """
  plan = collections.OrderedDict()

  def add(scheme, names):
    entry = plan.setdefault(scheme, [])
    entry.extend(n for n in names if n not in entry)

  if 1 in tables:
    add(partition_lib.CASE_A,
        [f'{algorithms.UNI_PREFIX}{m}' for m in modalities] + ['fedavg'])
  if 2 in tables:
    for scheme in PAPER_TABLE_II_SCHEMES:
      add(scheme, PAPER_TABLE_II_ALGORITHMS)
  if 3 in tables:
    for scheme in PAPER_ABLATION_SCHEMES:
      add(scheme, PAPER_TABLE_III_ALGORITHMS)
  return plan


def run_paper_tables(base: config_lib.ExperimentConfig, *,
                     tables: Sequence[int],
                     seeds: Sequence[int], output_dir: str,
                     log: Callable[[str], None] = print,
                     pool: Optional[jobs.Pool] = None) -> dict[str, Any]:
  """Runs (or reuses) every comparison the tables need; writes RESULTS.md.

  Each setting is a resumable comparison in output_dir/<scheme>/ (finished
  runs are skipped, unfinished ones continue), the centralized references of
  Table I in output_dir/centralized/<modalities>/. With `pool`, the runs of
  each comparison, and the centralized references, run in its processes.

  Returns:
    {'settings': {scheme: comparison summary}, 'centralized': {set: row},
    'markdown': RESULTS.md text}.

  Raises:
    jobs.RunsFailed: (with a pool) some runs failed; every other setting was
      still run, and RESULTS.md is not written.
  """
  results.claim_output_dir(output_dir)  # Its comparisons are inside it.
  tables = sorted(set(tables))
  data_cache = caches.DataCache()
  train_pool, _ = data_cache.load(base)
  modalities = train_pool.modality_names
  plan = paper_plan(tables, modalities)
  settings = collections.OrderedDict()
  started = time.perf_counter()
  failed = []
  for scheme, names in plan.items():
    log(f'== {scheme}: {", ".join(names)}')
    comparison = comparison_lib.ComparisonConfig(
        base=base.replace(partition=scheme, resume=True,
                                 output_dir=os.path.join(output_dir, scheme)),
        algorithms=tuple(names), seeds=tuple(seeds),
        title=f'{base.data.dataset} / {scheme}')
    try:
      settings[scheme] = comparison_lib.run_comparison(
          comparison, output_dir=os.path.join(output_dir, scheme),
          resume=True, data_cache=data_cache, log=log, pool=pool)
    except jobs.RunsFailed as e:  # The other settings still run.
      failed += e.labels
  central = collections.OrderedDict()
  if 1 in tables:
    scheduler = jobs.Scheduler(pool, data_cache, log=log)
    sets = [[m] for m in modalities] + [list(modalities)]
    for index, subset in enumerate(sets):
      label = '+'.join(subset)

      def keep(row, label=label):
        central[label] = row

      central_dir = os.path.join(output_dir, 'centralized',
                                 comparison_lib.run_slug(label))
      scheduler.submit(jobs.Task(
          (index,), f'centralized {label}', _centralized_task,
          (base, tuple(seeds), label, subset, central_dir),
          cheap=reference.centralized_is_stored(central_dir, seeds)),
                       then=keep)
    try:
      scheduler.run()
    except jobs.RunsFailed as e:
      failed += e.labels
    central = collections.OrderedDict(  # In the sets' order.
        ('+'.join(s), central['+'.join(s)]) for s in sets
        if '+'.join(s) in central)
  if failed:
    raise jobs.RunsFailed(failed)
  markdown = paper_tables_markdown(
      settings, central, tables=tables, modalities=modalities,
      notes=[f'{base.data.dataset}: {base.data.num_clients} clients, '
             f'{base.run.rounds} rounds, local epochs '
             f'{base.algorithm.local_epochs}, batch '
             f'{base.algorithm.batch_size}, α = {base.data.alpha}, seeds '
             f'{list(seeds)}; target accuracy '
             f'{100 * (base.run.target_accuracy or 0):.0f}%.',
             ('client learning rate tuned per algorithm and setting '
              f'({base.run.tune}) on data held out of the training pool.'
              if base.run.tune else 'No tuning (client learning rate '
              f'{base.algorithm.client_learning_rate}).'),
             f'Wall time of this invocation: '
             f'{(time.perf_counter() - started) / 60:.1f} min (finished runs '
             'are reused).'])
  results.atomic_write_text(os.path.join(output_dir, 'RESULTS.md'), markdown)
  return {'settings': settings, 'centralized': central, 'markdown': markdown}


def _centralized_task(context, base: config_lib.ExperimentConfig,
                      seeds: Sequence[int], label: str,
                      subset: Sequence[str], output_dir: str
                      ) -> dict[str, Any]:
  """Table I's centralized reference on `subset` (a --jobs task)."""
  context.log(f'== centralized {label}')
  return reference.centralized_reference(
      base, seeds, output_dir=output_dir, data_cache=context.data_cache,
      modalities=list(subset), resume=True,
      learning_rates=reference.client_learning_rate_grid(base),
      log=context.log)


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
  return reports.pct(row['final_accuracy_mean'], row.get('final_accuracy_std'))


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
        delta = reports.delta_cr_cell(row) if row else ''
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
