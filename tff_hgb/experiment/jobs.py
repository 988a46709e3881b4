"""Independent runs in N processes (--jobs): a scheduler of tasks in their
sequential order, run inline (jobs=1, today's behaviour) or in spawned workers.

A comparison, the paper's tables and the study are made of independent runs
(tuning values, seeds, methods, centralized references). Each is a `Task`: a
module-level function `fn(context, *args)` whose arguments and result pickle,
with a `key` that orders it as the sequential code would run it. The parent
submits tasks with a callback (`then`) that may submit the tasks depending on
the result (a tuning's last value → the seeds at the chosen value), and runs:

* `Scheduler(pool=None, ...)`: each task in this process, smallest key first,
  with the caller's caches; an error propagates at once. Exactly the order and
  the files of the sequential code.
* `Scheduler(pool=Pool(jobs, ...))`: the smallest ready keys on the pool's idle
  workers, a task preferring the worker that ran its `affinity` before.
  Workers are `multiprocessing` 'spawn' processes (TensorFlow and TFF are not
  fork-safe) that live as long as the pool, each with its own runtime, thread
  budget, data and algorithm caches, and that die with the parent
  (PR_SET_PDEATHSIG). A task that raises, or whose worker dies, is reported in
  one line naming the run; the other tasks go on (their rounds and files are
  kept), and `run` raises `RunsFailed` at the end.

A run writes its files exactly as in one process: workers write inside the
directories the parent claimed (`results.adopt_claims`: the parent's lock
covers them, so no run directory gets a lock file of its own).
"""

from __future__ import annotations

import ctypes
import dataclasses
import heapq
import itertools
import multiprocessing
import os
import signal
import sys
from multiprocessing import connection as mp_connection
from typing import (TYPE_CHECKING, Any, Callable, Hashable, Mapping, Optional,
                    Sequence)

from tff_hgb.experiment import results

if TYPE_CHECKING:
  from tff_hgb.experiment import caches  # pylint: disable=g-bad-import-order

_PR_SET_PDEATHSIG = 1


class JobsError(RuntimeError):
  """A --jobs worker could not be set up (the message says why)."""


class RunsFailed(JobsError):
  """Some runs failed (each was reported when it failed); the rest finished."""

  def __init__(self, labels):
    self.labels = list(labels)
    super().__init__(
        f'{len(self.labels)} run(s) failed: {", ".join(self.labels)} (see the '
        'errors above); the other runs finished. Rerun with --resume to retry '
        'the failed ones.')


@dataclasses.dataclass
class Context:
  """What a task gets besides its arguments: its process's caches and log."""

  data_cache: caches.DataCache
  algorithm_cache: caches.AlgorithmCache
  log: Callable[[str], None] = print


@dataclasses.dataclass(frozen=True)
class Task:
  """One independent run: `fn(context, *args)` → a picklable result.

  `key` orders tasks as the sequential code runs them (tuples compare
  element-wise). With a pool, `eager` tasks start before the others (a long
  chain that would otherwise run alone at the end), and `cheap` ones run in
  the parent (reading a finished run's results: no worker needs to start).
  `affinity` (any hashable, e.g. `caches.process_affinity`) names what the
  task builds that a later task with the same affinity can reuse: a pool
  sends such tasks to the worker that ran one before (see `pick`).
  """

  key: tuple
  label: str
  fn: Callable[..., Any]
  args: tuple = ()
  eager: bool = False
  cheap: bool = False
  affinity: Optional[Hashable] = None


def default_jobs() -> int:
  """The number of cores this process may use."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # Not Linux.
    return max(1, os.cpu_count() or 1)


def one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


# ---------------------------------------------------------------------------
# The worker process.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
  """How each worker sets itself up (plain values: they go to a new process).

  intra_threads, inter_threads: TensorFlow's intra- and inter-op thread pools
  of each worker (0: TF's default, one thread per core). runtime:
  `configure_runtime` keyword arguments. progress: send progress to the
  parent's display.
  """

  intra_threads: int = 0
  inter_threads: int = 0
  runtime: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  progress: bool = True


def _die_with_parent() -> None:
  try:
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  except OSError:
    pass  # Not Linux: the parent's exit still closes the pipe.


def _worker_main(conn, parent_pid: int, setup: WorkerSetup) -> None:
  """A worker: sets up TF and the runtime, then runs tasks until told to stop."""
  _die_with_parent()
  if os.getppid() != parent_pid:  # The parent died before the prctl.
    os._exit(1)  # pylint: disable=protected-access
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us.
  from absl import logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import loop  # pylint: disable=g-import-not-at-top
  from tff_hgb.runtime import configure  # pylint: disable=g-import-not-at-top
  from tff_hgb.runtime import workers  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  tf.get_logger().setLevel('ERROR')
  # Before anything initialises TensorFlow (the runtime sets up devices).
  if setup.intra_threads > 0:
    tf.config.threading.set_intra_op_parallelism_threads(setup.intra_threads)
  if setup.inter_threads > 0:
    tf.config.threading.set_inter_op_parallelism_threads(setup.inter_threads)
  try:
    configure.configure_runtime(**dict(setup.runtime))
  except Exception as e:  # pylint: disable=broad-except
    conn.send(('setup_failed', one_line(e)))
    return
  if setup.progress:
    loop.set_progress_sink(lambda *event: conn.send(('progress',) + event))
  context = Context(caches.DataCache(), caches.AlgorithmCache(),
                    log=lambda text: conn.send(('log', text)))
  conn.send(('ready',))
  try:
    while True:
      message = conn.recv()
      if message is None:
        return
      task_id, task, claimed = message
      results.adopt_claims(claimed)
      builds = context.algorithm_cache.builds
      try:
        value = task.fn(context, *task.args)
      except Exception as e:  # pylint: disable=broad-except
        conn.send(('failed', task_id, one_line(e)))
      else:
        conn.send(('done', task_id, value,
                   context.algorithm_cache.builds - builds))
  except (EOFError, BrokenPipeError, KeyboardInterrupt):
    return
  finally:
    workers.stop_all_workers()


# ---------------------------------------------------------------------------
# The pool and the parent's display.
# ---------------------------------------------------------------------------


class _Worker:
  """One spawned worker process, seen from the parent."""

  def __init__(self, slot: int, setup: WorkerSetup):
    spawn = multiprocessing.get_context('spawn')
    self.slot = slot
    self.conn, child_end = spawn.Pipe()
    self.process = spawn.Process(
        target=_worker_main, args=(child_end, os.getpid(), setup),
        name=f'tff_hgb-job-{slot}', daemon=True)
    self.process.start()
    child_end.close()
    self.ready = False
    self.task_id: Optional[int] = None
    self.affinities: set = set()  # Of the tasks it ran (what it has built).

  def stop(self, timeout: float = 10.0) -> None:
    try:
      self.conn.send(None)
    except (OSError, ValueError):
      pass
    self.process.join(timeout)
    if self.process.is_alive():
      self.process.kill()
      self.process.join()
    self.conn.close()


class _Display:
  """One progress bar per worker (the run it is on), in the parent."""

  def __init__(self, enabled: bool):
    self._enabled = enabled
    self._bars: dict[int, Any] = {}

  def progress(self, slot: int, desc: str, done: int, total: int,
               postfix: Mapping[str, str]) -> None:
    if not self._enabled:
      return
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    bar = self._bars.get(slot)
    if bar is None:
      bar = self._bars[slot] = tqdm.tqdm(
          total=total, position=slot, desc=desc, unit='round',
          file=sys.stderr, dynamic_ncols=True, mininterval=0.5, leave=False)
    if bar.desc != desc or bar.total != total or done < bar.n:
      bar.reset(total=total)  # The worker is on its next run.
      bar.set_description(desc, refresh=False)
    bar.set_postfix(postfix, refresh=False)
    bar.update(done - bar.n)

  def write(self, text: str, log: Callable[[str], None]) -> None:
    if self._bars:
      from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
      tqdm.tqdm.write(text, file=sys.stdout)
    else:
      log(text)

  def error(self, text: str) -> None:
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    tqdm.tqdm.write(text, file=sys.stderr)  # Keeps the bars whole.

  def close(self) -> None:
    for bar in self._bars.values():
      bar.close()
    self._bars.clear()


class Pool:
  """`jobs` spawned workers, started when first needed, kept until close().

  Use as a context manager.

  Threads: each worker's inter-op pool gets cores / jobs threads (N workers
  with TF's default of one per core oversubscribe the CPU). Its intra-op pool
  keeps TF's default unless `intra_threads` is given: the number of intra-op
  threads decides how TensorFlow splits a reduction, so any other value
  changes results in their last bits (measured: losses differ ~1e-7 with 1
  thread instead of 2), and a run would no longer match its --jobs=1 files.
  """

  def __init__(self, jobs: int, *, intra_threads: int = 0,
               runtime: Optional[Mapping[str, Any]] = None,
               progress: bool = True):
    if jobs < 2:
      raise ValueError(f'a pool needs ≥ 2 jobs, got {jobs}.')
    self.jobs = jobs
    self.setup = WorkerSetup(
        intra_threads=intra_threads,
        inter_threads=max(1, default_jobs() // jobs),
        runtime=dict(runtime or {}), progress=progress)
    self.display = _Display(progress)
    self._workers: list[_Worker] = []

  def workers(self, wanted: int) -> list[_Worker]:
    """The workers, starting more (up to `jobs`) while fewer than `wanted`."""
    while len(self._workers) < min(wanted, self.jobs):
      self._workers.append(_Worker(len(self._workers), self.setup))
    return self._workers

  def slot(self, slot: int) -> _Worker:
    return self._workers[slot]

  def replace(self, worker: _Worker) -> None:
    """A new process in the slot of a worker that died."""
    worker.process.join(1)
    worker.conn.close()
    self._workers[worker.slot] = _Worker(worker.slot, self.setup)

  def close(self) -> None:
    self.display.close()
    for worker in self._workers:
      worker.stop()
    self._workers = []

  def __enter__(self):
    return self

  def __exit__(self, *unused):
    self.close()


def make_pool(jobs: int, **kwargs) -> Optional[Pool]:
  """A pool for jobs ≥ 2; None (run inline) for 1."""
  if jobs < 1:
    raise ValueError(f'jobs must be ≥ 1, got {jobs}.')
  return Pool(jobs, **kwargs) if jobs > 1 else None


# ---------------------------------------------------------------------------
# The scheduler.
# ---------------------------------------------------------------------------


def pick(ready: Sequence[tuple], own: set, others: set) -> int:
  """The index in `ready` (a heap of (order, count, task, then)) of the task
  an idle worker takes next.

  Among the tasks of the first priority class (cheap, eager, other; their
  order's first element): the first in order whose affinity the worker has
  (`own`: it built that process, so the task skips a build), else the first
  whose affinity no other worker has, else simply the first. A method's runs
  thus stay on one worker while there is other work, and no worker waits.
  """
  first = 0  # The heap's smallest.
  head_class = ready[first][0][0]
  best = {}  # preference → index
  for i, (order, _, task, _) in enumerate(ready):
    if order[0] != head_class or task.affinity is None:
      continue
    rank = (0 if task.affinity in own else
            1 if task.affinity not in others else None)
    if rank is not None and (rank not in best or
                             ready[i][:2] < ready[best[rank]][:2]):
      best[rank] = i
  return best.get(0, best.get(1, first))


class Scheduler:
  """Runs submitted tasks (and those their callbacks submit) to the end.

  Args:
    pool: the workers, or None to run each task in this process.
    data_cache, algorithm_cache: this process's caches (inline tasks use them;
      the parent's callbacks may too).
    log: where result lines and failures go.
  """

  def __init__(self, pool: Optional[Pool], data_cache: caches.DataCache,
               algorithm_cache: Optional[caches.AlgorithmCache] = None,
               log: Callable[[str], None] = print):
    from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
    self.pool = pool
    self.context = Context(data_cache,
                           algorithm_cache or caches.AlgorithmCache(), log)
    # Algorithms the workers built for these tasks (a summary figure).
    self.worker_builds = 0
    self.failed: list[str] = []
    self._ready: list = []  # heap of (order, count, task, then)
    self._count = itertools.count()

  def log(self, text: str) -> None:
    if self.pool is not None:
      self.pool.display.write(text, self.context.log)
    else:
      self.context.log(text)

  @property
  def builds(self) -> int:
    """Algorithms built for these tasks, here and in the workers."""
    return self.context.algorithm_cache.builds + self.worker_builds

  def submit(self, task: Task,
             then: Optional[Callable[[Any], None]] = None) -> None:
    """Queues `task`; `then(result)` runs here when it succeeds."""
    order = (task.key,)
    if self.pool is not None:  # Cheap ones first, then eager ones.
      order = (0 if task.cheap else 1 if task.eager else 2,) + order
    heapq.heappush(self._ready, (order, next(self._count), task, then))

  def run(self) -> None:
    """Runs every queued task (and those they submit).

    Raises:
      RunsFailed: (with a pool) some tasks failed; each was logged then.
      Any error of a task, at once, without a pool.
    """
    if self.pool is None:
      while self._ready:
        self._run_here(*heapq.heappop(self._ready)[2:])
      return
    failed_before = len(self.failed)
    self._run_in_pool()
    if len(self.failed) > failed_before:
      raise RunsFailed(self.failed[failed_before:])

  def _run_here(self, task: Task, then) -> None:
    value = task.fn(self.context, *task.args)
    if then is not None:
      then(value)

  def _fail(self, task: Task, reason: str) -> None:
    self.failed.append(task.label)
    self.pool.display.error(f'error: run {task.label!r} failed: {reason}')

  def _run_in_pool(self) -> None:
    pool = self.pool
    running: dict[int, tuple] = {}  # task id → (task, then, worker)
    ids = itertools.count()
    try:
      while self._ready or running:
        while self._ready and self._ready[0][2].cheap:
          self._run_here(*heapq.heappop(self._ready)[2:])
        if not (self._ready or running):
          break
        workers = pool.workers(len(self._ready) + len(running))
        for worker in workers:
          if worker.ready and worker.task_id is None and self._ready:
            task, then = self._take(worker, workers)
            task_id = next(ids)
            worker.task_id = task_id
            if task.affinity is not None:
              worker.affinities.add(task.affinity)
            running[task_id] = (task, then, worker)
            worker.conn.send((task_id, task, results.held_dirs()))
        waiting = {}
        for worker in workers:
          waiting[worker.conn] = worker
          waiting[worker.process.sentinel] = worker
        for ready in mp_connection.wait(list(waiting)):
          worker = waiting[ready]
          if pool.slot(worker.slot) is not worker:
            continue  # Replaced already (its pipe and its sentinel both woke).
          if ready is worker.conn:
            self._receive(worker, running)
          elif not worker.conn.poll():
            self._worker_died(worker, running)
    except BaseException:
      # An error here (Ctrl-C, a callback's): stop the runs under way; the
      # pool's close() reaps them. Their finished rounds are on disk.
      for _, _, worker in running.values():
        worker.process.kill()
      raise

  def _take(self, worker: _Worker, workers: list[_Worker]) -> tuple:
    others = set().union(*(w.affinities for w in workers if w is not worker))
    index = pick(self._ready, worker.affinities, others)
    _, _, task, then = self._ready[index]
    self._ready[index] = self._ready[-1]
    self._ready.pop()
    heapq.heapify(self._ready)
    return task, then

  def _receive(self, worker: _Worker, running) -> None:
    try:
      message = worker.conn.recv()
    except (EOFError, OSError):
      self._worker_died(worker, running)
      return
    kind = message[0]
    if kind == 'ready':
      worker.ready = True
    elif kind == 'setup_failed':
      raise JobsError(f'a --jobs worker could not start: {message[1]}')
    elif kind == 'progress':
      self.pool.display.progress(worker.slot, *message[1:])
    elif kind == 'log':
      self.log(message[1])
    else:
      task, then, _ = running.pop(message[1])
      worker.task_id = None
      if kind == 'failed':
        self._fail(task, message[2])
      else:
        value, builds = message[2], message[3]
        self.worker_builds += builds
        if then is not None:
          then(value)

  def _worker_died(self, worker: _Worker, running) -> None:
    code = worker.process.exitcode
    if worker.task_id is not None:
      task, _, _ = running.pop(worker.task_id)
      self._fail(task, f'its worker process (pid {worker.process.pid}) died '
                 f'(exit code {code})')
    elif not worker.ready:
      raise JobsError(f'a --jobs worker exited while starting (exit code '
                      f'{code}).')
    self.pool.replace(worker)
