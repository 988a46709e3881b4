"""The flops section: round time over its arithmetic at the matmul rate.

And where the rest goes: CPU split of a round, perf of the worker.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import psutil

from tff_hgb import models
from tff_hgb.benchmarking import flop_count
from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

_PROFILE_NOTE = (
    'CPU seconds during process.next: the worker_binary (all its '
    'threads), this Python process (all threads: the main thread '
    'waits while TFF\'s event-loop thread serializes client '
    'datasets and talks gRPC), and its main thread alone.')


def _profile(bench: harness_lib.Harness, fd, ids) -> dict[str, Any]:
  """CPU split of one HGB round (E = first value), and perf of the worker."""
  s = bench.settings
  epochs = s.local_epochs[0]
  runner = instruments.RoundRunner(bench.workload.process('hgb', epochs),
                                   bench.workload.hgb_data_fn(fd), ids)
  for _ in range(max(s.warmup, 1)):
    runner.round()
  me = psutil.Process()
  worker = psutil.Process(bench.local_worker.pid)
  splits = []
  for _ in range(s.repeats):
    cpu_self = instruments.cpu_seconds(me)
    cpu_worker = instruments.cpu_seconds(worker)
    main_thread = time.thread_time()
    wall = runner.round()
    splits.append((wall, instruments.cpu_seconds(me) - cpu_self,
                   time.thread_time() - main_thread,
                   instruments.cpu_seconds(worker) - cpu_worker))
  walls, python_cpu, main_cpu, worker_cpu = zip(*splits)
  profile = collections.OrderedDict(
      local_epochs=epochs,
      round_wall_s=instruments.summarize(walls),
      worker_cpu_s=instruments.summarize(worker_cpu),
      python_process_cpu_s=instruments.summarize(python_cpu),
      python_main_thread_cpu_s=instruments.summarize(main_cpu),
      note=_PROFILE_NOTE)
  if s.perf and instruments.perf_available():
    def rounds():
      for _ in range(2):
        runner.round()
    profile['worker_perf'] = instruments.perf_profile(bench.local_worker.pid,
                                                      rounds)
  else:
    profile['worker_perf'] = 'skipped (--noperf, --quick or no perf)'
  return profile


def _explain(section, clients: int) -> str:
  """One paragraph: the floor, the round's wall time and where it goes."""
  profile = section['profile']
  epochs = profile['local_epochs']
  entry = section[f'E={epochs}']
  wall = profile['round_wall_s']['median']
  parts = [
      f'At E={epochs} one HGB round of {clients} clients needs '
      f'{entry["hgb"]["floor_s"] * 1e3:.2f} ms of arithmetic at the '
      f'measured {section["matmul_gflops"]["max"]:.0f} GFLOP/s but takes '
      f'{wall:.3f} s: the TFF worker spends '
      f'{profile["worker_cpu_s"]["median"]:.3f} CPU-s and this Python '
      f'process {profile["python_process_cpu_s"]["median"]:.3f} CPU-s '
      f'({profile["python_main_thread_cpu_s"]["median"]:.3f} on the main '
      'thread)']
  perf = profile.get('worker_perf')
  if isinstance(perf, dict) and 'groups' in perf:
    groups = ', '.join(f'{label} {share:.0f}%'
                       for label, share in perf['groups'].items() if share)
    parts.append(f'; of the worker\'s perf samples (inclusive): {groups}')
  parts.append('. The model is so small (a few hundred kFLOP per example) '
               'that per-call fixed costs, not arithmetic, set the round '
               'time.')
  return ''.join(parts)


def run(bench: harness_lib.Harness) -> None:
  """Writes results['round_time_over_flop_floor'] (after the ratio section's
  round times, when it ran)."""
  s = bench.settings
  fd = bench.workload.data(s.clients)
  ids = fd.client_ids[:s.clients]
  bench.log('flops: FLOPs per example, matmul rate, profile')
  model_fn = models.build_model_fn(fd.modalities, fd.num_classes)
  per_example = flop_count.model_flops_per_example(model_fn)
  matmul = flop_count.measure_matmul_gflops(
      n=1024 if s.quick else 2048, repeats=s.repeats, warmup=s.warmup)
  # The best repeat: the machine's rate, least disturbed by other programs.
  rate = matmul['max'] * 1e9
  sizes = bench.workload.client_sizes(fd, ids)
  section = collections.OrderedDict(
      flops_per_example=per_example, matmul_gflops=matmul)
  for epochs in s.local_epochs:
    round_flops = flop_count.hgb_round_flops(sizes, epochs, per_example)
    entry = collections.OrderedDict(round_flops=round_flops)
    for name, key in (('hgb', 'hgb'), ('fedavg', 'fedavg')):
      floor = round_flops[key] / rate
      times = bench.round_times.get((name, epochs))
      entry[name] = collections.OrderedDict(
          floor_s=floor,
          ratio=(instruments.summarize([t / floor for t in times], digits=1)
                 if times else 'run the ratio section'))
    section[f'E={epochs}'] = entry
  section['profile'] = _profile(bench, fd, ids)
  section['where_the_rest_goes'] = _explain(section, s.clients)
  bench.results['round_time_over_flop_floor'] = section
