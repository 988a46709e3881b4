"""`InProcessContext`, TFF's execution context of this package, and its set-up.

Compiles a computation once, runs its clients on per-device worker threads and
records where; `set_inprocess_context` sets the devices up and installs it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
from typing import Callable, Optional, Sequence
import weakref

import tensorflow_federated as tff

from tff_hgb.runtime import options
from tff_hgb.runtime.inprocess import _tff_internals
from tff_hgb.runtime.inprocess import devices as devices_lib
from tff_hgb.runtime.inprocess import interpreter
from tff_hgb.runtime.inprocess import tf_functions
from tff_hgb.runtime.inprocess import value_utils
from tff_hgb.runtime.inprocess._tff_internals import computation_types
from tff_hgb.runtime.inprocess._tff_internals import placements


DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE = (
    options.DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE)
# Oldest entries are dropped beyond this many (long runs).
PLACEMENT_LOG_LIMIT = 100_000

# The worker threads' device, slot and client, read by BoundTensorFlow.
_THREAD = tf_functions.THREAD


class InProcessContext(_tff_internals.SyncContext):
  """Runs TFF computations in this process, clients spread over `devices`."""

  def __init__(self, devices: Sequence[str], *,
               max_clients_in_flight_per_device: int =
               DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE,
               default_num_clients: int = 0,
               compiler_fn: Optional[Callable] = None):
    """Use `set_inprocess_context`, which also sets the devices up.

    Args:
      devices: TensorFlow device names, e.g. ['/device:GPU:0'].
      max_clients_in_flight_per_device: worker threads (and so clients being
        computed at once) per device.
      default_num_clients: CLIENTS cardinality when no argument is placed at
        CLIENTS (as `runtime.set_local_context`).
      compiler_fn: lowers a computation; default TFF's native pipeline.
    """
    if not devices:
      raise ValueError('InProcessContext needs at least one device.')
    if max_clients_in_flight_per_device < 1:
      raise ValueError('max_clients_in_flight_per_device must be >= 1, got '
                       f'{max_clients_in_flight_per_device}.')
    self.devices = list(devices)
    self.max_clients_in_flight_per_device = max_clients_in_flight_per_device
    self.default_num_clients = default_num_clients
    self._compiler_fn = (compiler_fn or
                         tff.backends.native.desugar_and_transform_to_native)
    self._programs: dict[int, tuple[weakref.ref, interpreter.Program]] = {}
    self._lock = threading.Lock()
    self.placement_log = collections.deque(maxlen=PLACEMENT_LOG_LIMIT)
    self._pools = [self._make_pool(i) for i in range(len(self.devices))]

  def _make_pool(self, index: int):
    slots = queue.SimpleQueue()
    for slot in range(self.max_clients_in_flight_per_device):
      slots.put(f'd{index}s{slot}')
    device = self.devices[index]

    def initializer():
      _THREAD.context = self
      _THREAD.device = device
      _THREAD.slot = slots.get_nowait()
      _THREAD.client = None

    return concurrent.futures.ThreadPoolExecutor(
        max_workers=self.max_clients_in_flight_per_device,
        thread_name_prefix=f'inprocess-{device}', initializer=initializer)

  def __repr__(self):
    return (f'InProcessContext(devices={self.devices}, '
            'max_clients_in_flight_per_device='
            f'{self.max_clients_in_flight_per_device})')

  def describe(self) -> str:
    return (f'in-process TensorFlow on {", ".join(self.devices)} '
            f'(<= {self.max_clients_in_flight_per_device} clients in flight '
            'per device)')

  def close(self) -> None:
    """Stops the worker threads (the context cannot be used afterwards)."""
    for pool in self._pools:
      pool.shutdown(wait=True, cancel_futures=True)

  def clear_placement_log(self) -> None:
    self.placement_log.clear()

  def _record(self, client, device, slot, computation, output_device):
    self.placement_log.append({
        'client': client, 'device': device, 'slot': slot,
        'computation': computation, 'output_device': output_device})

  def _map_clients(self, fn, values: list) -> list:
    if getattr(fn, 'inline', False) or not values:
      return [fn(v) for v in values]
    futures = [self._pools[i % len(self._pools)].submit(
        self._client_task, fn, value, i) for i, value in enumerate(values)]
    try:
      return [f.result() for f in futures]
    except BaseException:
      for f in futures:
        f.cancel()
      raise

  def _client_task(self, fn, value, client: int):
    _THREAD.client = client
    try:
      return fn(value)
    except Exception as e:
      e.add_note(f'(in-process context: client {client} on {_THREAD.device})')
      raise
    finally:
      _THREAD.client = None

  def _program(self, comp) -> interpreter.Program:
    """Compiles `comp` once; forgotten when `comp` is garbage-collected."""
    key = id(comp)
    with self._lock:
      entry = self._programs.get(key)
    if entry is not None and entry[0]() is comp:
      return entry[1]
    compiled = self._compiler_fn(comp)
    program = interpreter.Program(compiled.to_building_block())

    def forget(ref, key=key):
      with self._lock:
        if key in self._programs and self._programs[key][0] is ref:
          del self._programs[key]

    with self._lock:
      self._programs[key] = (weakref.ref(comp, forget), program)
    return program

  def invoke(self, comp, arg):
    type_signature = comp.type_signature
    if not isinstance(type_signature, computation_types.FunctionType):
      raise ValueError(f'Expected a tff.FunctionType, found {type_signature}.')
    program = self._program(comp)
    parameter_type = program.type_signature.parameter
    num_clients = self.default_num_clients
    internal_arg = None
    if arg is not None:
      if parameter_type is None:
        raise TypeError(f'{comp} takes no argument, got one.')
      cardinalities = _tff_internals.infer_cardinalities(
          arg, parameter_type)
      num_clients = cardinalities.get(placements.CLIENTS, num_clients)
      internal_arg = value_utils.ingest(arg, parameter_type, num_clients)
    result = program(interpreter.Invocation(self, num_clients), internal_arg)
    exported = value_utils.export(result, program.type_signature.result)
    return _tff_internals.type_to_py_container(exported,
                                                 type_signature.result)


def set_inprocess_context(
    devices: devices_lib.DeviceSpec = None,
    *,
    max_clients_in_flight_per_device: int =
    DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE,
    default_num_clients: int = 0,
) -> InProcessContext:
  """Installs the in-process context as TFF's default context.

  Must run before TensorFlow initialises its devices in this process (see the
  package docstring): first thing in `main`, or in a fresh process.

  Args:
    devices: None (all GPUs if any, else the CPU), 'cpu', 'cpu:N' (N logical
      CPU devices), 'gpu' (all GPUs, memory growth on), 'gpu:N', or a list of
      device names such as ['/device:GPU:0', '/device:GPU:1'].
    max_clients_in_flight_per_device: clients computed at once on each device
      (bounds memory).
    default_num_clients: CLIENTS cardinality when no argument is placed there.

  Returns:
    The installed `InProcessContext` (its `placement_log` records where each
    client computation ran).

  Raises:
    ValueError: malformed `devices`.
    DeviceConfigurationError: the devices do not exist or were asked for too
      late (TensorFlow already initialised).
  """
  names = devices_lib.configure_devices(devices)
  context = InProcessContext(
      names, max_clients_in_flight_per_device=max_clients_in_flight_per_device,
      default_num_clients=default_num_clients)
  tff.framework.get_context_stack().set_default_context(context)
  return context
