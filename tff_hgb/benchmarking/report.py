"""The benchmark's report: benchmark.json, BENCHMARKS.md, the targets.

`write_reports` runs after every section: a partial run leaves a report.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
from typing import Any

from tff_hgb.benchmarking import instruments
from tff_hgb.benchmarking import settings as settings_lib


def new_report(settings: settings_lib.Settings, command: str
               ) -> dict[str, Any]:
  """The report before any section: command, machine, versions, settings."""
  return collections.OrderedDict(
      command=command,
      started=datetime.datetime.now().isoformat(timespec='seconds'),
      machine=instruments.machine_info(),
      versions=instruments.versions(),
      settings=dataclasses.asdict(settings),
      workload=None,
      results=collections.OrderedDict(),
      section_seconds=collections.OrderedDict())


def _median(results, *path):
  node = results
  for key in path:
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  if isinstance(node, dict):
    return node.get('median')
  return node


def evaluate_targets(results) -> list[dict[str, Any]]:
  """The issue's targets against the measured figures."""
  targets = []

  def add(name, value, target, met):
    targets.append(collections.OrderedDict(
        figure=name, value=value, target=target,
        met=None if value is None else bool(met)))

  for epochs, bound in ((1, 1.3), (2, 1.15)):
    value = _median(results, 'hgb_over_fedavg_round_time', f'E={epochs}',
                    'ratio')
    add(f'hgb_over_fedavg_round_time E={epochs}', value, f'<= {bound}',
        value is not None and value <= bound)
  value = _median(results, 'runtimes', 'inprocess_over_plain_loop')
  if value is not None:  # A string when the in-process context failed.
    add('inprocess_over_plain_loop', value, '<= 1.2',
        isinstance(value, float) and value <= 1.2)
  value = _median(results, 'runtimes', 'inprocess_jit_over_inprocess')
  if value is not None:
    add('inprocess HGB round (MLP), --jit / without', value, '<= 0.5',
        value <= 0.5)
  for jit in ('no_jit', 'jit'):
    value = _median(results, 'media', 'inprocess', jit, 'hgb_over_flop_floor')
    if value is not None:
      add(f'media HGB round / FLOP floor, in-process, {jit}', value, '<= 5',
          value <= 5)
  scaling = results.get('scaling', {})
  ratio = scaling.get('per_client_ratio', {})
  if ratio:
    add(f'scaling per-client time {ratio["numerator_clients"]} vs '
        f'{ratio["denominator_clients"]} clients', ratio.get('median'),
        '<= 1.2', ratio.get('median') is not None and ratio['median'] <= 1.2)
    largest = str(ratio['numerator_clients'])
    done = scaling.get('completed_rounds', {}).get(largest)
    add(f'{largest} clients per round complete a round', done, '>= 1 round',
        bool(done))
  memory = results.get('memory', {})
  if memory:
    add('rss_growth_pct (round 10 → last)', memory.get('rss_growth_pct'),
        '< 5', memory.get('rss_growth_pct', 99) < 5)
    traces = memory.get('traces', {})
    add('client-update traces constant over the long run',
        traces.get('after_last_round', {}).get('client_update_traces'),
        'constant', traces.get('constant_over_rounds'))
  workers = results.get('multi_worker_round_time', {})
  if workers:
    add('workers left behind after context changes',
        workers.get('workers_left_behind'), '0',
        workers.get('workers_left_behind') == 0)
  return targets


def _fmt(value, digits=3) -> str:
  if value is None:
    return '–'
  if isinstance(value, float):
    if abs(value) >= 100:
      return f'{value:.1f}'
    return f'{value:.{digits}g}' if abs(value) < 0.01 else f'{value:.{digits}f}'
  return str(value)


def _row(name, summary, unit='') -> str:
  if isinstance(summary, dict) and 'median' in summary:
    return (f'| {name} | {_fmt(summary["median"])}{unit} | '
            f'{_fmt(summary["min"])} | {_fmt(summary["max"])} | '
            f'{summary["n"]} |')
  return f'| {name} | {summary} | | | |'


def _header_lines(report: dict[str, Any]) -> list[str]:
  """Title, command, machine, versions, workload, the figures' heading."""
  lines = ['# Benchmark results', '',
           f'Command: `{report["command"]}`  ',
           f'Started {report["started"]}, total runtime '
           f'{report.get("total_runtime_s", 0):.0f} s.', '',
           '## Machine and versions', '', '| | |', '|---|---|']
  for key, value in report['machine'].items():
    lines.append(f'| {key} | {value} |')
  for key, value in report['versions'].items():
    lines.append(f'| {key} | {value} |')
  lines += ['', '## Workload', '']
  for key, value in report['workload'].items():
    lines.append(f'- {key}: {value}')
  lines += ['', '## Figures (median of repeats after warm-up; min, max)', '',
            '| figure | median | min | max | repeats |', '|---|---|---|---|---|']
  return lines


def _ratio_rows(ratio) -> list[str]:
  """Rows of the ratio section."""
  lines = []
  for key, entry in ratio.items():
    if key.startswith('E='):
      lines.append(_row(f'hgb_over_fedavg_round_time {key}', entry['ratio']))
      lines.append(_row(f'  hgb_over_fedavg_reduce {key}',
                        entry['hgb_over_fedavg_reduce']))
      if isinstance(entry.get('inprocess'), dict):
        lines.append(_row(f'  hgb_over_fedavg in-process {key}',
                          entry['inprocess']['ratio']))
      lines.append(_row(f'  CPU-time ratio HGB / FedAvg {key}',
                        entry['cpu_ratio']))
      lines.append(_row(f'  CPU-time ratio HGB / FedAvg (TFF default reduce loop) {key}',
                        entry['cpu_ratio_over_fedavg_reduce']))
      lines.append(_row(f'  HGB round s {key}', entry['hgb_round_s']))
      lines.append(_row(f'  FedAvg round s {key}', entry['fedavg_round_s']))
      lines.append(_row(f'  FedAvg (TFF default reduce loop) round s {key}',
                        entry['fedavg_reduce_round_s']))
  return lines


def _flop_rows(flop) -> list[str]:
  """Rows of the flops section."""
  lines = []
  lines.append(_row('matmul GFLOP/s', flop['matmul_gflops']))
  fpe = flop['flops_per_example']
  lines.append(f'| FLOPs per example: forward / training step | '
               f'{fpe["forward"]:.0f} / {fpe["train_step"]:.0f} | | | |')
  for key, entry in flop.items():
    if key.startswith('E='):
      for name in ('hgb', 'fedavg'):
        lines.append(_row(
            f'round_time_over_flop_floor {name} {key} (floor '
            f'{entry[name]["floor_s"] * 1e3:.3g} ms)', entry[name]['ratio']))
  profile = flop['profile']
  lines.append(_row('profile: HGB round wall s', profile['round_wall_s']))
  lines.append(_row('profile: worker CPU s', profile['worker_cpu_s']))
  lines.append(_row('profile: Python process CPU s',
                    profile['python_process_cpu_s']))
  return lines


def _runtimes_rows(runtimes) -> list[str]:
  """Rows of the runtimes section."""
  lines = []
  for key in ('tff_over_plain_loop', 'inprocess_over_plain_loop',
              'tff_over_inprocess_round_time', 'plain_loop_round_s',
              'tff_round_s', 'inprocess_round_s', 'inprocess_jit_round_s',
              'inprocess_jit_over_inprocess'):
    if key in runtimes:
      lines.append(_row(key, runtimes[key]))
  transfer = runtimes.get('datasets_per_client')
  if isinstance(transfer, dict):
    for name, summary in transfer['round_s'].items():
      lines.append(_row(f'TFF runtime: a counting client map, {name}, s',
                        summary))
    lines.append(_row('TFF runtime: s per extra dataset per client',
                      transfer['seconds_per_extra_dataset_per_client']))
    lines.append(_row('TFF runtime: one held-out dataset instead of two, '
                      's saved per client',
                      transfer['held_out_saving_per_client']))
  return lines


def _media_rows(media) -> list[str]:
  """Rows of the media section."""
  fpe = media['flops_per_example']
  lines = [f'| media: FLOPs per example: forward / training step | '
           f'{fpe["forward"]:.0f} / {fpe["train_step"]:.0f} | | | |',
           f'| media: FLOP floor of a round, HGB / FedAvg | '
           f'{media["floor_s"]["hgb"] * 1e3:.3g} / '
           f'{media["floor_s"]["fedavg"] * 1e3:.3g} ms | | | |']
  for runtime in ('inprocess', 'tff'):
    entry = media.get(runtime)
    if not isinstance(entry, dict):
      lines.append(f'| media {runtime} | {entry} | | | |')
      continue
    for jit in ('no_jit', 'jit'):
      for key, summary in entry[jit].items():
        lines.append(_row(f'media {runtime} {jit}: {key}', summary))
    for name, summary in entry['jit_over_no_jit'].items():
      lines.append(_row(f'media {runtime}: {name} round, jit / no jit',
                        summary))
  for name, summary in media.get('tff_over_inprocess', {}).items():
    lines.append(_row(f'media: {name} round, TFF / in-process (no jit)',
                      summary))
  return lines


def _scaling_rows(scaling) -> list[str]:
  """Rows of the scaling section."""
  lines = []
  for n, summary in scaling['round_s'].items():
    lines.append(_row(f'scaling: s per round, {n} clients', summary))
  for n, summary in scaling['per_client_s'].items():
    lines.append(_row(f'scaling: s per client, {n} clients', summary))
  lines.append('| scaling: peak RSS MB (process + workers) during a '
               'round, by clients (before the section '
               f'{scaling["rss_before_section_mb"]:.0f}, with the '
               f'{max(int(n) for n in scaling["round_s"])}-client data '
               f'{scaling["rss_with_data_mb"]:.0f}) | ' + ', '.join(
                   f'{n}: {mb:.0f}' for n, mb in
                   scaling['peak_rss_mb'].items()) + ' | | | |')
  ratio_entry = scaling['per_client_ratio']
  lines.append(_row(
      f'scaling: per-client time {ratio_entry["numerator_clients"]} / '
      f'{ratio_entry["denominator_clients"]} clients', ratio_entry))
  return lines


def _memory_rows(memory) -> list[str]:
  """Rows of the memory section."""
  lines = []
  lines.append(f'| peak_rss_mb ({memory["rounds"]} rounds) | '
               f'{memory["peak_rss_mb"]} | | | |')
  lines.append(f'| rss_growth_pct (round 10 → {memory["rounds"]}) | '
               f'{memory["rss_growth_pct"]} | | | |')
  traces = memory['traces']
  lines.append(
      '| client-update traces after build / round 10 / last round | '
      f'{traces["after_build"]["client_update_traces"]} / '
      f'{traces["after_round_10"]["client_update_traces"]} / '
      f'{traces["after_last_round"]["client_update_traces"]} | | | |')
  return lines


def _workers_rows(workers) -> list[str]:
  """Rows of the workers section."""
  lines = []
  for name, summary in workers['round_s'].items():
    lines.append(_row(f'round s at {workers["clients_per_round"]} clients, '
                      f'{name}', summary))
  lines.append(f'| workers left behind | {workers["workers_left_behind"]} '
               '| | | |')
  return lines


def _local_step_rows(local) -> list[str]:
  """Rows of the local_step section (ALGORITHM.md §9 client updates)."""
  lines = [_row(f'one local step, {name} (ms)', summary)
           for name, summary in local['step_ms'].items()]
  for name, summary in local['over_fedavg_all_heads'].items():
    lines.append(_row(f'one local step, {name} / fedavg_all_heads', summary))
  return lines


# results key → rows of its section, in the order of the table.
_SECTION_ROWS = (
    ('hgb_over_fedavg_round_time', _ratio_rows),
    ('round_time_over_flop_floor', _flop_rows),
    ('runtimes', _runtimes_rows),
    ('media', _media_rows),
    ('scaling', _scaling_rows),
    ('memory', _memory_rows),
    ('multi_worker_round_time', _workers_rows),
    ('local_step_cost', _local_step_rows),
)


def markdown_report(report: dict[str, Any]) -> str:
  """results/bench/BENCHMARKS.md: machine, versions, one row per figure."""
  r = report['results']
  lines = _header_lines(report)
  for key, rows in _SECTION_ROWS:
    if r.get(key):
      lines += rows(r[key])
  lines += ['', '## Targets', '', '| figure | value | target | met |',
            '|---|---|---|---|']
  for target in report['targets']:
    lines.append(f'| {target["figure"]} | {_fmt(target["value"])} | '
                 f'{target["target"]} | {target["met"]} |')
  flop = r.get('round_time_over_flop_floor', {})
  if flop.get('where_the_rest_goes'):
    lines += ['', '## Where the time goes', '', flop['where_the_rest_goes']]
  lines += ['', 'Numbers from a shared or loaded machine are indicative: rerun '
            'on a quiet machine for final figures.', '']
  return '\n'.join(lines)


def write_reports(report: dict[str, Any], output_dir: str) -> None:
  """benchmark.json (written whole, then renamed) and BENCHMARKS.md."""
  os.makedirs(output_dir, exist_ok=True)
  report['targets'] = evaluate_targets(report['results'])
  path = os.path.join(output_dir, 'benchmark.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1, default=str)
  os.replace(path + '.tmp', path)
  with open(os.path.join(output_dir, 'BENCHMARKS.md'), 'w',
            encoding='utf-8') as f:
    f.write(markdown_report(report))

