"""TFF execution contexts on workers we own (local C++ runtime, local/remote workers).

`set_local_context()` is the one call the library, binaries and test session use
instead of TFF's default context: same C++ runtime, but the worker is started by
`workers.start_worker` and therefore never outlives us.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Optional, Sequence

import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.executor_stacks import python_executor_stacks
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation

from tff_hgb.runtime import options
from tff_hgb.runtime import workers

DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS = (
    options.DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS)


class _WorkerConnection:
  """Connects to one worker; restarts it only if we own it and it died."""

  def __init__(self, address: str,
               owned: Optional[workers.WorkerProcess] = None,
               restart_kwargs: Optional[dict] = None):
    self.address = address
    self._owned = owned
    self._restart_kwargs = restart_kwargs
    self._stub = None
    self._lock = threading.Lock()

  def stub(self):
    with self._lock:
      if self._stub is not None and self._stub.is_ready:
        return self._stub
      if self._owned is not None and not self._owned.alive():
        raise workers.WorkerError(
            f'TFF worker {self.address} (pid {self._owned.pid}) died '
            f'(exit code {self._owned.process.returncode}); '
            'rerun with --resume to continue from the last saved round.')
      try:
        self._stub = workers.wait_until_ready(
            self.address, timeout=60.0 if self._stub is None else 5.0,
            process=self._owned)
      except workers.WorkerError as e:
        raise workers.WorkerError(
            f'{e} Rerun with --resume to continue from the last saved round.'
        ) from None
      return self._stub


def _executor_factory(connection: _WorkerConnection, default_num_clients: int):
  def stack_fn(cardinalities):
    # Workers refuse a computation whose CLIENTS cardinality is unknown, e.g. a
    # sub-round of the mergeable context that has no client-placed argument.
    if cardinalities.get(placements.CLIENTS) is None:
      cardinalities[placements.CLIENTS] = default_num_clients
    executor = remote_executor.RemoteExecutor(connection.stub())
    executor.set_cardinalities(cardinalities)
    return executor

  return python_executor_stacks.ResourceManagingExecutorFactory(
      executor_stack_fn=stack_fn)


def _context(connection, default_num_clients, asynchronous=False):
  cls = (tff.framework.AsyncExecutionContext
         if asynchronous else tff.framework.SyncExecutionContext)
  return cls(
      executor_fn=_executor_factory(connection, default_num_clients),
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )


def set_local_context(
    *,
    max_concurrent_computation_calls: int = DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS,
    default_num_clients: int = 0,
) -> workers.WorkerProcess:
  """Installs TFF's C++ runtime on one worker we own as the default context.

  Args:
    max_concurrent_computation_calls: how many client computations the worker
      runs at once (bounds memory for large rounds).
    default_num_clients: CLIENTS cardinality when a computation has no
      client-placed argument.

  Returns:
    The worker process (stopped at exit, on SIGTERM and Ctrl-C).
  """
  worker = workers.start_worker(
      max_concurrent_computation_calls=max_concurrent_computation_calls)
  connection = _WorkerConnection(worker.address, owned=worker)
  connection.stub()
  tff.framework.get_context_stack().set_default_context(
      _context(connection, default_num_clients))
  return worker


def set_multi_worker_context(
    addresses: Sequence[str] = (),
    *,
    local_workers: int = 0,
    max_concurrent_computation_calls: int = DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS,
) -> list[str]:
  """Splits each round's clients across several TFF workers.

  Uses TFF's mergeable execution context: a computation whose aggregations do
  not depend on one another (every algorithm in this package) is compiled into
  per-worker parts that are merged on this process.

  Args:
    addresses: 'host:port' of workers already running elsewhere.
    local_workers: number of extra workers to start on 127.0.0.1 (owned).
    max_concurrent_computation_calls: bound for the workers we start.

  Returns:
    The addresses used, in order.
  """
  connections = []
  for address in addresses:
    connections.append(_WorkerConnection(address))
  for _ in range(local_workers):
    worker = workers.start_worker(
        max_concurrent_computation_calls=max_concurrent_computation_calls)
    connections.append(_WorkerConnection(worker.address, owned=worker))
  if not connections:
    raise ValueError('set_multi_worker_context needs at least one worker.')
  for connection in connections:
    connection.stub()
  contexts = [_context(c, 0, asynchronous=True) for c in connections]
  tff.backends.native.set_mergeable_comp_execution_context(contexts)
  return [c.address for c in connections]


@contextlib.contextmanager
def local_runtime(**kwargs):
  """`with local_runtime(): ...` — the local context, stopped on leaving."""
  worker = set_local_context(**kwargs)
  try:
    yield worker
  finally:
    worker.stop()
