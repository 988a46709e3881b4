"""Smoke test of `python -m experiments.benchmark --quick` (not a timed test).

One tiny run of every section in a subprocess; the tests check the fields of
benchmark.json and BENCHMARKS.md, that no process of the run survives it, and
the flag errors. The numbers themselves are meaningless at these sizes.
"""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

import binary_utils  # tests/binary_utils.py

REPO = binary_utils.REPO
TIMEOUT = 900


_env = binary_utils.child_env
_processes_with = binary_utils.processes_with


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('bench'))
  marker = uuid.uuid4().hex
  # Output through a pipe: the run must end although its workers inherit it.
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--quick',
       f'--output_dir={output_dir}'],
      cwd=REPO, env=_env(marker), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, check=False)
  assert completed.returncode == 0, completed.stdout[-4000:]
  deadline = time.monotonic() + 10
  left = _processes_with(marker)
  while left and time.monotonic() < deadline:
    time.sleep(0.2)
    left = _processes_with(marker)
  with open(os.path.join(output_dir, 'benchmark.json'), encoding='utf-8') as f:
    report = json.load(f)
  with open(os.path.join(output_dir, 'BENCHMARKS.md'), encoding='utf-8') as f:
    markdown = f.read()
  return report, markdown, completed.stdout, left


def _is_summary(value):
  return (isinstance(value, dict) and
          {'median', 'min', 'max', 'n', 'values'} <= set(value) and
          value['n'] == len(value['values']) >= 1 and
          value['min'] <= value['median'] <= value['max'])


def _strings(value, path=''):
  """(path, string) of every string in a JSON value."""
  if isinstance(value, dict):
    for key, item in value.items():
      yield from _strings(item, f'{path}/{key}')
  elif isinstance(value, list):
    for i, item in enumerate(value):
      yield from _strings(item, f'{path}[{i}]')
  elif isinstance(value, str):
    yield path, value


def test_no_section_error_is_swallowed(quick_run):
  # A section that fails in-process reports 'pending: … failed (…)' in place
  # of its figure and prints the traceback, and the run still exits 0: in the
  # smoke test that is a failure.
  report, _, stdout, _ = quick_run
  swallowed = [(path, value) for path, value in _strings(report)
               if value.startswith('pending') or ' failed (' in value or
               'unavailable (' in value]
  assert not swallowed, swallowed
  assert 'Traceback' not in stdout, stdout[-4000:]


def test_run_leaves_no_process_behind(quick_run):
  _, _, stdout, left = quick_run
  assert not left, [p.cmdline()[:2] for p in left]
  assert 'benchmark: wrote' in stdout


def test_machine_versions_and_settings(quick_run):
  report = quick_run[0]
  machine = report['machine']
  for key in ('cpu_model', 'logical_cores', 'memory_gb'):
    assert machine[key]
  assert report['versions']['tensorflow'].startswith('2.14')
  assert report['versions']['tensorflow-federated'] == '0.87.0'
  assert report['settings']['quick'] is True
  assert report['command'].startswith('python -m experiments.benchmark')
  assert report['total_runtime_s'] > 0
  assert set(report['section_seconds']) == {
      'memory', 'ratio', 'flops', 'runtimes', 'media', 'scaling', 'workers',
      'local_step'}


def test_hgb_over_fedavg_fields(quick_run):
  ratio = quick_run[0]['results']['hgb_over_fedavg_round_time']
  for epochs in ('E=1', 'E=2'):
    entry = ratio[epochs]
    for key in ('ratio', 'hgb_over_fedavg_reduce', 'cpu_ratio',
                'hgb_round_s', 'fedavg_round_s', 'fedavg_reduce_round_s'):
      assert _is_summary(entry[key]), (epochs, key, entry[key])
    assert entry['ratio']['n'] == 2  # --quick: two repeats.
    assert _is_summary(entry['inprocess']['ratio']), entry['inprocess']
  assert 'Equal training work' in ratio['compared']


def test_flop_floor_fields(quick_run):
  flop = quick_run[0]['results']['round_time_over_flop_floor']
  per_example = flop['flops_per_example']
  assert 0 < per_example['forward'] < per_example['train_step']
  # The profiler's count agrees with the dense-layer count within a few %.
  assert per_example['analytic_dense_forward'] == pytest.approx(
      per_example['forward'], rel=0.1)
  assert _is_summary(flop['matmul_gflops'])
  for epochs in ('E=1', 'E=2'):
    for name in ('hgb', 'fedavg'):
      assert flop[epochs][name]['floor_s'] > 0
      assert _is_summary(flop[epochs][name]['ratio'])
    flops = flop[epochs]['round_flops']
    assert flops['hgb'] == flops['training'] + flops['snapshots']
  assert _is_summary(flop['profile']['worker_cpu_s'])
  assert 'arithmetic' in flop['where_the_rest_goes']


def test_scaling_memory_traces_fields(quick_run):
  results = quick_run[0]['results']
  scaling = results['scaling']
  assert set(scaling['round_s']) == {'2', '4'}
  assert _is_summary(scaling['per_client_ratio'])
  assert scaling['per_client_ratio']['numerator_clients'] == 4
  assert all(rounds >= 2 for rounds in scaling['completed_rounds'].values())
  assert all(mb > 0 for mb in scaling['peak_rss_mb'].values())
  memory = results['memory']
  assert memory['peak_rss_mb'] >= memory['rss_round_10_mb']['total'] > 0
  assert memory['rss_last_round_mb']['workers'] > 0  # The worker is counted.
  assert isinstance(memory['rss_growth_pct'], float)
  traces = memory['traces']
  # The client update's Python body runs when the process is built, not per
  # round.
  assert traces['after_build']['client_update_traces'] >= 1
  assert traces['constant_over_rounds'] is True


def test_runtimes_and_workers_fields(quick_run):
  results = quick_run[0]['results']
  runtimes = results['runtimes']
  assert _is_summary(runtimes['tff_over_plain_loop'])
  assert runtimes['plain_loop_client_update_traces'] == 1
  for key in ('inprocess_over_plain_loop', 'tff_over_inprocess_round_time'):
    assert _is_summary(runtimes[key]), (key, runtimes[key])
  transfer = runtimes['datasets_per_client']
  assert list(transfer['round_s']) == ['train_only', 'train_held_out',
                                       'train_val_probe']
  for key in ('seconds_per_extra_dataset_per_client',
              'held_out_saving_per_client'):
    assert _is_summary(transfer[key]), (key, transfer[key])
  assert all(v['min'] > 0 for v in transfer['round_s'].values())
  workers = results['multi_worker_round_time']
  assert set(workers['round_s']) == {'local', '1_workers', '2_workers'}
  assert all(_is_summary(v) for v in workers['round_s'].values())
  assert workers['workers_started'] == 3
  assert workers['workers_left_behind'] == 0
  assert workers['local_worker_alive'] is True


def test_media_fields(quick_run):
  media = quick_run[0]['results']['media']
  assert 'spectrogram [50, 32]' in media['workload']['data']
  assert 'image [16, 16, 3]' in media['workload']['data']
  per_example = media['flops_per_example']
  # Convolutions: far more arithmetic per example than the MLP, and no
  # dense-layer count to check it against.
  assert per_example['analytic_dense_forward'] is None
  assert 0 < per_example['forward'] < per_example['train_step']
  assert 0 < media['floor_s']['fedavg'] < media['floor_s']['hgb']
  for runtime in ('inprocess', 'tff'):
    for jit in ('no_jit', 'jit'):
      entry = media[runtime][jit]
      for key in ('hgb_round_s', 'fedavg_round_s', 'hgb_over_fedavg',
                  'hgb_over_flop_floor', 'fedavg_over_flop_floor'):
        assert _is_summary(entry[key]), (runtime, jit, key, entry[key])
      assert entry['hgb_over_flop_floor']['min'] > 1
    assert set(media[runtime]['jit_over_no_jit']) == {'hgb', 'fedavg'}
  assert _is_summary(media['tff_over_inprocess']['hgb'])
  runtimes = quick_run[0]['results']['runtimes']
  assert _is_summary(runtimes['inprocess_jit_over_inprocess'])


def test_local_step_fields(quick_run):
  local = quick_run[0]['results']['local_step_cost']
  names = ('fedavg_all_heads', 'mmpareto', 'ogm_ge', 'ogm')
  assert tuple(local['step_ms']) == names
  assert tuple(local['over_fedavg_all_heads']) == names[1:]
  for summary in (list(local['step_ms'].values()) +
                  list(local['over_fedavg_all_heads'].values())):
    assert _is_summary(summary) and summary['min'] > 0
  assert '| one local step, mmpareto / fedavg_all_heads |' in quick_run[1]


def test_targets_and_markdown(quick_run):
  report, markdown = quick_run[0], quick_run[1]
  figures = {t['figure'] for t in report['targets']}
  assert 'hgb_over_fedavg_round_time E=1' in figures
  assert 'rss_growth_pct (round 10 → last)' in figures
  assert 'inprocess_over_plain_loop' in figures
  assert 'inprocess HGB round (MLP), --jit / without' in figures
  assert 'media HGB round / FLOP floor, in-process, no_jit' in figures
  assert '| media inprocess jit: hgb_over_flop_floor |' in markdown
  for heading in ('## Machine and versions', '## Figures', '## Targets',
                  '## Where the time goes'):
    assert heading in markdown
  assert report['machine']['cpu_model'] in markdown
  assert '| hgb_over_fedavg_round_time E=1 |' in markdown


def test_bad_flags_fail_with_one_line():
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.benchmark', '--sections=nope'],
      cwd=REPO, env=_env(uuid.uuid4().hex), capture_output=True, text=True,
      timeout=120, check=False)
  assert completed.returncode == 1, completed.stderr[-2000:]
  assert completed.stderr.strip().splitlines()[-1] == (
      "error: --sections: unknown ['nope']; choose from ('memory', 'ratio', "
      "'flops', 'runtimes', 'media', 'scaling', 'workers', 'local_step').")
