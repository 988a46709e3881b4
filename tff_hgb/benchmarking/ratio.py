"""The ratio section: an HGB round over a FedAvg round, equal training work.

FedAvg of the registry and with TFF's default loop; also in-process.
"""

from __future__ import annotations

import collections

from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

_COMPARED = (
    'process.next of the registry\'s \'hgb\' vs the registry\'s \'fedavg\' '
    '(tff.learning.algorithms.build_weighted_fed_avg with the '
    'DATASET_ITERATOR loop of every registry baseline), same model, '
    'clients, batch size, seeds and E. '
    'Equal training work: FedAvg gets each client\'s T_k only '
    '(FederatedData.train_dataset(include_val=False), E shuffled passes) '
    'instead of the registry\'s T_k + V_k, so both train E epochs over '
    'T_k; HGB additionally runs its three inference snapshots over '
    'T\'_k and V_k and the OGR arithmetic. fedavg_reduce: the same '
    'FedAvg built with TFF\'s default loop (DATASET_REDUCE). Client '
    'datasets are built before the clock starts (client_data_build_s). '
    'cpu_ratio: the same ratio of CPU seconds (this process + its TFF '
    'workers) used during process.next. inprocess: hgb and fedavg side '
    'by side under tff_hgb.runtime.set_inprocess_context(devices=\'cpu\') '
    '(no worker, no dataset serialization).')


def _runners(bench: harness_lib.Harness, names, epochs: int, fd, ids):
  """name → RoundRunner of that process, HGB's or FedAvg's client data."""
  workload = bench.workload
  return collections.OrderedDict(
      (name, instruments.RoundRunner(
          workload.process(name, epochs),
          workload.hgb_data_fn(fd) if name == 'hgb' else
          workload.fedavg_data_fn(fd, epochs), ids))
      for name in names)


def _entry(times, runners, repeats: int, inprocess_entry):
  """The figures of one E: ratios, CPU ratios, round and data-build seconds."""
  summarize, ratios = instruments.summarize, instruments.ratios

  def cpu(name):
    return runners[name].cpu_seconds[-repeats:]

  return collections.OrderedDict(
      ratio=summarize(ratios(times['hgb'], times['fedavg'])),
      hgb_over_fedavg_reduce=summarize(
          ratios(times['hgb'], times['fedavg_reduce'])),
      cpu_ratio=summarize(ratios(cpu('hgb'), cpu('fedavg'))),
      cpu_ratio_over_fedavg_reduce=summarize(
          ratios(cpu('hgb'), cpu('fedavg_reduce'))),
      hgb_round_s=summarize(times['hgb']),
      fedavg_round_s=summarize(times['fedavg']),
      fedavg_reduce_round_s=summarize(times['fedavg_reduce']),
      cpu_s=collections.OrderedDict(
          (name, summarize(cpu(name))) for name in runners),
      client_data_build_s=collections.OrderedDict(
          (name, summarize(r.data_seconds)) for name, r in runners.items()),
      inprocess=inprocess_entry,
  )


def _inprocess(bench: harness_lib.Harness, epochs: int, fd, ids):
  """HGB / FedAvg (registry) side by side under the in-process context."""
  context = bench.inprocess()
  if context is None:
    return bench.inprocess_status
  bench.log(f'ratio: HGB vs FedAvg in-process, E={epochs}')
  s = bench.settings
  runners = _runners(bench, ('hgb', 'fedavg'), epochs, fd, ids)
  times = instruments.interleave(
      {name: bench.in_context(context, runner.round)
       for name, runner in runners.items()},
      repeats=s.repeats, warmup=s.warmup)
  return collections.OrderedDict(
      ratio=instruments.summarize(instruments.ratios(times['hgb'],
                                                     times['fedavg'])),
      hgb_round_s=instruments.summarize(times['hgb']),
      fedavg_round_s=instruments.summarize(times['fedavg']))


def run(bench: harness_lib.Harness) -> None:
  """Writes results['hgb_over_fedavg_round_time'] and `bench.round_times`."""
  s = bench.settings
  fd = bench.workload.data(s.clients)
  ids = fd.client_ids[:s.clients]
  section = collections.OrderedDict()
  for epochs in s.local_epochs:
    bench.log(f'ratio: HGB vs FedAvg, E={epochs}, {len(ids)} clients')
    runners = _runners(bench, ('hgb', 'fedavg', 'fedavg_reduce'), epochs, fd,
                       ids)
    times = instruments.interleave(
        {name: runner.round for name, runner in runners.items()},
        repeats=s.repeats, warmup=s.warmup)
    for name, values in times.items():
      bench.round_times[(name, epochs)] = values
    inprocess_entry = _inprocess(bench, epochs, fd, ids)
    section[f'E={epochs}'] = _entry(times, runners, s.repeats,
                                    inprocess_entry)
  section['clients_per_round'] = len(ids)
  section['compared'] = _COMPARED
  bench.results['hgb_over_fedavg_round_time'] = section
