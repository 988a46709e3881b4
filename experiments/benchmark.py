r"""Runtime benchmarks of HGB on TFF (issue 7): `make bench`.

  python -m experiments.benchmark --output_dir=results/bench
  python -m experiments.benchmark --quick --output_dir=/tmp/bench   # smoke run

Writes <output_dir>/benchmark.json (every figure: median, min, max and the
values of its repeats) and <output_dir>/BENCHMARKS.md (a table with the machine
and versions). What each figure compares is described in docs/BENCHMARKS.md.
Every comparison is measured side by side in one run (A B A B ...) after
warm-up, and reported as the median of per-repeat ratios, so a shared, noisy
machine moves both sides of a ratio together; absolute seconds from a loaded
machine are still only indicative.

Sections (--sections, in this order):
  memory    one long HGB run: peak RSS, RSS growth from round 10 to the last
            round (this process + its TFF workers), client-update traces
  ratio     one HGB round / one FedAvg round (TFF build_weighted_fed_avg, the
            registry's 'fedavg' with the iterator loop; also TFF's default
            reduce loop), equal training work, E = --local_epochs
  flops     round time / the time its arithmetic needs at the measured matmul
            rate, and where the rest goes (CPU split, perf of the worker)
  runtimes  TFF runtime and in-process context vs a plain single-process loop
  scaling   seconds per round at --scaling_clients clients per round
  workers   seconds per round with --worker_counts local workers (mergeable
            context), every context's workers stopped afterwards

The TFF worker is started with `runtime.set_local_context()` and every worker
the program starts is stopped on every exit path.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import gc
import json
import math
import os
import shlex
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

from absl import app
from absl import flags

SECTIONS = ('memory', 'ratio', 'flops', 'runtimes', 'scaling', 'workers')

_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'results/bench',
                                  'Where benchmark.json and BENCHMARKS.md go.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 9, 'Timed repeats of every side-by-side comparison.')
_WARMUP = flags.DEFINE_integer(
    'warmup', 2, 'Untimed rounds of every configuration before its repeats.')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 100, 'Rounds of the long run (memory section); RSS growth is '
    'from round 10 to this round.')
_CLIENTS = flags.DEFINE_integer(
    'clients', 10, 'Clients per round of the ratio, flops and runtimes '
    'sections, and of the long run.')
_EXAMPLES_PER_CLIENT = flags.DEFINE_integer(
    'examples_per_client', 100,
    'Examples per client (10% local validation, at least 4).')
_LOCAL_EPOCHS = flags.DEFINE_list('local_epochs', ['1', '2'],
                                  'Values of E for the HGB/FedAvg ratio.')
_SCALING_CLIENTS = flags.DEFINE_list(
    'scaling_clients', ['10', '100', '1000'], 'Clients per round to scale over.')
_SCALING_REPEATS = flags.DEFINE_integer(
    'scaling_repeats', 3, 'Timed repeats of the scaling section.')
_WORKER_COUNTS = flags.DEFINE_list(
    'worker_counts', ['1', '2', '4'],
    'Local TFF workers of the multi-worker comparison.')
_WORKERS_CLIENTS = flags.DEFINE_integer(
    'workers_clients', 100, 'Clients per round of the multi-worker section.')
_WORKERS_REPEATS = flags.DEFINE_integer(
    'workers_repeats', 3, 'Timed repeats of the multi-worker section.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Local batch size.')
_WIDE_DIM = flags.DEFINE_integer(
    'wide_dim', 512, "Features of the synthetic 'wide' modality.")
_PERF = flags.DEFINE_bool(
    'perf', True, "Profile the worker with Linux 'perf' when it is installed.")
_SECTIONS = flags.DEFINE_list('sections', list(SECTIONS),
                              f'Sections to run, of {", ".join(SECTIONS)}.')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Tiny settings for a smoke test (overrides the sizes; '
    'numbers meaningless).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of data, partition, model.')
_PLAIN_LOOP_SERVER = flags.DEFINE_integer(
    'plain_loop_server', 0, 'Internal: run as the plain-loop child process '
    'with this E (see PlainLoopChild).')

QUICK = dict(repeats=2, warmup=1, rounds=12, clients=3, examples_per_client=24,
             local_epochs=(1, 2), scaling_clients=(2, 4), scaling_repeats=1,
             worker_counts=(1, 2), workers_clients=4, workers_repeats=1,
             wide_dim=32, perf=False)


@dataclasses.dataclass(frozen=True)
class Settings:
  output_dir: str
  repeats: int
  warmup: int
  rounds: int
  clients: int
  examples_per_client: int
  local_epochs: tuple[int, ...]
  scaling_clients: tuple[int, ...]
  scaling_repeats: int
  worker_counts: tuple[int, ...]
  workers_clients: int
  workers_repeats: int
  batch_size: int
  wide_dim: int
  perf: bool
  sections: tuple[str, ...]
  quick: bool
  seed: int


def _ints(values) -> tuple[int, ...]:
  return tuple(int(v) for v in values)


def settings_from_flags() -> Settings:
  sections = tuple(s.strip() for s in _SECTIONS.value if s.strip())
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    raise ValueError(f'--sections: unknown {unknown}; choose from {SECTIONS}.')
  values = dict(
      output_dir=_OUTPUT_DIR.value, repeats=_REPEATS.value,
      warmup=_WARMUP.value, rounds=_ROUNDS.value, clients=_CLIENTS.value,
      examples_per_client=_EXAMPLES_PER_CLIENT.value,
      local_epochs=_ints(_LOCAL_EPOCHS.value),
      scaling_clients=_ints(_SCALING_CLIENTS.value),
      scaling_repeats=_SCALING_REPEATS.value,
      worker_counts=_ints(_WORKER_COUNTS.value),
      workers_clients=_WORKERS_CLIENTS.value,
      workers_repeats=_WORKERS_REPEATS.value, batch_size=_BATCH_SIZE.value,
      wide_dim=_WIDE_DIM.value, perf=_PERF.value, sections=sections,
      quick=_QUICK.value, seed=_SEED.value)
  if _QUICK.value:
    values.update(QUICK)
  settings = Settings(**values)
  if settings.repeats < 1 or settings.warmup < 0 or settings.scaling_repeats < 1:
    raise ValueError('--repeats and --scaling_repeats must be >= 1, '
                     '--warmup >= 0.')
  if settings.rounds < 10 and 'memory' in sections:
    raise ValueError('--rounds must be >= 10 (RSS growth is measured from '
                     'round 10).')
  if settings.examples_per_client < 8:
    raise ValueError('--examples_per_client must be >= 8.')
  return settings


# ---------------------------------------------------------------------------
# The workload.


class Workload:
  """Synthetic clients of equal size, the registry's processes, cached."""

  def __init__(self, settings: Settings):
    # Imported here: TensorFlow is slow to import and flags parse first.
    from tff_hgb import algorithms  # pylint: disable=g-import-not-at-top
    from tff_hgb.data import synthetic  # pylint: disable=g-import-not-at-top

    self.settings = settings
    preset = synthetic.PRESETS['paper_regime']
    wide, clean = preset['modalities']
    self.modalities = (dataclasses.replace(
        wide, dim=settings.wide_dim,
        informative_dims=min(wide.informative_dims, settings.wide_dim)), clean)
    self.num_classes = preset['num_classes']
    self._data = {}
    self._processes = {}
    self._algorithms = algorithms

  def describe(self) -> dict[str, Any]:
    from tff_hgb import models  # pylint: disable=g-import-not-at-top

    s = self.settings
    num_val = max(math.ceil(0.1 * s.examples_per_client), 4)
    return collections.OrderedDict(
        data=('synthetic, the paper_regime preset\'s modalities: ' + ', '.join(
            f'{m.name} ({m.dim} features)' for m in self.modalities) +
              f'; {self.num_classes} classes'),
        partition=('iid, equal client sizes: '
                   f'{s.examples_per_client} examples per client = '
                   f'{s.examples_per_client - num_val} local training (T_k) + '
                   f'{num_val} local validation (V_k); probe T\'_k = first '
                   f'{num_val} of T_k'),
        model=f'tff_hgb.models default encoders, {models.ModelConfig()}',
        batch_size=s.batch_size,
        client_optimizer='SGD, learning rate 0.05',
        server_optimizer='SGD, learning rate 1.0',
        hgb_mode='hgb (registry default hyper-parameters)',
    )

  def data(self, num_clients: int):
    """FederatedData of `num_clients` clients of equal size."""
    if num_clients not in self._data:
      from tff_hgb.data import client_data  # pylint: disable=g-import-not-at-top
      from tff_hgb.data import partition  # pylint: disable=g-import-not-at-top
      from tff_hgb.data import synthetic  # pylint: disable=g-import-not-at-top

      s = self.settings
      pool = synthetic.make_synthetic(
          num_examples=num_clients * s.examples_per_client,
          num_classes=self.num_classes, modalities=self.modalities,
          seed=s.seed, name='synthetic-bench')
      split = partition.make_partition(
          pool, 'iid', num_clients=num_clients, alpha=None, val_fraction=0.1,
          min_val_examples=4, seed=s.seed)
      self._data[num_clients] = client_data.FederatedData(pool, split)
    return self._data[num_clients]

  def config(self, local_epochs: int):
    return self._algorithms.AlgorithmConfig(
        local_epochs=local_epochs, batch_size=self.settings.batch_size,
        seed=self.settings.seed)

  def process(self, name: str, local_epochs: int, *, cached: bool = True):
    """The registry's process `name` ('hgb', 'fedavg') or 'fedavg_reduce'.

    'fedavg_reduce' is TFF's `build_weighted_fed_avg` with its default loop
    (DATASET_REDUCE), as a user builds it; the registry's baselines use the
    iterator loop (`algorithms.BASELINE_LOOP`).
    """
    key = (name, local_epochs)
    if cached and key in self._processes:
      return self._processes[key]
    fd = self.data(self.settings.clients)
    config = self.config(local_epochs)
    if name == 'fedavg_reduce':
      import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
      from tff_hgb import models  # pylint: disable=g-import-not-at-top

      process = tff.learning.algorithms.build_weighted_fed_avg(
          models.build_model_fn(fd.modalities, fd.num_classes,
                                config=config.model),
          client_optimizer_fn=tff.learning.optimizers.build_sgdm(
              learning_rate=config.client_learning_rate),
          server_optimizer_fn=tff.learning.optimizers.build_sgdm(
              learning_rate=config.server_learning_rate))
    else:
      process = self._algorithms.build_algorithm(name, fd, config).process
    if cached:
      self._processes[key] = process
    return process

  def shuffle_seed(self, client_index: int, round_num: int) -> int:
    return (self.settings.seed * 1_000_003 + round_num * 7919 +
            client_index) % (2**31)

  def hgb_data_fn(self, fd) -> Callable[[str, int], Any]:
    """As the registry's HGB client_data: OrderedDict(train, val, probe)."""
    index = {cid: i for i, cid in enumerate(fd.client_ids)}

    def data(cid, round_num):
      return fd.client_datasets(
          cid, batch_size=self.settings.batch_size,
          shuffle_seed=self.shuffle_seed(index[cid], round_num))

    return data

  def fedavg_data_fn(self, fd, local_epochs: int) -> Callable[[str, int], Any]:
    """T_k only (no V_k), E passes: the training work HGB does."""
    index = {cid: i for i, cid in enumerate(fd.client_ids)}

    def data(cid, round_num):
      return fd.train_dataset(
          cid, batch_size=self.settings.batch_size,
          shuffle_seed=self.shuffle_seed(index[cid], round_num),
          local_epochs=local_epochs, include_val=False)

    return data

  def client_sizes(self, fd, client_ids) -> list[tuple[int, int, int]]:
    """(training, probe, validation) examples of each client."""
    return [(fd.num_train_examples(c), min(fd.num_val_examples(c),
                                           fd.num_train_examples(c)),
             fd.num_val_examples(c)) for c in client_ids]


class RssSampler:
  """Samples the RSS of this process + its workers in a thread; keeps the peak."""

  def __init__(self, interval: float = 0.05):
    from tff_hgb import benchmarking  # pylint: disable=g-import-not-at-top

    self._rss = benchmarking.rss_mb
    self._interval = interval
    self._stop = threading.Event()
    self.peak_mb = 0.0
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      try:
        self.peak_mb = max(self.peak_mb, self._rss()['total'])
      except Exception:  # pylint: disable=broad-except
        pass
      self._stop.wait(self._interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_mb = max(self.peak_mb, self._rss()['total'])


# ---------------------------------------------------------------------------
# The benchmark.


class Benchmark:
  """Runs the sections and keeps every figure in `self.results`."""

  def __init__(self, settings: Settings, local_worker):
    import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

    from tff_hgb import benchmarking  # pylint: disable=g-import-not-at-top

    self.s = settings
    self.bm = benchmarking
    self.tff = tff
    self.workload = Workload(settings)
    self.local_worker = local_worker
    self.local_context = tff.framework.get_context_stack().current
    self.results = collections.OrderedDict()
    self.round_times = {}  # (name, E) → list of seconds (ratio section)
    self._inprocess_context = None
    self.inprocess_status = None

  def _log(self, message: str) -> None:
    print(f'[benchmark {time.strftime("%H:%M:%S")}] {message}', flush=True)

  def _runner(self, process, data_fn, client_ids):
    return self.bm.RoundRunner(process, data_fn, client_ids)

  def _in_context(self, context, measure):
    """`measure` run with `context` as TFF's default, then the owned worker's."""
    stack = self.tff.framework.get_context_stack()

    def measured():
      stack.set_default_context(context)
      try:
        return measure()
      finally:
        stack.set_default_context(self.local_context)
    return measured

  def _inprocess(self):
    """The in-process context on the CPU (one per program, made on first use).

    Returns None, with the reason in `self.inprocess_status`, if it fails.
    """
    if self._inprocess_context is None and self.inprocess_status is None:
      try:
        from tff_hgb.runtime import inprocess  # pylint: disable=g-import-not-at-top
        self._inprocess_context = inprocess.set_inprocess_context(devices='cpu')
      except Exception as e:  # pylint: disable=broad-except
        self.inprocess_status = ('pending: tff_hgb.runtime.inprocess '
                                 f'unavailable ({type(e).__name__}: {e})')
      finally:
        self.tff.framework.get_context_stack().set_default_context(
            self.local_context)
    return self._inprocess_context

  def close(self) -> None:
    if self._inprocess_context is not None:
      self._inprocess_context.close()

  # ---- memory ----

  def memory(self) -> None:
    s = self.s
    fd = self.workload.data(s.clients)
    ids = fd.client_ids[:s.clients]
    self._log(f'memory: {s.rounds} HGB rounds of {len(ids)} clients')
    with self.bm.count_client_update_traces() as counts:
      process = self.workload.process('hgb', 1, cached=False)
      after_build = dataclasses.asdict(counts)
      runner = self._runner(process, self.workload.hgb_data_fn(fd), ids)
      trajectory = collections.OrderedDict()
      at = {}
      times = []
      with RssSampler() as sampler:
        for round_num in range(1, s.rounds + 1):
          times.append(runner.round())
          if round_num in (10, s.rounds) or round_num % 10 == 0:
            gc.collect()
            rss = self.bm.rss_mb()
            trajectory[round_num] = round(rss['total'], 1)
            if round_num in (10, s.rounds):
              at[round_num] = (rss, dataclasses.asdict(counts))
    rss10, counts10 = at[10]
    rss_n, counts_n = at[s.rounds]
    sampler.peak_mb = max([sampler.peak_mb] + list(trajectory.values()))
    growth = 100.0 * (rss_n['total'] - rss10['total']) / rss10['total']
    self.results['memory'] = collections.OrderedDict(
        rounds=s.rounds, clients_per_round=len(ids),
        peak_rss_mb=round(sampler.peak_mb, 1),
        rss_round_10_mb={k: round(v, 1) for k, v in rss10.items()},
        rss_last_round_mb={k: round(v, 1) for k, v in rss_n.items()},
        rss_growth_pct=round(growth, 2),
        rss_trajectory_mb=trajectory,
        round_seconds=self.bm.summarize(times[10:]),
        traces=collections.OrderedDict(
            after_build=after_build, after_round_10=counts10,
            after_last_round=counts_n,
            constant_over_rounds=counts10 == counts_n == after_build),
        method=(
            'RSS = this process + its worker_binary children (psutil), after '
            'gc.collect() at rounds 10 and last; peak sampled every 50 ms in '
            'a thread during the whole run. Traces: client_work.'
            'build_hgb_client_update wrapped while the process is built so '
            'each execution of the client update\'s Python body (= one trace) '
            'is counted; model_fn_calls counts MultiModalModel constructions '
            '(process builds and traces). Rounds run in the TFF worker, which '
            'executes serialized graphs and never calls back into Python.'),
    )

  # ---- ratio ----

  def ratio(self) -> None:
    s = self.s
    fd = self.workload.data(s.clients)
    ids = fd.client_ids[:s.clients]
    section = collections.OrderedDict()
    for epochs in s.local_epochs:
      self._log(f'ratio: HGB vs FedAvg, E={epochs}, {len(ids)} clients')
      runners = collections.OrderedDict(
          hgb=self._runner(self.workload.process('hgb', epochs),
                           self.workload.hgb_data_fn(fd), ids),
          fedavg=self._runner(self.workload.process('fedavg', epochs),
                              self.workload.fedavg_data_fn(fd, epochs), ids),
          fedavg_reduce=self._runner(
              self.workload.process('fedavg_reduce', epochs),
              self.workload.fedavg_data_fn(fd, epochs), ids),
      )
      times = self.bm.interleave(
          {name: runner.round for name, runner in runners.items()},
          repeats=s.repeats, warmup=s.warmup)
      for name, values in times.items():
        self.round_times[(name, epochs)] = values
      inprocess_entry = self._ratio_inprocess(epochs, fd, ids)
      section[f'E={epochs}'] = collections.OrderedDict(
          ratio=self.bm.summarize(self.bm.ratios(times['hgb'],
                                                 times['fedavg'])),
          hgb_over_fedavg_reduce=self.bm.summarize(
              self.bm.ratios(times['hgb'], times['fedavg_reduce'])),
          cpu_ratio=self.bm.summarize(self.bm.ratios(
              runners['hgb'].cpu_seconds[-s.repeats:],
              runners['fedavg'].cpu_seconds[-s.repeats:])),
          cpu_ratio_over_fedavg_reduce=self.bm.summarize(self.bm.ratios(
              runners['hgb'].cpu_seconds[-s.repeats:],
              runners['fedavg_reduce'].cpu_seconds[-s.repeats:])),
          hgb_round_s=self.bm.summarize(times['hgb']),
          fedavg_round_s=self.bm.summarize(times['fedavg']),
          fedavg_reduce_round_s=self.bm.summarize(times['fedavg_reduce']),
          cpu_s=collections.OrderedDict(
              (name, self.bm.summarize(r.cpu_seconds[-s.repeats:]))
              for name, r in runners.items()),
          client_data_build_s=collections.OrderedDict(
              (name, self.bm.summarize(r.data_seconds))
              for name, r in runners.items()),
          inprocess=inprocess_entry,
      )
    section['clients_per_round'] = len(ids)
    section['compared'] = (
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
    self.results['hgb_over_fedavg_round_time'] = section

  def _ratio_inprocess(self, epochs: int, fd, ids):
    """HGB / FedAvg (registry) side by side under the in-process context."""
    context = self._inprocess()
    if context is None:
      return self.inprocess_status
    self._log(f'ratio: HGB vs FedAvg in-process, E={epochs}')
    s = self.s
    runners = collections.OrderedDict(
        hgb=self._runner(self.workload.process('hgb', epochs),
                         self.workload.hgb_data_fn(fd), ids),
        fedavg=self._runner(self.workload.process('fedavg', epochs),
                            self.workload.fedavg_data_fn(fd, epochs), ids))
    times = self.bm.interleave(
        {name: self._in_context(context, runner.round)
         for name, runner in runners.items()},
        repeats=s.repeats, warmup=s.warmup)
    return collections.OrderedDict(
        ratio=self.bm.summarize(self.bm.ratios(times['hgb'],
                                               times['fedavg'])),
        hgb_round_s=self.bm.summarize(times['hgb']),
        fedavg_round_s=self.bm.summarize(times['fedavg']))

  # ---- flops ----

  def flops(self) -> None:
    s = self.s
    fd = self.workload.data(s.clients)
    ids = fd.client_ids[:s.clients]
    from tff_hgb import models  # pylint: disable=g-import-not-at-top

    self._log('flops: FLOPs per example, matmul rate, profile')
    model_fn = models.build_model_fn(fd.modalities, fd.num_classes)
    per_example = self.bm.model_flops_per_example(model_fn)
    matmul = self.bm.measure_matmul_gflops(
        n=1024 if s.quick else 2048, repeats=s.repeats, warmup=s.warmup)
    # The best repeat: the machine's rate, least disturbed by other programs.
    rate = matmul['max'] * 1e9
    sizes = self.workload.client_sizes(fd, ids)
    section = collections.OrderedDict(
        flops_per_example=per_example, matmul_gflops=matmul)
    for epochs in s.local_epochs:
      round_flops = self.bm.hgb_round_flops(sizes, epochs, per_example)
      entry = collections.OrderedDict(round_flops=round_flops)
      for name, key in (('hgb', 'hgb'), ('fedavg', 'fedavg')):
        floor = round_flops[key] / rate
        times = self.round_times.get((name, epochs))
        entry[name] = collections.OrderedDict(
            floor_s=floor,
            ratio=(self.bm.summarize([t / floor for t in times], digits=1)
                   if times else 'run the ratio section'))
      section[f'E={epochs}'] = entry
    section['profile'] = self._profile(fd, ids)
    section['where_the_rest_goes'] = self._explain(section)
    self.results['round_time_over_flop_floor'] = section

  def _profile(self, fd, ids) -> dict[str, Any]:
    """CPU split of one HGB round (E = first value), and perf of the worker."""
    import psutil  # pylint: disable=g-import-not-at-top

    epochs = self.s.local_epochs[0]
    runner = self._runner(self.workload.process('hgb', epochs),
                          self.workload.hgb_data_fn(fd), ids)
    for _ in range(max(self.s.warmup, 1)):
      runner.round()
    me = psutil.Process()
    worker = psutil.Process(self.local_worker.pid)
    splits = []
    for _ in range(self.s.repeats):
      cpu_self, cpu_worker = self.bm.cpu_seconds(me), self.bm.cpu_seconds(
          worker)
      main_thread = time.thread_time()
      wall = runner.round()
      splits.append((wall, self.bm.cpu_seconds(me) - cpu_self,
                     time.thread_time() - main_thread,
                     self.bm.cpu_seconds(worker) - cpu_worker))
    walls, python_cpu, main_cpu, worker_cpu = zip(*splits)
    profile = collections.OrderedDict(
        local_epochs=epochs,
        round_wall_s=self.bm.summarize(walls),
        worker_cpu_s=self.bm.summarize(worker_cpu),
        python_process_cpu_s=self.bm.summarize(python_cpu),
        python_main_thread_cpu_s=self.bm.summarize(main_cpu),
        note=('CPU seconds during process.next: the worker_binary (all its '
              'threads), this Python process (all threads: the main thread '
              'waits while TFF\'s event-loop thread serializes client '
              'datasets and talks gRPC), and its main thread alone.'))
    if self.s.perf and self.bm.perf_available():
      def rounds():
        for _ in range(2):
          runner.round()
      profile['worker_perf'] = self.bm.perf_profile(self.local_worker.pid,
                                                   rounds)
    else:
      profile['worker_perf'] = 'skipped (--noperf, --quick or no perf)'
    return profile

  def _explain(self, section) -> str:
    profile = section['profile']
    epochs = profile['local_epochs']
    entry = section[f'E={epochs}']
    wall = profile['round_wall_s']['median']
    parts = [
        f'At E={epochs} one HGB round of {self.s.clients} clients needs '
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

  # ---- runtimes ----

  def runtimes(self) -> None:
    s = self.s
    fd = self.workload.data(s.clients)
    ids = fd.client_ids[:s.clients]
    epochs = s.local_epochs[0]
    self._log(f'runtimes: plain loop, TFF worker, in-process, E={epochs}')
    data_fn = self.workload.hgb_data_fn(fd)
    process = self.workload.process('hgb', epochs)
    tff_runner = self._runner(process, data_fn, ids)
    plain = PlainLoopChild(s, epochs)
    measurements = collections.OrderedDict(
        tff=tff_runner.round, plain=plain.round)
    inprocess_context = self._inprocess()
    inprocess_status = self.inprocess_status
    if inprocess_context is not None:
      measurements['inprocess'] = self._in_context(
          inprocess_context, self._runner(process, data_fn, ids).round)
    try:
      try:
        times = self.bm.interleave(measurements, repeats=s.repeats,
                                   warmup=s.warmup)
      except Exception as e:  # pylint: disable=broad-except
        if 'inprocess' not in measurements:
          raise
        # Report the in-process context's failure and measure the rest.
        inprocess_status = ('pending: the in-process context failed '
                            f'({type(e).__name__}: {str(e)[:300]})')
        traceback.print_exc()
        measurements.pop('inprocess')
        times = self.bm.interleave(measurements, repeats=s.repeats,
                                   warmup=s.warmup)
      plain_traces = plain.traces
    finally:
      plain.close()
    section = collections.OrderedDict(
        local_epochs=epochs, clients_per_round=len(ids),
        tff_over_plain_loop=self.bm.summarize(
            self.bm.ratios(times['tff'], times['plain'])),
        plain_loop_round_s=self.bm.summarize(times['plain']),
        tff_round_s=self.bm.summarize(times['tff']),
        plain_loop_client_update_traces=plain_traces)
    if 'inprocess' in times:
      section['inprocess_over_plain_loop'] = self.bm.summarize(
          self.bm.ratios(times['inprocess'], times['plain']))
      section['tff_over_inprocess_round_time'] = self.bm.summarize(
          self.bm.ratios(times['tff'], times['inprocess']))
      section['inprocess_round_s'] = self.bm.summarize(times['inprocess'])
      section['inprocess_devices'] = list(inprocess_context.devices)
    else:
      section['inprocess_over_plain_loop'] = inprocess_status
      section['tff_over_inprocess_round_time'] = inprocess_status
    section['compared'] = (
        'One HGB round (registry \'hgb\', same clients, data and seeds) three '
        'ways, interleaved: tff = process.next on the owned TFF worker; '
        'inprocess = the same process.next under tff_hgb.runtime.'
        'set_inprocess_context(devices=\'cpu\'); plain = benchmarking.'
        'PlainHGBLoop in a child process (Keras invalidates eagerly built '
        'models once TFF builds a process in a graph, so it cannot share this '
        'process): the same local procedure (client_work.'
        'build_hgb_client_update, a tf.function traced once) called client '
        'after client, a tf.function weighted mean of the deltas and the '
        'server SGD step, no metrics. All three time the round only, after '
        'the clients\' datasets are built.')
    section['datasets_per_client'] = self._dataset_transfer(ids, data_fn)
    self.results['runtimes'] = section

  def _dataset_transfer(self, ids, data_fn):
    """What each dataset in a client's value costs the TFF runtime.

    One federated_map over the round's clients of a computation that only
    counts examples, interleaved, for three forms of each client's value:
    its training dataset alone; HGB's client data (train + the one-element
    held-out dataset); and the same held-out sets as two datasets of their
    own (HGB's former train/val/probe form). The differences are the
    runtime's cost of moving and rebuilding a dataset, with almost no
    arithmetic.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tff = self.tff
    sample = data_fn(ids[0], 0)
    batch_type = tff.types.tensorflow_to_type(sample['train'].element_spec)
    sequence = tff.SequenceType(batch_type)
    held_out = tff.SequenceType(tff.types.StructWithPythonType(
        [('probe', batch_type), ('val', batch_type)], collections.OrderedDict))
    types = collections.OrderedDict(
        train_only=sequence,
        train_held_out=collections.OrderedDict(train=sequence,
                                               held_out=held_out),
        train_val_probe=collections.OrderedDict(train=sequence, val=sequence,
                                                probe=sequence))

    @tf.function
    def count(dataset):
      total = tf.constant(0, tf.int64)
      for _ in iter(dataset):
        total += 1
      return total

    # Each form from a client's HGB value, built only for its own turn.
    forms = collections.OrderedDict(
        train_only=lambda value: value['train'],
        train_held_out=lambda value: value,
        train_val_probe=lambda value: collections.OrderedDict(
            train=value['train'],
            **{part: tf.data.Dataset.from_tensors(batch) for part, batch in
               value['held_out'].get_single_element().items()}))

    def mapped(value_type):
      @tff.tensorflow.computation(value_type)
      def count_all(value):
        return tf.add_n([count(d) for d in tf.nest.flatten(value)])

      @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
      def map_clients(values):
        return tff.federated_sum(tff.federated_map(count_all, values))
      return map_clients

    round_num = iter(range(10**9))

    def timed(name):
      computation = mapped(types[name])

      def measure():
        data = [forms[name](data_fn(cid, next(round_num))) for cid in ids]
        start = time.perf_counter()
        computation(data)
        return time.perf_counter() - start
      return measure

    times = self.bm.interleave(
        collections.OrderedDict((name, timed(name)) for name in types),
        repeats=self.s.repeats, warmup=self.s.warmup)

    def per_dataset(more, fewer, extra_datasets):
      return self.bm.summarize(
          [(b - a) / (extra_datasets * len(ids))
           for a, b in zip(times[fewer], times[more])], digits=5)

    return collections.OrderedDict(
        round_s=collections.OrderedDict(
            (name, self.bm.summarize(values)) for name, values in times.items()),
        seconds_per_extra_dataset_per_client=per_dataset(
            'train_val_probe', 'train_only', 2),
        held_out_saving_per_client=per_dataset(
            'train_val_probe', 'train_held_out', 1),
        method=('TFF runtime, one federated_map over the round\'s clients of '
                'a computation that counts the elements of each client\'s '
                'datasets: train only; HGB\'s train + one-element held_out '
                'dataset; train + probe and val as datasets of their own '
                '(HGB\'s former form). Per extra dataset = (train_val_probe '
                '- train_only) / (2 x clients); the held-out saving = '
                '(train_val_probe - train_held_out) / clients.'))

  # ---- scaling ----

  def scaling(self) -> None:
    s = self.s
    counts = sorted(set(s.scaling_clients))
    gc.collect()
    rss_before_data = self.bm.rss_mb()['total']
    fd = self.workload.data(max(counts))
    gc.collect()
    rss_with_data = self.bm.rss_mb()['total']
    self._log(f'scaling: HGB rounds of {counts} clients')
    process = self.workload.process('hgb', 1)
    data_fn = self.workload.hgb_data_fn(fd)
    runners = collections.OrderedDict(
        (n, self._runner(process, data_fn, fd.client_ids[:n])) for n in counts)
    peaks = {n: 0.0 for n in counts}

    def sampled(n, runner):
      def measure():
        with RssSampler() as sampler:
          seconds = runner.round()
        peaks[n] = max(peaks[n], sampler.peak_mb)
        return seconds
      return measure

    times = self.bm.interleave(
        {str(n): sampled(n, r) for n, r in runners.items()},
        repeats=s.scaling_repeats, warmup=1)
    low, high = counts[0], counts[-1]
    per_client = {n: [t / n for t in times[str(n)]] for n in counts}
    self.results['scaling'] = collections.OrderedDict(
        local_epochs=1,
        round_s=collections.OrderedDict(
            (str(n), self.bm.summarize(times[str(n)])) for n in counts),
        per_client_s=collections.OrderedDict(
            (str(n), self.bm.summarize(per_client[n], digits=5))
            for n in counts),
        per_client_ratio=collections.OrderedDict(
            numerator_clients=high, denominator_clients=low,
            **self.bm.summarize(self.bm.ratios(per_client[high],
                                               per_client[low]))),
        client_data_build_s=collections.OrderedDict(
            (str(n), self.bm.summarize(r.data_seconds))
            for n, r in runners.items()),
        completed_rounds=collections.OrderedDict(
            (str(n), r.round_num) for n, r in runners.items()),
        peak_rss_mb=collections.OrderedDict(
            (str(n), round(peaks[n], 1)) for n in counts),
        rss_before_section_mb=round(rss_before_data, 1),
        rss_with_data_mb=round(rss_with_data, 1),
        method=('registry \'hgb\', E=1, the first N clients of one '
                'FederatedData of equal-size clients; N interleaved per '
                'repeat after one warm-up round each; per-client time = '
                'round time / N; peak_rss_mb: this process + its workers, '
                'sampled every 50 ms during each round of N clients (client '
                'datasets built before the round are alive then).'))

  # ---- workers ----

  def workers(self) -> None:
    s = self.s
    from tff_hgb import runtime  # pylint: disable=g-import-not-at-top

    fd = self.workload.data(s.workers_clients)
    ids = fd.client_ids[:s.workers_clients]
    process = self.workload.process('hgb', 1)
    data_fn = self.workload.hgb_data_fn(fd)
    stack = self.tff.framework.get_context_stack()
    before = {w.pid for w in self.bm.worker_processes()}
    contexts = collections.OrderedDict(local=self.local_context)
    started = []
    section = collections.OrderedDict(clients_per_round=len(ids),
                                      local_epochs=1)
    try:
      for count in s.worker_counts:
        known = set(id(w) for w in runtime.started_workers())
        runtime.set_multi_worker_context(local_workers=count)
        contexts[f'{count}_workers'] = stack.current
        started.extend(w for w in runtime.started_workers()
                       if id(w) not in known)
      stack.set_default_context(self.local_context)
      self._log(f'workers: {list(contexts)} at {len(ids)} clients')

      times = self.bm.interleave(
          collections.OrderedDict(
              (name, self._in_context(
                  context, self._runner(process, data_fn, ids).round))
              for name, context in contexts.items()),
          repeats=s.workers_repeats, warmup=1)
    finally:
      stack.set_default_context(self.local_context)
      for worker in started:
        worker.stop()
    deadline = time.monotonic() + 10
    left = [w for w in self.bm.worker_processes() if w.pid not in before]
    while left and time.monotonic() < deadline:
      time.sleep(0.2)
      left = [w for w in self.bm.worker_processes() if w.pid not in before]
    section['round_s'] = collections.OrderedDict(
        (name, self.bm.summarize(values)) for name, values in times.items())
    section['over_local'] = collections.OrderedDict(
        (name, self.bm.summarize(self.bm.ratios(values, times['local'])))
        for name, values in times.items() if name != 'local')
    section['workers_started'] = len(started)
    section['workers_left_behind'] = len(left)
    section['local_worker_alive'] = self.local_worker.alive()
    section['method'] = (
        'registry \'hgb\', E=1; local = the owned single worker '
        '(set_local_context); N_workers = tff_hgb.runtime.'
        'set_multi_worker_context(local_workers=N) (TFF mergeable context: '
        'the round\'s clients split over N workers, partial results merged '
        'here). All contexts are created first and the default context is '
        'switched per round, so configurations interleave; afterwards every '
        'worker they started is stopped and the worker_binary children of '
        'this process are counted (workers_left_behind).')
    self.results['multi_worker_round_time'] = section


class PlainLoopChild:
  """The plain loop in a child process, driven one round at a time.

  The child (`--plain_loop_server=E`, same size flags) builds the same data and
  a `benchmarking.PlainHGBLoop`, then answers each 'round' line on its stdin
  with one 'PLAIN <seconds> <traces>' line: the time of one round (client
  datasets built first, untimed).
  """

  def __init__(self, settings: Settings, local_epochs: int):
    import subprocess  # pylint: disable=g-import-not-at-top

    args = [sys.executable, '-m', 'experiments.benchmark',
            f'--plain_loop_server={local_epochs}',
            f'--clients={settings.clients}',
            f'--examples_per_client={settings.examples_per_client}',
            f'--batch_size={settings.batch_size}',
            f'--wide_dim={settings.wide_dim}', f'--seed={settings.seed}']
    if settings.quick:
      args.append('--quick')
    env = dict(os.environ)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = os.pathsep.join(
        [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    self._process = subprocess.Popen(  # pylint: disable=consider-using-with
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        text=True, cwd=root)
    self.traces = None
    self._expect('READY')

  def _expect(self, tag: str) -> list[str]:
    while True:
      line = self._process.stdout.readline()
      if not line:
        raise RuntimeError(f'the plain-loop child exited (code '
                           f'{self._process.wait()}) before answering {tag}.')
      if line.startswith(f'PLAIN {tag}'):
        return line.split()[2:]

  def round(self) -> float:
    self._process.stdin.write('round\n')
    self._process.stdin.flush()
    seconds, traces = self._expect('ROUND')
    self.traces = int(traces)
    return float(seconds)

  def close(self) -> None:
    if self._process.poll() is None:
      try:
        self._process.stdin.write('quit\n')
        self._process.stdin.flush()
        self._process.wait(timeout=60)
      except Exception:  # pylint: disable=broad-except
        self._process.kill()
        self._process.wait()


def plain_loop_server(settings: Settings, local_epochs: int) -> None:
  """The child side of `PlainLoopChild` (runs no TFF computation)."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_hgb import benchmarking  # pylint: disable=g-import-not-at-top
  from tff_hgb import hgb  # pylint: disable=g-import-not-at-top
  from tff_hgb import models  # pylint: disable=g-import-not-at-top

  workload = Workload(settings)
  fd = workload.data(settings.clients)
  ids = fd.client_ids[:settings.clients]
  config = workload.config(local_epochs)
  blend, weighting = hgb.MODES['hgb']
  loop = benchmarking.PlainHGBLoop(
      models.build_model_fn(fd.modalities, fd.num_classes,
                            config=config.model),
      tff.learning.optimizers.build_sgdm(
          learning_rate=config.client_learning_rate),
      blend=blend, weighting=weighting,
      hparams=dataclasses.replace(hgb.DEFAULT_HGB_HPARAMS,
                                  local_epochs=local_epochs),
      server_learning_rate=config.server_learning_rate)
  data_fn = workload.hgb_data_fn(fd)
  print('PLAIN READY', flush=True)
  round_num = 0
  for line in sys.stdin:
    command = line.strip()
    if command == 'quit':
      break
    if command != 'round':
      continue
    data = [data_fn(cid, round_num) for cid in ids]
    start = time.perf_counter()
    loop.round(data)
    seconds = time.perf_counter() - start
    round_num += 1
    print(f'PLAIN ROUND {seconds:.6f} {loop.client_update_traces}',
          flush=True)


# ---------------------------------------------------------------------------
# Targets and reports.


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


def markdown_report(report: dict[str, Any]) -> str:
  """results/bench/BENCHMARKS.md: machine, versions, one row per figure."""
  r = report['results']
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
  ratio = r.get('hgb_over_fedavg_round_time', {})
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
  flop = r.get('round_time_over_flop_floor', {})
  if flop:
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
  runtimes = r.get('runtimes', {})
  if runtimes:
    for key in ('tff_over_plain_loop', 'inprocess_over_plain_loop',
                'tff_over_inprocess_round_time', 'plain_loop_round_s',
                'tff_round_s', 'inprocess_round_s'):
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
  scaling = r.get('scaling', {})
  if scaling:
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
  memory = r.get('memory', {})
  if memory:
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
  workers = r.get('multi_worker_round_time', {})
  if workers:
    for name, summary in workers['round_s'].items():
      lines.append(_row(f'round s at {workers["clients_per_round"]} clients, '
                        f'{name}', summary))
    lines.append(f'| workers left behind | {workers["workers_left_behind"]} '
                 '| | | |')
  lines += ['', '## Targets', '', '| figure | value | target | met |',
            '|---|---|---|---|']
  for target in report['targets']:
    lines.append(f'| {target["figure"]} | {_fmt(target["value"])} | '
                 f'{target["target"]} | {target["met"]} |')
  if flop.get('where_the_rest_goes'):
    lines += ['', '## Where the time goes', '', flop['where_the_rest_goes']]
  lines += ['', 'Numbers from a shared or loaded machine are indicative: rerun '
            'on a quiet machine for final figures.', '']
  return '\n'.join(lines)


def write_reports(report: dict[str, Any], output_dir: str) -> None:
  os.makedirs(output_dir, exist_ok=True)
  report['targets'] = evaluate_targets(report['results'])
  path = os.path.join(output_dir, 'benchmark.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(report, f, indent=1, default=str)
  os.replace(path + '.tmp', path)
  with open(os.path.join(output_dir, 'BENCHMARKS.md'), 'w',
            encoding='utf-8') as f:
    f.write(markdown_report(report))


def main(argv):
  if len(argv) > 1:
    raise SystemExit(f'error: unexpected arguments {" ".join(argv[1:])}')
  try:
    settings = settings_from_flags()
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  start = time.perf_counter()
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  if _PLAIN_LOOP_SERVER.value:
    from tff_hgb import runtime  # pylint: disable=g-import-not-at-top
    # The child runs no TFF computation; the owned context only makes sure
    # that nothing could start TFF's default (unowned) worker.
    runtime.set_local_context()
    try:
      plain_loop_server(settings, _PLAIN_LOOP_SERVER.value)
    finally:
      runtime.stop_all_workers()
    return

  from tff_hgb import benchmarking  # pylint: disable=g-import-not-at-top
  from tff_hgb import runtime  # pylint: disable=g-import-not-at-top

  report = collections.OrderedDict(
      command=' '.join(['python -m experiments.benchmark'] +
                       [shlex.quote(a) for a in sys.argv[1:]]),
      started=datetime.datetime.now().isoformat(timespec='seconds'),
      machine=benchmarking.machine_info(),
      versions=benchmarking.versions(),
      settings=dataclasses.asdict(settings),
      workload=None,
      results=collections.OrderedDict(),
      section_seconds=collections.OrderedDict())
  bench = None
  try:
    worker = runtime.set_local_context()
    bench = Benchmark(settings, worker)
    report['workload'] = bench.workload.describe()
    report['results'] = bench.results
    for section in SECTIONS:
      if section not in settings.sections:
        continue
      section_start = time.perf_counter()
      getattr(bench, section)()
      report['section_seconds'][section] = round(
          time.perf_counter() - section_start, 1)
      report['total_runtime_s'] = round(time.perf_counter() - start, 1)
      write_reports(report, settings.output_dir)
  finally:
    if bench is not None:
      bench.close()
    runtime.stop_all_workers()
  report['machine_after'] = collections.OrderedDict(
      load_average_1_5_15=benchmarking.machine_info()['load_average_1_5_15'])
  report['total_runtime_s'] = round(time.perf_counter() - start, 1)
  write_reports(report, settings.output_dir)
  print(f'benchmark: wrote {os.path.join(settings.output_dir, "benchmark.json")}'
        f' and BENCHMARKS.md in {report["total_runtime_s"]:.0f} s', flush=True)


if __name__ == '__main__':
  app.run(main)
