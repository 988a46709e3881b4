"""Helpers of the benchmark program (`experiments/benchmark.py`, docs/BENCHMARKS.md).

Nothing here changes what a learning process computes; these are measuring
instruments:

  machine_info / versions        what the numbers were measured on
  summarize / interleave         medians (with min and max) of repeats measured
                                 side by side (A B A B ...) after warm-up
  RoundRunner                    times `process.next` alone (client datasets are
                                 built before the clock starts)
  model_flops_per_example        forward and training-step FLOPs of a model
                                 (tf.compat.v1.profiler), with a dense-layer
                                 count as a cross-check
  measure_matmul_gflops          this machine's large-matmul rate
  rss_mb / worker_processes      resident memory of this process + TFF workers
  count_client_update_traces     how often the HGB client update's Python body
                                 is traced (and how often a model is built)
  PlainHGBLoop                   a hand-written single-process round: the same
                                 HGB local procedure (`client_work`), the same
                                 weighted mean and server step, no TFF runtime
  cpu_seconds / perf_profile     where a round's time goes (CPU of this process
                                 and of the worker; Linux `perf` of the worker)
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import client_work
from tff_hgb import losses
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
  import importlib.metadata  # pylint: disable=g-import-not-at-top

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
# Arithmetic.


def _fixed_batch_placeholders(input_spec, batch_size: int):
  return tf.nest.map_structure(
      lambda s: tf.compat.v1.placeholder(s.dtype, [batch_size] +
                                         s.shape.as_list()[1:]), input_spec)


@contextlib.contextmanager
def _quiet_native_output():
  """Silences C++ writes to stdout/stderr (the profiler's shape notices)."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(os.devnull, 'wb') as devnull:
    os.dup2(devnull.fileno(), 1)
    os.dup2(devnull.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for fd in saved:
      os.close(fd)


def _profiled_flops(graph: tf.Graph) -> int:
  """Float ops of every op in `graph` with a FLOPs statistic (MatMul, BiasAdd,
  element-wise ops, ...); ops whose shapes depend on the data (the masked
  losses' small element-wise ops) have none and are left out."""
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  with _quiet_native_output():
    profile = tf.compat.v1.profiler.profile(graph, options=options)
  return int(profile.total_float_ops)


def model_flops_per_example(model_fn: Callable[[], models.MultiModalModel],
                            batch_size: int = 32) -> dict[str, Any]:
  """FLOPs per example of inference and of one training step.

  Counted by `tf.compat.v1.profiler` (float_operation) on graphs with a fixed
  batch of `batch_size`: the forward pass of every head with its masked
  cross-entropy (inference, as HGB's snapshots), and forward plus gradients of
  the loss over all heads with respect to every trainable variable (a training
  step; the optimizer update's few FLOPs per parameter are counted too).

  Returns:
    OrderedDict(forward, train_step, analytic_dense_forward, parameters,
    method).
  """
  counts = {}
  for kind in ('forward', 'train_step'):
    graph = tf.Graph()
    with graph.as_default():
      model = model_fn()
      batch = _fixed_batch_placeholders(model.input_spec, batch_size)
      with tf.GradientTape() as tape:
        _, loss_sum, _, count = model.head_statistics(
            batch, training=kind == 'train_step')
        loss = losses.blended_loss(
            losses.mean_head_losses(loss_sum, count),
            tf.fill([len(model.heads)], 1.0 / len(model.heads)))
      if kind == 'train_step':
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        for variable, gradient in zip(variables, gradients):
          if gradient is not None:
            variable.assign_sub(0.01 * gradient)
      counts[kind] = _profiled_flops(graph) / batch_size
  with tf.Graph().as_default():
    keras_model = model_fn().keras_model
    analytic = dense_forward_flops(keras_model)
    parameters = int(sum(np.prod(v.shape) for v in
                         keras_model.trainable_variables))
  return collections.OrderedDict(
      forward=counts['forward'], train_step=counts['train_step'],
      analytic_dense_forward=analytic, parameters=parameters,
      method=('tf.compat.v1.profiler float_operation on a fixed batch of '
              f'{batch_size}, divided by {batch_size}'))


def dense_forward_flops(keras_model: tf.keras.Model) -> Optional[float]:
  """2·in·out (+ out for the bias) per Dense layer and example; None when the
  model has layers with weights other than Dense (e.g. convolutions)."""
  total = 0.0

  def layers_of(model):
    for layer in model.layers:
      if isinstance(layer, tf.keras.Model):
        yield from layers_of(layer)
      else:
        yield layer

  for layer in layers_of(keras_model):
    if not layer.weights:
      continue
    if not isinstance(layer, tf.keras.layers.Dense):
      return None
    fan_in, fan_out = layer.kernel.shape
    total += 2.0 * fan_in * fan_out + (fan_out if layer.use_bias else 0)
  return total


def measure_matmul_gflops(n: int = 2048, repeats: int = 5, warmup: int = 2
                          ) -> dict[str, Any]:
  """GFLOP/s of an n×n float32 tf.matmul in this process (2n³ per product)."""
  a = tf.random.stateless_uniform([n, n], seed=[1, 2])
  b = tf.random.stateless_uniform([n, n], seed=[3, 4])

  @tf.function
  def product(x, y):
    return tf.reduce_sum(tf.matmul(x, y))

  for _ in range(warmup):
    product(a, b).numpy()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    product(a, b).numpy()
    rates.append(2.0 * n**3 / (time.perf_counter() - start) / 1e9)
  summary = summarize(rates, digits=2)
  summary['matrix_size'] = n
  summary['threads'] = ('TensorFlow default (intra-op = usable cores: '
                        f'{machine_info()["cpus_usable"]})')
  return summary


def hgb_round_flops(sizes: Sequence[tuple[int, int, int]], local_epochs: int,
                    flops: Mapping[str, float]) -> dict[str, float]:
  """FLOPs of one round, summed over clients.

  Args:
    sizes: per client (training examples, probe examples, validation
      examples).
    local_epochs: E.
    flops: `model_flops_per_example` output.

  Returns:
    OrderedDict(training, snapshots, hgb=training+snapshots, fedavg=training):
    training = E·n_train·train_step; HGB's three snapshots each run inference
    over the probe and the validation examples.
  """
  training = sum(local_epochs * n * flops['train_step'] for n, _, _ in sizes)
  snapshots = sum(3 * (p + v) * flops['forward'] for _, p, v in sizes)
  return collections.OrderedDict(training=training, snapshots=snapshots,
                                 hgb=training + snapshots, fedavg=training)


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
# The practical floor: a plain single-process loop.


class PlainHGBLoop:
  """One HGB round without TFF's runtime: the floor a runtime can approach.

  The same local procedure as the TFF process (`client_work.
  build_hgb_client_update`, one tf.function traced once), called client after
  client in this process; the clients' deltas averaged with their weights in a
  tf.function; the server step w ← w − lr·Δ̄ (server SGD); the prior z̄ ← the
  n_k-weighted mean of the z^k. Metrics aggregation is not done.

  Build and run it in a process that builds no TFF process (or any Keras model
  inside a `tf.Graph`) afterwards: Keras invalidates models built eagerly once
  a model is built inside a graph, which is what TFF does when it builds a
  process. The benchmark runs it in a child process for that reason.
  """

  def __init__(self, model_fn, client_optimizer, *, blend: str, weighting: str,
               hparams: client_work.HGBHParams, server_learning_rate: float):
    self._update = client_work.build_hgb_client_update(
        model_fn, blend=blend, weighting=weighting)
    self._optimizer = client_optimizer
    self._optimizer_hparams = client_optimizer.get_hparams(
        client_optimizer.initialize(tf.TensorSpec((), tf.float32)))
    self._hparams = {k: tf.constant(v) for k, v in hparams.as_state().items()}
    model = model_fn()
    self.weights = tff.learning.models.ModelWeights(
        trainable=[tf.Variable(v) for v in model.trainable_variables],
        non_trainable=[tf.Variable(v) for v in model.non_trainable_variables])
    self.prior = tf.Variable(tf.fill([len(model.heads)],
                                     1.0 / len(model.heads)))
    self._server_learning_rate = server_learning_rate
    self.rounds = 0

    @tf.function
    def accumulate(totals, weight_total, z_sum, z_weight, result, stats):
      weight = result.update_weight
      totals = [t + weight * u for t, u in zip(totals, result.update)]
      return (totals, weight_total + weight, z_sum + stats['z_sum'],
              z_weight + stats['z_weight'])

    @tf.function
    def apply(totals, weight_total, z_sum, z_weight):
      for variable, total in zip(self.weights.trainable, totals):
        variable.assign_sub(self._server_learning_rate *
                            tf.math.divide_no_nan(total, weight_total))
      self.prior.assign(tf.where(z_weight > 0, z_sum / tf.maximum(
          z_weight, 1e-30), self.prior))

    self._accumulate = accumulate
    self._apply = apply

  def round(self, client_datasets: Sequence[Any]) -> None:
    weights = tff.learning.models.ModelWeights(
        trainable=[v.read_value() for v in self.weights.trainable],
        non_trainable=[v.read_value() for v in self.weights.non_trainable])
    totals = [tf.zeros_like(v) for v in self.weights.trainable]
    weight_total = tf.constant(0.0)
    z_sum = tf.zeros_like(self.prior)
    z_weight = tf.constant(0.0)
    for data in client_datasets:
      result, _, stats = self._update(self._optimizer, weights, self.prior,
                                      self._hparams, self._optimizer_hparams,
                                      data)
      totals, weight_total, z_sum, z_weight = self._accumulate(
          totals, weight_total, z_sum, z_weight, result, stats)
    self._apply(totals, weight_total, z_sum, z_weight)
    self.rounds += 1

  @property
  def client_update_traces(self) -> int:
    return self._update.experimental_get_tracing_count()


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
      return collections.OrderedDict(
          error=f'perf record failed: {stderr.decode(errors="replace")[-300:]}')
    report = subprocess.run(
        ['perf', 'report', '-i', data_path, '--children', '--sort', 'symbol',
         '--stdio', '-g', 'none', '--percent-limit', '0.5'],
        capture_output=True, text=True, timeout=300, check=False)
  rows = []
  pattern = re.compile(r'^\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*?)\s*$')
  for line in report.stdout.splitlines():
    match = pattern.match(line)
    if match:
      symbol = re.sub(r'\s+-\s+-\s*$', '', match.group(3)).strip()
      rows.append((float(match.group(1)), float(match.group(2)), symbol))
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

