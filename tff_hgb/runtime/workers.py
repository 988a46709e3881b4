"""TFF worker processes that we start, own and always stop.

`import tensorflow_federated` installs a default context that starts
`tensorflow_federated/data/worker_binary` lazily and leaves it running after
Python exits (it is re-parented to init and keeps our stdout/stderr open, so a
pipeline such as `python run.py | cat` never ends). Every worker this project
starts goes through `start_worker`, which

* asks the kernel to SIGKILL the worker when the process that started it dies
  (`PR_SET_PDEATHSIG`), so even `kill -9` of Python leaves no worker behind;
* never hands the worker our stdout/stderr (its log goes to a file or nowhere);
* records the worker, so `stop_all_workers` (run at exit, on SIGTERM and on
  Ctrl-C) stops it explicitly;
* prints one warning line to stderr: TFF 0.87's worker_binary has no
  bind-address flag (its server listens on `[::]:<port>`, i.e. every IPv4 and
  IPv6 interface, with insecure credentials), so it cannot be confined to
  loopback and anyone who reaches the port can run TensorFlow code as this user
  until it stops (docs/RELIABILITY.md, "Security").
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import getpass
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

import portpicker

_PR_SET_PDEATHSIG = 1
# glibc malloc arenas of the worker (unless MALLOC_ARENA_MAX is already set).
# With glibc's default (8 per core) the worker's resident memory grew by 51%
# from round 10 to round 100 of an HGB run (freed memory stays spread over
# many per-thread arenas); with 2 it grew by 15%, flat after round 40, and the
# round time did not change beyond noise (docs/BENCHMARKS.md).
DEFAULT_MALLOC_ARENA_MAX = 2
_EXPOSED_WARNING = (
    'warning: TFF worker_binary (pid {pid}) listens on *:{port} (all IPv4 and '
    'IPv6 interfaces, no authentication) until it stops: anyone who can reach '
    'port {port} can run code as user {user}; it cannot bind to loopback only, '
    'so firewall the port (docs/RELIABILITY.md, "Security").')
_LOCK = threading.Lock()
_STARTED: list["WorkerProcess"] = []


class WorkerError(RuntimeError):
  """A TFF worker could not be started or reached."""


def worker_binary_path() -> str:
  """Path of the C++ worker shipped in the tensorflow-federated wheel."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  spec = importlib.util.find_spec('tensorflow_federated')
  if spec is None or not spec.submodule_search_locations:
    raise WorkerError('tensorflow_federated is not installed.')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'data',
                      'worker_binary')
  if not os.path.isfile(path):
    raise WorkerError(f'Expected a TFF worker binary at {path}.')
  return path


def _die_with_parent() -> None:
  """Runs in the child between fork and exec."""
  libc = ctypes.CDLL('libc.so.6', use_errno=True)
  libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  # Own process group: Ctrl-C in a terminal reaches Python, which then stops the
  # worker in order, instead of killing the worker in the middle of a call.
  os.setpgid(0, 0)


@dataclasses.dataclass
class WorkerProcess:
  """A worker_binary we started on this machine."""

  process: subprocess.Popen
  host: str
  port: int

  @property
  def address(self) -> str:
    return f'{self.host}:{self.port}'

  @property
  def pid(self) -> int:
    return self.process.pid

  def alive(self) -> bool:
    return self.process.poll() is None

  def stop(self, timeout: float = 5.0) -> None:
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGINT)
      try:
        self.process.wait(timeout=timeout)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    with _LOCK:
      if self in _STARTED:
        _STARTED.remove(self)


def start_worker(
    *,
    port: Optional[int] = None,
    host: str = '127.0.0.1',
    max_concurrent_computation_calls: int = -1,
    log_path: Optional[str] = None,
    die_with_parent: bool = True,
) -> WorkerProcess:
  """Starts a TFF worker_binary serving gRPC on `port` (picked if None).

  Args:
    port: TCP port; an unused one is picked when None.
    host: the address clients use to reach it; the binary itself listens on
      all interfaces whatever this says (it has no bind-address flag).
    max_concurrent_computation_calls: bound on concurrent calls of one
      computation inside the worker (bounds memory); non-positive = no bound.
    log_path: file for the worker's own output; discarded when None.
    die_with_parent: SIGKILL the worker when this process dies.

  Returns:
    The started `WorkerProcess`; it is stopped by `stop_all_workers`.
  """
  _install_exit_handlers()
  port = port or portpicker.pick_unused_port()
  args = [
      worker_binary_path(),
      f'--port={port}',
      f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
  ]
  env = dict(os.environ)
  env.setdefault('MALLOC_ARENA_MAX', str(DEFAULT_MALLOC_ARENA_MAX))
  log = open(log_path, 'ab') if log_path else subprocess.DEVNULL  # pylint: disable=consider-using-with
  try:
    process = subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        preexec_fn=_die_with_parent if die_with_parent else None,
        close_fds=True,
    )
  finally:
    if log_path:
      log.close()
  worker = WorkerProcess(process=process, host=host, port=port)
  with _LOCK:
    _STARTED.append(worker)
  # Said every time: the exposure lasts as long as this worker does.
  print(_EXPOSED_WARNING.format(pid=process.pid, port=port, user=_user()),
        file=sys.stderr, flush=True)
  return worker


def _user() -> str:
  try:
    return getpass.getuser()
  except Exception:  # pylint: disable=broad-except
    return f'uid {os.getuid()}'  # No passwd entry (e.g. some containers).


def wait_until_ready(worker_address: str, timeout: float = 60.0,
                     process: Optional[WorkerProcess] = None):
  """Returns a ready `RemoteExecutorGrpcStub` for `worker_address`.

  Raises:
    WorkerError: naming the worker, if it exits or does not answer in time.
  """
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_federated.python.core.impl.executors import remote_executor_grpc_stub  # pylint: disable=g-import-not-at-top

  options = [('grpc.max_message_length', 2 * 10**9),
             ('grpc.max_receive_message_length', 2 * 10**9),
             ('grpc.max_send_message_length', 2 * 10**9)]
  channel = grpc.insecure_channel(worker_address, options)
  stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(channel)
  deadline = time.monotonic() + timeout
  while not stub.is_ready:
    if process is not None and not process.alive():
      raise WorkerError(
          f'TFF worker {worker_address} (pid {process.pid}) exited with code '
          f'{process.process.returncode} before it became ready.')
    if time.monotonic() > deadline:
      raise WorkerError(
          f'TFF worker {worker_address} did not answer within {timeout:.0f}s.')
    time.sleep(0.1)
  return stub


def started_workers() -> list[WorkerProcess]:
  with _LOCK:
    return list(_STARTED)


def stop_all_workers() -> None:
  """Stops every worker this process started (idempotent)."""
  for worker in started_workers():
    try:
      worker.stop()
    except Exception:  # pylint: disable=broad-except
      pass


_HANDLERS_INSTALLED = False


def _on_sigterm(signum, frame):
  del frame
  stop_all_workers()
  # Exit the way an unhandled SIGTERM would, after cleaning up.
  signal.signal(signum, signal.SIG_DFL)
  os.kill(os.getpid(), signum)


def _install_exit_handlers() -> None:
  global _HANDLERS_INSTALLED
  if _HANDLERS_INSTALLED:
    return
  _HANDLERS_INSTALLED = True
  atexit.register(stop_all_workers)
  if threading.current_thread() is threading.main_thread():
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
      signal.signal(signal.SIGTERM, _on_sigterm)
    # SIGINT raises KeyboardInterrupt, which unwinds to atexit.
