"""The memory section: one long HGB run, its RSS and client-update traces.

RSS is this process + its TFF workers; growth is from round 10 to last.
"""

from __future__ import annotations

import collections
import dataclasses
import gc

from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

_METHOD = (
    'RSS = this process + its worker_binary children (psutil), after '
    'gc.collect() at rounds 10 and last; peak sampled every 50 ms in '
    'a thread during the whole run. Traces: client_work.'
    'build_hgb_client_update wrapped while the process is built so '
    'each execution of the client update\'s Python body (= one trace) '
    'is counted; model_fn_calls counts MultiModalModel constructions '
    '(process builds and traces). Rounds run in the TFF worker, which '
    'executes serialized graphs and never calls back into Python.')


def _long_run(runner, rounds: int, counts):
  """`rounds` rounds of `runner`, RSS (and trace counts) every 10 rounds.

  Returns:
    (round seconds, round → total RSS MB, {10 and last: (RSS, trace counts)},
    sampled peak RSS MB).
  """
  trajectory = collections.OrderedDict()
  at = {}
  times = []
  with instruments.RssSampler() as sampler:
    for round_num in range(1, rounds + 1):
      times.append(runner.round())
      if round_num in (10, rounds) or round_num % 10 == 0:
        gc.collect()
        rss = instruments.rss_mb()
        trajectory[round_num] = round(rss['total'], 1)
        if round_num in (10, rounds):
          at[round_num] = (rss, dataclasses.asdict(counts))
  return times, trajectory, at, sampler.peak_mb


def run(bench: harness_lib.Harness) -> None:
  """Writes results['memory']."""
  s = bench.settings
  fd = bench.workload.data(s.clients)
  ids = fd.client_ids[:s.clients]
  bench.log(f'memory: {s.rounds} HGB rounds of {len(ids)} clients')
  with instruments.count_client_update_traces() as counts:
    process = bench.workload.process('hgb', 1, cached=False)
    after_build = dataclasses.asdict(counts)
    runner = instruments.RoundRunner(process, bench.workload.hgb_data_fn(fd),
                                     ids)
    times, trajectory, at, peak_mb = _long_run(runner, s.rounds, counts)
  rss10, counts10 = at[10]
  rss_n, counts_n = at[s.rounds]
  peak_mb = max([peak_mb] + list(trajectory.values()))
  growth = 100.0 * (rss_n['total'] - rss10['total']) / rss10['total']
  bench.results['memory'] = collections.OrderedDict(
      rounds=s.rounds, clients_per_round=len(ids),
      peak_rss_mb=round(peak_mb, 1),
      rss_round_10_mb={k: round(v, 1) for k, v in rss10.items()},
      rss_last_round_mb={k: round(v, 1) for k, v in rss_n.items()},
      rss_growth_pct=round(growth, 2),
      rss_trajectory_mb=trajectory,
      round_seconds=instruments.summarize(times[10:]),
      traces=collections.OrderedDict(
          after_build=after_build, after_round_10=counts10,
          after_last_round=counts_n,
          constant_over_rounds=counts10 == counts_n == after_build),
      method=_METHOD,
  )
