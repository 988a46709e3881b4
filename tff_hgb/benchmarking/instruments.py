"""Measuring instruments: side-by-side repeats, round time, memory, traces.

Also what the numbers were measured on, and `perf` samples of a worker:

  machine_info / versions        what the numbers were measured on
  summarize / interleave         medians (with min and max) of repeats measured
                                 side by side (A B A B ...) after warm-up
  RoundRunner                    times `process.next` alone (client datasets are
                                 built before the clock starts)
  rss_mb / worker_processes      resident memory of this process + TFF workers
  RssSampler                     the peak of that memory, sampled in a thread
  count_client_update_traces     how often the HGB client update's Python body
                                 is traced (and how often a model is built)
  cpu_seconds / perf_profile     where a round's time goes (CPU of this process
                                 and of the worker; Linux `perf` of the worker)

Nothing here changes what a learning process computes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import psutil
import tensorflow as tf

from tff_hgb import client_work
from tff_hgb import models

WORKER_BINARY_NAME = 'worker_binary'


# ---------------------------------------------------------------------------
# What the numbers were measured on.


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.lower().startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
  """CPU model, cores, memory, OS and the load when called."""
  memory = psutil.virtual_memory()
  try:
    load = [round(x, 2) for x in os.getloadavg()]
  except OSError:
    load = None
  return collections.OrderedDict(
      cpu_model=_cpu_model(),
      logical_cores=os.cpu_count(),
      physical_cores=psutil.cpu_count(logical=False),
      cpus_usable=len(os.sched_getaffinity(0)) if hasattr(
          os, 'sched_getaffinity') else os.cpu_count(),
      memory_gb=round(memory.total / 2**30, 1),
      platform=platform.platform(),
      load_average_1_5_15=load,
  )


def versions() -> dict[str, str]:
  result = collections.OrderedDict(python=platform.python_version())
  for package in ('tensorflow', 'tensorflow-federated', 'numpy', 'psutil'):
    try:
      result[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      result[package] = 'not installed'
  return result


# ---------------------------------------------------------------------------
# Repeats measured side by side.


def summarize(values: Iterable[float], digits: int = 4) -> dict[str, Any]:
  """Median, min and max (and the values) of repeated measurements."""
  values = [float(v) for v in values]
  if not values:
    return collections.OrderedDict(median=None, min=None, max=None, n=0,
                                   values=[])
  return collections.OrderedDict(
      median=round(float(np.median(values)), digits),
      min=round(min(values), digits),
      max=round(max(values), digits),
      n=len(values),
      values=[round(v, digits) for v in values],
  )


def ratios(numerators: Sequence[float], denominators: Sequence[float]
           ) -> list[float]:
  """Per-repeat ratios of measurements taken side by side (same index)."""
  if len(numerators) != len(denominators):
    raise ValueError(f'{len(numerators)} numerators but {len(denominators)} '
                     'denominators.')
  return [a / b for a, b in zip(numerators, denominators)]


def interleave(measurements: Mapping[str, Callable[[], float]], *,
               repeats: int, warmup: int) -> dict[str, list[float]]:
  """Runs each measurement in turn (A B C A B C ...), `warmup` times untimed.

  Args:
    measurements: name → a no-argument callable returning one measured time
      (seconds). Callables time themselves, so untimed preparation (e.g.
      building client datasets) stays out of the figure.
    repeats: timed turns.
    warmup: untimed turns first (traces, session creation, caches).

  Returns:
    name → list of `repeats` times, index i of every list from the same turn.
  """
  for _ in range(warmup):
    for fn in measurements.values():
      fn()
  times = {name: [] for name in measurements}
  for _ in range(repeats):
    for name, fn in measurements.items():
      times[name].append(float(fn()))
  return times


class RoundRunner:
  """Rounds of one learning process on a fixed list of clients.

  `round()` builds the clients' datasets for the next round number (untimed),
  then times `process.next` alone and returns its seconds. Data-building time
  is kept in `data_seconds`, and the CPU seconds this process and its TFF
  workers used during `process.next` in `cpu_seconds` (less sensitive than wall
  time to other programs on the machine).
  """

  def __init__(self, process, client_data_fn: Callable[[str, int], Any],
               client_ids: Sequence[str], *, state=None, first_round: int = 0):
    self.process = process
    self.client_data_fn = client_data_fn
    self.client_ids = list(client_ids)
    self.state = process.initialize() if state is None else state
    self.round_num = first_round
    self.data_seconds: list[float] = []
    self.cpu_seconds: list[float] = []
    self.last_output = None

  def round(self) -> float:
    start = time.perf_counter()
    data = [self.client_data_fn(cid, self.round_num) for cid in self.client_ids]
    self.data_seconds.append(time.perf_counter() - start)
    processes = [psutil.Process()] + worker_processes()
    cpu_before = _total_cpu_seconds(processes)
    start = time.perf_counter()
    output = self.process.next(self.state, data)
    elapsed = time.perf_counter() - start
    self.cpu_seconds.append(_total_cpu_seconds(processes) - cpu_before)
    self.state = output.state
    self.last_output = output
    self.round_num += 1
    return elapsed



# ---------------------------------------------------------------------------
# Memory and processes.


def worker_processes(parent: Optional[psutil.Process] = None
                     ) -> list[psutil.Process]:
  """TFF worker_binary processes below `parent` (default: this process)."""
  parent = parent or psutil.Process()
  found = []
  for child in parent.children(recursive=True):
    try:
      if WORKER_BINARY_NAME in child.name() or any(
          WORKER_BINARY_NAME in part for part in child.cmdline()[:1]):
        found.append(child)
    except psutil.Error:
      continue
  return found


def rss_mb() -> dict[str, float]:
  """Resident memory (MB) of this process, of its TFF workers, and the sum."""
  own = psutil.Process().memory_info().rss
  workers = 0
  for worker in worker_processes():
    try:
      workers += worker.memory_info().rss
    except psutil.Error:
      continue
  return collections.OrderedDict(process=own / 2**20, workers=workers / 2**20,
                                 total=(own + workers) / 2**20)


def cpu_seconds(process: psutil.Process) -> float:
  times = process.cpu_times()
  return times.user + times.system


def _total_cpu_seconds(processes: Sequence[psutil.Process]) -> float:
  total = 0.0
  for process in processes:
    try:
      total += cpu_seconds(process)
    except psutil.Error:
      continue
  return total


class RssSampler:
  """Samples the RSS of this process + its workers in a thread; keeps the peak."""

  def __init__(self, interval: float = 0.05):
    self._interval = interval
    self._stop = threading.Event()
    self.peak_mb = 0.0
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      try:
        self.peak_mb = max(self.peak_mb, rss_mb()['total'])
      except Exception:  # pylint: disable=broad-except
        pass
      self._stop.wait(self._interval)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak_mb = max(self.peak_mb, rss_mb()['total'])


# ---------------------------------------------------------------------------
# Traces.


@dataclasses.dataclass
class TraceCounts:
  """Counts kept by `count_client_update_traces`."""

  client_update_builds: int = 0
  client_update_traces: int = 0
  model_fn_calls: int = 0


@contextlib.contextmanager
def count_client_update_traces():
  """Counts traces of HGB's client update while processes are built and run.

  Inside the block, `client_work.build_hgb_client_update` returns the same
  function wrapped so that every execution of its Python body (a trace: a
  traced tf.function runs Python only when it traces) adds one to
  `client_update_traces`, and every `models.MultiModalModel` construction adds
  one to `model_fn_calls`. Build processes inside the block.
  """
  counts = TraceCounts()
  original_build = client_work.build_hgb_client_update
  original_init = models.MultiModalModel.__init__

  @functools.wraps(original_build)
  def counting_build(*args, **kwargs):
    counts.client_update_builds += 1
    update = original_build(*args, **kwargs)
    body = update.python_function

    @functools.wraps(body)
    def counted(*call_args, **call_kwargs):
      counts.client_update_traces += 1
      return body(*call_args, **call_kwargs)

    return tf.function(counted)

  @functools.wraps(original_init)
  def counting_init(self, *args, **kwargs):
    counts.model_fn_calls += 1
    original_init(self, *args, **kwargs)

  client_work.build_hgb_client_update = counting_build
  models.MultiModalModel.__init__ = counting_init
  try:
    yield counts
  finally:
    client_work.build_hgb_client_update = original_build
    models.MultiModalModel.__init__ = original_init


# ---------------------------------------------------------------------------
# Where the time goes.


def perf_available() -> bool:
  return shutil.which('perf') is not None


# Inclusive frames of the worker's perf profile, grouped: label → patterns.
PERF_GROUPS = collections.OrderedDict([
    ('function instantiation (FunctionLibraryRuntime::Instantiate)',
     (r'ProcessFunctionLibraryRuntime::Instantiate\b',)),
    ('graph optimisation (Grappler)', (r'grappler::RunMetaOptimizer',
                                       r'OptimizeFunctionGraph\b')),
    ('tf.data rewrites (FinalizeDataset)', (r'data::FinalizeDataset',)),
    ('dataset reduce ops (ReduceDatasetOp)', (r'ReduceDatasetOp::DoCompute',)),
    ('kernel execution (ExecutorState::Process)',
     (r'ExecutorState<.*>::Process\b',)),
    ('matmul arithmetic (Eigen contraction)', (r'TensorContraction',
                                               r'MatMulOp')),
    ('gRPC', (r'^grpc', r'grpc_core')),
    ('malloc/free (self)', (r'^malloc$', r'^_int_malloc$', r'^_int_free$',
                            r'^malloc_consolidate$', r'^free$',
                            r'^cfree$')),
])


def _perf_report(pid: int, run: Callable[[], Any]) -> tuple[str, str]:
  """`perf record -g` of process `pid` during `run()`, then `perf report`.

  Returns:
    (perf report's text, '') or ('', why the recording failed).
  """
  with tempfile.TemporaryDirectory() as tmp:
    data_path = os.path.join(tmp, 'perf.data')
    recorder = subprocess.Popen(  # pylint: disable=consider-using-with
        ['perf', 'record', '-g', '-o', data_path, '-p', str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    time.sleep(0.5)
    try:
      run()
    finally:
      if recorder.poll() is None:
        recorder.send_signal(2)  # SIGINT: perf writes its data and exits.
      try:
        _, stderr = recorder.communicate(timeout=60)
      except subprocess.TimeoutExpired:
        recorder.kill()
        _, stderr = recorder.communicate()
    if not os.path.exists(data_path) or os.path.getsize(data_path) == 0:
      return '', (
          f'perf record failed: {stderr.decode(errors="replace")[-300:]}')
    report = subprocess.run(
        ['perf', 'report', '-i', data_path, '--children', '--sort', 'symbol',
         '--stdio', '-g', 'none', '--percent-limit', '0.5'],
        capture_output=True, text=True, timeout=300, check=False)
  return report.stdout, ''


def _perf_rows(report: str) -> list[tuple[float, float, str]]:
  """(inclusive %, self %, symbol) of each line of `perf report --children`."""
  rows = []
  pattern = re.compile(r'^\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$')
  for line in report.splitlines():
    match = pattern.match(line)
    if match:
      symbol = re.sub(r'\s+-\s+-\s*$', '', match.group(3)).strip()
      rows.append((float(match.group(1)), float(match.group(2)), symbol))
  return rows


def perf_profile(pid: int, run: Callable[[], Any], *, top: int = 15
                 ) -> dict[str, Any]:
  """Samples process `pid` with `perf record -g` while `run()` executes.

  Returns:
    OrderedDict(groups={label: inclusive % of samples}, top=[(incl %, self %,
    symbol)], samples_file=None) or OrderedDict(error=...) when perf is
    missing or not permitted.
  """
  if not perf_available():
    return collections.OrderedDict(error='perf not found')
  report, error = _perf_report(pid, run)
  if error:
    return collections.OrderedDict(error=error)
  rows = _perf_rows(report)
  if not rows:
    return collections.OrderedDict(error='perf report gave no samples')
  groups = collections.OrderedDict()
  for label, patterns in PERF_GROUPS.items():
    share = 0.0
    for inclusive, self_share, symbol in rows:
      if any(re.search(p, symbol) for p in patterns):
        share = (share + self_share if label.startswith('malloc') else
                 max(share, inclusive))
    groups[label] = round(share, 1)
  skip = re.compile(r'start_thread|ThreadFn|WorkerLoop|RemoteInvoker|'
                    r'_Function_handler|^0x|^0+$|clone|__invoke')
  top_rows = [(i, s, sym[:140]) for i, s, sym in rows
              if not skip.search(sym)][:top]
  return collections.OrderedDict(groups=groups, top=top_rows)

