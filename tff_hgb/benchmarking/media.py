"""The media section: conv encoders on a spectrogram and a frame (issue 17).

HGB and FedAvg rounds on both runtimes, with and without --jit, interleaved.
"""

from __future__ import annotations

import collections
import traceback

from tff_hgb import models
from tff_hgb.benchmarking import flop_count
from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments
from tff_hgb.benchmarking import workload as workload_lib

NAMES = ('hgb', 'fedavg')
RUNTIMES = ('inprocess', 'tff')
JIT = (False, True)

_COMPARED = (
    'Rounds of the registry\'s hgb and fedavg (FedAvg on T_k only: the '
    'training work HGB does, as the ratio section) on the media workload, '
    'with the in-process context and on the owned TFF worker, each with '
    '--jit off and on: all configurations interleaved (A B C ... A B C), '
    'one RoundRunner each. The floor is the round\'s FLOPs (profiler count '
    'of the conv model, as the flops section) at the best measured matmul '
    'rate. The TFF worker_binary has no XLA CPU JIT: it runs --jit\'s '
    'compiled functions uncompiled.')


def _key(runtime: str, jit: bool, name: str) -> str:
  return f'{runtime}/{"jit" if jit else "no_jit"}/{name}'


def _runners(bench: harness_lib.Harness, workload, epochs: int, fd, ids):
  """key → a measurement (seconds of one round) of every configuration."""
  context = bench.inprocess()
  measurements = collections.OrderedDict()
  for jit in JIT:
    for name in NAMES:
      process = workload.process(name, epochs, jit=jit)
      data_fn = (workload.hgb_data_fn(fd) if name == 'hgb' else
                 workload.fedavg_data_fn(fd, epochs))
      measurements[_key('tff', jit, name)] = instruments.RoundRunner(
          process, data_fn, ids).round
      if context is not None:
        measurements[_key('inprocess', jit, name)] = bench.in_context(
            context, instruments.RoundRunner(process, data_fn, ids).round)
  return measurements


def _figures(times, floors, runtime: str):
  """One runtime's figures: round s, over the floor, HGB/FedAvg, jit/no jit."""
  summarize, ratios = instruments.summarize, instruments.ratios
  entry = collections.OrderedDict()
  for jit in JIT:
    hgb, fedavg = (times[_key(runtime, jit, n)] for n in NAMES)
    entry['jit' if jit else 'no_jit'] = collections.OrderedDict(
        hgb_round_s=summarize(hgb),
        fedavg_round_s=summarize(fedavg),
        hgb_over_fedavg=summarize(ratios(hgb, fedavg)),
        hgb_over_flop_floor=summarize([t / floors['hgb'] for t in hgb],
                                      digits=2),
        fedavg_over_flop_floor=summarize(
            [t / floors['fedavg'] for t in fedavg], digits=2))
  entry['jit_over_no_jit'] = collections.OrderedDict(
      (name, summarize(ratios(times[_key(runtime, True, name)],
                              times[_key(runtime, False, name)])))
      for name in NAMES)
  return entry


def run(bench: harness_lib.Harness) -> None:
  """Writes results['media']."""
  s = bench.settings
  workload = workload_lib.MediaWorkload(s)
  fd = workload.data(s.clients)
  ids = fd.client_ids[:s.clients]
  epochs = s.local_epochs[0]
  bench.log(f'media: FLOPs, then HGB/FedAvg x in-process/TFF x jit, '
            f'{len(ids)} clients, E={epochs}')
  per_example = flop_count.model_flops_per_example(
      models.build_model_fn(fd.modalities, fd.num_classes))
  matmul = flop_count.measure_matmul_gflops(
      n=1024 if s.quick else 2048, repeats=s.repeats, warmup=s.warmup)
  round_flops = flop_count.hgb_round_flops(
      workload.client_sizes(fd, ids), epochs, per_example)
  rate = matmul['max'] * 1e9
  floors = collections.OrderedDict(
      (name, round_flops[name] / rate) for name in NAMES)
  section = collections.OrderedDict(
      workload=workload.describe(), local_epochs=epochs,
      clients_per_round=len(ids), flops_per_example=per_example,
      matmul_gflops=matmul, round_flops=round_flops, floor_s=floors)
  measurements = _runners(bench, workload, epochs, fd, ids)
  try:
    times = instruments.interleave(measurements, repeats=s.repeats,
                                   warmup=s.warmup)
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    section['failed'] = f'pending: the media section failed ({e!r:.300})'
    bench.results['media'] = section
    return
  for runtime in RUNTIMES:
    if _key(runtime, False, 'hgb') in times:
      section[runtime] = _figures(times, floors, runtime)
    else:
      section[runtime] = bench.inprocess_status
  if isinstance(section['inprocess'], dict):
    section['tff_over_inprocess'] = collections.OrderedDict(
        (name, instruments.summarize(instruments.ratios(
            times[_key('tff', False, name)],
            times[_key('inprocess', False, name)]))) for name in NAMES)
  section['compared'] = _COMPARED
  bench.results['media'] = section
