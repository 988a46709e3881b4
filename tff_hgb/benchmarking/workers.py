"""The workers section: HGB rounds on the owned and on N local workers.

Then every worker it started is stopped, and those left counted.
"""

from __future__ import annotations

import collections
import time

import tensorflow_federated as tff

from tff_hgb import runtime
from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

_METHOD = (
    'registry \'hgb\', E=1; local = the owned single worker '
    '(set_local_context); N_workers = tff_hgb.runtime.'
    'set_multi_worker_context(local_workers=N) (TFF mergeable context: '
    'the round\'s clients split over N workers, partial results merged '
    'here). All contexts are created first and the default context is '
    'switched per round, so configurations interleave; afterwards every '
    'worker they started is stopped and the worker_binary children of '
    'this process are counted (workers_left_behind).')


def _add_multi_worker_contexts(worker_counts, contexts, started) -> None:
  """One mergeable context per count into `contexts`; their workers into
  `started` (as they start, so a failure still leaves them to stop)."""
  stack = tff.framework.get_context_stack()
  for count in worker_counts:
    known = set(id(w) for w in runtime.started_workers())
    runtime.set_multi_worker_context(local_workers=count)
    contexts[f'{count}_workers'] = stack.current
    started.extend(w for w in runtime.started_workers()
                   if id(w) not in known)


def _workers_left(before) -> list:
  """worker_binary children not in `before`, after up to 10 s to exit."""
  deadline = time.monotonic() + 10
  left = [w for w in instruments.worker_processes() if w.pid not in before]
  while left and time.monotonic() < deadline:
    time.sleep(0.2)
    left = [w for w in instruments.worker_processes() if w.pid not in before]
  return left


def run(bench: harness_lib.Harness) -> None:
  """Writes results['multi_worker_round_time']."""
  s = bench.settings
  fd = bench.workload.data(s.workers_clients)
  ids = fd.client_ids[:s.workers_clients]
  process = bench.workload.process('hgb', 1)
  data_fn = bench.workload.hgb_data_fn(fd)
  stack = tff.framework.get_context_stack()
  before = {w.pid for w in instruments.worker_processes()}
  contexts = collections.OrderedDict(local=bench.local_context)
  started = []
  section = collections.OrderedDict(clients_per_round=len(ids),
                                    local_epochs=1)
  try:
    _add_multi_worker_contexts(s.worker_counts, contexts, started)
    stack.set_default_context(bench.local_context)
    bench.log(f'workers: {list(contexts)} at {len(ids)} clients')

    times = instruments.interleave(
        collections.OrderedDict(
            (name, bench.in_context(
                context,
                instruments.RoundRunner(process, data_fn, ids).round))
            for name, context in contexts.items()),
        repeats=s.workers_repeats, warmup=1)
  finally:
    stack.set_default_context(bench.local_context)
    for worker in started:
      worker.stop()
  left = _workers_left(before)
  section['round_s'] = collections.OrderedDict(
      (name, instruments.summarize(values)) for name, values in times.items())
  section['over_local'] = collections.OrderedDict(
      (name, instruments.summarize(instruments.ratios(values, times['local'])))
      for name, values in times.items() if name != 'local')
  section['workers_started'] = len(started)
  section['workers_left_behind'] = len(left)
  section['local_worker_alive'] = bench.local_worker.alive()
  section['method'] = _METHOD
  bench.results['multi_worker_round_time'] = section
