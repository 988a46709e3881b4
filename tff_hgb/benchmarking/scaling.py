"""The scaling section: seconds per HGB round and per client, N clients.

Also the peak RSS (this process + workers) during each round.
"""

from __future__ import annotations

import collections
import gc

from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

_METHOD = (
    'registry \'hgb\', E=1, the first N clients of one '
    'FederatedData of equal-size clients; N interleaved per '
    'repeat after one warm-up round each; per-client time = '
    'round time / N; peak_rss_mb: this process + its workers, '
    'sampled every 50 ms during each round of N clients (client '
    'datasets built before the round are alive then).')


def _rss_sampled(runner, peaks, n):
  """`runner.round`, keeping the peak RSS during each round in `peaks[n]`."""
  def measure():
    with instruments.RssSampler() as sampler:
      seconds = runner.round()
    peaks[n] = max(peaks[n], sampler.peak_mb)
    return seconds
  return measure


def run(bench: harness_lib.Harness) -> None:
  """Writes results['scaling']."""
  s = bench.settings
  summarize = instruments.summarize
  counts = sorted(set(s.scaling_clients))
  gc.collect()
  rss_before_data = instruments.rss_mb()['total']
  fd = bench.workload.data(max(counts))
  gc.collect()
  rss_with_data = instruments.rss_mb()['total']
  bench.log(f'scaling: HGB rounds of {counts} clients')
  process = bench.workload.process('hgb', 1)
  data_fn = bench.workload.hgb_data_fn(fd)
  runners = collections.OrderedDict(
      (n, instruments.RoundRunner(process, data_fn, fd.client_ids[:n]))
      for n in counts)
  peaks = {n: 0.0 for n in counts}
  times = instruments.interleave(
      {str(n): _rss_sampled(r, peaks, n) for n, r in runners.items()},
      repeats=s.scaling_repeats, warmup=1)
  low, high = counts[0], counts[-1]
  per_client = {n: [t / n for t in times[str(n)]] for n in counts}
  bench.results['scaling'] = collections.OrderedDict(
      local_epochs=1,
      round_s=collections.OrderedDict(
          (str(n), summarize(times[str(n)])) for n in counts),
      per_client_s=collections.OrderedDict(
          (str(n), summarize(per_client[n], digits=5)) for n in counts),
      per_client_ratio=collections.OrderedDict(
          numerator_clients=high, denominator_clients=low,
          **summarize(instruments.ratios(per_client[high], per_client[low]))),
      client_data_build_s=collections.OrderedDict(
          (str(n), summarize(r.data_seconds)) for n, r in runners.items()),
      completed_rounds=collections.OrderedDict(
          (str(n), r.round_num) for n, r in runners.items()),
      peak_rss_mb=collections.OrderedDict(
          (str(n), round(peaks[n], 1)) for n in counts),
      rss_before_section_mb=round(rss_before_data, 1),
      rss_with_data_mb=round(rss_with_data, 1),
      method=_METHOD)
