"""An in-process TFF execution context: TensorFlow on this process's devices.

The pip wheel's `worker_binary` is built without CUDA, so on a GPU host every
computation of TFF's C++ runtime still runs on the CPU. This context runs the
same computations in this Python process instead, where TensorFlow does see the
GPUs:

1. Compile: `tff.backends.native.desugar_and_transform_to_native`, the pipeline
   our C++ contexts use (`runtime.local`), lowers a computation to a
   call-dominant building block made of lambdas, blocks, calls, selections,
   structs, references, literals, federated intrinsics and `CompiledComputation`s
   of the TensorFlow kind.
2. Interpret: each building block node is turned once into a Python closure;
   federated values are Python values (SERVER: the value; CLIENTS: a list with
   one value per client, also when all-equal), sequences are `tf.data.Dataset`s.
   All 27 intrinsics of TFF 0.87 are implemented (`SUPPORTED_INTRINSICS`).
3. TensorFlow: every `CompiledComputation` is imported into a
   `tf.compat.v1.wrap_function` graph under `tf.device(device)` (as TFF's
   `tensorflow_utils.deserialize_and_call_tf_computation` does, minus its
   static-shape check, see `_import_graph`), once per (computation, device,
   slot) and cached while a compiled program uses it. Its initializer runs
   before every call, so a call is a pure function as in the C++ runtime
   (which uses fresh resource containers). Resource shared names get a suffix
   unique to the (device, slot), so concurrent clients never share variables,
   and library functions are renamed per computation, because all imports
   share the process's one function library.
4. Devices: the clients of a `federated_map` (and `federated_eval_at_clients`)
   go round-robin over the devices (client i on device i mod D); each device has
   `max_clients_in_flight_per_device` worker threads, which bounds memory.
   Server-side work (`federated_apply`, aggregation) runs on the first device.
   `context.placement_log` records which device ran each client computation.

Semantics that differ from the C++ runtime only in float rounding:
`federated_aggregate` folds the clients' values in client order (sequential
`accumulate`, then `report`, `merge` unused), so results do not depend on the
number of devices.

Device configuration must happen before TensorFlow initialises its devices in
this process (first eager op, first dataset, `tf.config.list_logical_devices`):
`devices='cpu:N'` creates N logical CPU devices with
`tf.config.set_logical_device_configuration`, and GPUs get memory growth. Call
`set_inprocess_context` first thing in `main` (before building data or models);
if it comes too late for `cpu:N` it raises `DeviceConfigurationError`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import logging
import queue
import re
import threading
import weakref
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow.python.eager import context as tf_context
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.compiler import intrinsic_defs
from tensorflow_federated.python.core.impl.context_stack import context_base
from tensorflow_federated.python.core.impl.executors import cardinalities_utils
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import placements
from tensorflow_federated.python.core.impl.types import type_conversions
from tensorflow_federated.python.core.impl.types import type_serialization
from tensorflow_federated.python.core.impl.utils import tensorflow_utils
from tensorflow_federated.python.tensorflow_libs import graph_utils
from tensorflow_federated.python.tensorflow_libs import serialization_utils

DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE = 2
# Oldest entries are dropped beyond this many (long runs).
PLACEMENT_LOG_LIMIT = 100_000

DeviceSpec = Union[None, str, Sequence[str]]

_TensorType = computation_types.TensorType
_SequenceType = computation_types.SequenceType
_StructType = computation_types.StructType
_FederatedType = computation_types.FederatedType


class DeviceConfigurationError(RuntimeError):
  """The requested devices cannot be set up in this process."""


class UnsupportedComputationError(NotImplementedError):
  """The computation uses a construct this context does not interpret."""


# ---------------------------------------------------------------------------
# Devices.


def parse_device_spec(devices: DeviceSpec) -> tuple[str, object]:
  """Checks a device spec without touching TensorFlow's device state.

  Args:
    devices: None (all GPUs if any, else the CPU), 'cpu', 'cpu:N' (N logical
      CPU devices), 'gpu' (all GPUs), 'gpu:N' (the first N GPUs), or device
      names ('/device:GPU:0', ...) as a list or a comma-separated string.

  Returns:
    ('auto', None), ('cpu', N), ('gpu', N or None) or ('names', [names]).

  Raises:
    ValueError: for a malformed spec.
  """
  if devices is None:
    return ('auto', None)
  if isinstance(devices, str):
    spec = devices.strip()
    match = re.fullmatch(r'(cpu|gpu)(?::(\d+))?', spec.lower())
    if match:
      kind, count = match.group(1), match.group(2)
      if count is not None and int(count) < 1:
        raise ValueError(f'devices={devices!r}: the device count must be >= 1.')
      if kind == 'cpu':
        return ('cpu', int(count) if count else 1)
      return ('gpu', int(count) if count else None)
    names = [n.strip() for n in spec.split(',') if n.strip()]
  else:
    names = [str(n).strip() for n in devices]
  if not names:
    raise ValueError(f'devices={devices!r}: no device given.')
  canonical = []
  for name in names:
    try:
      parsed = tf.DeviceSpec.from_string(name)
    except ValueError:
      parsed = None
    if (parsed is None or not parsed.device_type or
        parsed.device_type.upper() not in ('CPU', 'GPU') or
        parsed.device_index is None):
      raise ValueError(
          f'devices={devices!r}: {name!r} is not a device name such as '
          "'/device:GPU:0'; or use 'cpu', 'cpu:N', 'gpu' or 'gpu:N'.")
    canonical.append(
        f'/device:{parsed.device_type.upper()}:{parsed.device_index}')
  if len(set(canonical)) != len(canonical):
    raise ValueError(f'devices={devices!r}: a device is listed twice.')
  return ('names', canonical)


def _enable_gpu_memory_growth() -> None:
  for gpu in tf.config.list_physical_devices('GPU'):
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
      if not tf.config.experimental.get_memory_growth(gpu):
        logging.warning(
            'TensorFlow initialised %s before the in-process context was set '
            'up, without memory growth: it may hold most of the GPU memory.',
            gpu.name)


_TOO_LATE = (
    'TensorFlow has already initialised its devices in this process, so {what} '
    'can no longer be set up (TensorFlow allows it only before the first '
    'eager op, dataset or device query). Call set_inprocess_context / '
    'configure_runtime first thing in main, before building data, models or '
    'processes, or run in a fresh process. Devices now: {now}.')


def configure_devices(devices: DeviceSpec) -> list[str]:
  """Sets up and returns the device names for `devices` (see parse_device_spec).

  Raises:
    ValueError: malformed spec.
    DeviceConfigurationError: devices absent, or configured too late.
  """
  kind, value = parse_device_spec(devices)
  if kind == 'auto':
    kind, value = ('gpu', None) if tf.config.list_physical_devices('GPU') else (
        'cpu', 1)
  if kind == 'cpu':
    count = value
    if count > 1:
      cpu = tf.config.list_physical_devices('CPU')[0]
      try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
      except RuntimeError:
        logical = tf.config.list_logical_devices('CPU')
        if len(logical) < count:
          raise DeviceConfigurationError(_TOO_LATE.format(
              what=f'{count} logical CPU devices (devices=cpu:{count})',
              now=[d.name for d in logical])) from None
    # Enumerates (and therefore initialises) the devices.
    logical = [d.name for d in tf.config.list_logical_devices('CPU')]
    return [_short(name) for name in logical[:count]]
  _enable_gpu_memory_growth()
  if kind == 'gpu':
    gpus = [_short(d.name) for d in tf.config.list_logical_devices('GPU')]
    if not gpus:
      raise DeviceConfigurationError(
          f'devices={devices!r}, but TensorFlow sees no GPU in this process '
          '(check the CUDA libraries and CUDA_VISIBLE_DEVICES); use '
          "devices='cpu' or 'cpu:N' to run on the CPU.")
    if value is not None:
      if value > len(gpus):
        raise DeviceConfigurationError(
            f'devices={devices!r}, but TensorFlow sees only {len(gpus)} GPU(s): '
            f'{gpus}.')
      gpus = gpus[:value]
    return gpus
  available = [_short(d.name) for d in tf.config.list_logical_devices()]
  missing = [n for n in value if n not in available]
  if missing:
    raise DeviceConfigurationError(
        f'devices={devices!r}: {missing} not among the devices TensorFlow sees '
        f'in this process: {available}. For several logical CPU devices use '
        "devices='cpu:N'.")
  return list(value)


def _short(name: str) -> str:
  spec = tf.DeviceSpec.from_string(name)
  return f'/device:{spec.device_type.upper()}:{spec.device_index}'


# ---------------------------------------------------------------------------
# Values: flattening and packing by TFF type.


def _tf_dtype(tensor_type: computation_types.TensorType) -> tf.DType:
  if np.dtype(tensor_type.dtype).type in (np.str_, np.bytes_, np.object_):
    return tf.string
  return tf.as_dtype(tensor_type.dtype)


def _leaf_types(type_spec) -> list[computation_types.Type]:
  if type_spec is None:
    return []
  if isinstance(type_spec, _StructType):
    return [leaf for _, t in structure.iter_elements(type_spec)
            for leaf in _leaf_types(t)]
  if isinstance(type_spec, (_TensorType, _SequenceType)):
    return [type_spec]
  raise UnsupportedComputationError(
      f'A TensorFlow computation with a value of type {type_spec}.')


def _element(value, index: int, name: Optional[str]):
  if isinstance(value, structure.Struct):
    return value[index]
  if isinstance(value, collections.abc.Mapping):
    return value[name] if name is not None else list(value.values())[index]
  if isinstance(value, (list, tuple)):
    return value[index]
  return structure.from_container(value)[index]


def _flatten(type_spec, value) -> list[object]:
  if isinstance(type_spec, _StructType):
    out = []
    for index, (name, element_type) in enumerate(
        structure.iter_elements(type_spec)):
      out.extend(_flatten(element_type, _element(value, index, name)))
    return out
  return [value]


def _pack(type_spec, leaves: collections.abc.Iterator, leaf_fn=None):
  if isinstance(type_spec, _StructType):
    return structure.Struct([(name, _pack(t, leaves, leaf_fn))
                             for name, t in structure.iter_elements(type_spec)])
  leaf = next(leaves)
  return leaf_fn(type_spec, leaf) if leaf_fn else leaf


def _struct_of(type_spec: computation_types.StructType, values) -> structure.Struct:
  names = [name for name, _ in structure.iter_elements(type_spec)]
  return structure.Struct(list(zip(names, values)))


def _dataset_from_variant(variant, element_type):
  with tf.device('/device:CPU:0'):
    return tf.data.experimental.from_variant(
        variant, structure=type_conversions.type_to_tf_structure(element_type))


def _to_tf_structure(value, type_spec):
  """An internal value → the nested Python structure tf.data expects."""
  if isinstance(type_spec, _StructType):
    elements = [(name, _to_tf_structure(_element(value, i, name), t))
                for i, (name, t) in enumerate(structure.iter_elements(type_spec))]
    container = getattr(type_spec, 'python_container', None)
    if all(name for name, _ in elements) and elements:
      as_dict = collections.OrderedDict(elements)
      if container is not None and container is not collections.OrderedDict:
        try:
          return container(**as_dict)
        except TypeError:
          pass
      return as_dict
    return tuple(v for _, v in elements)
  return value


def _from_tf_structure(value, type_spec):
  """A dataset element (nested dicts/tuples) → an internal Struct."""
  if isinstance(type_spec, _StructType):
    return structure.Struct([
        (name, _from_tf_structure(_element(value, i, name), t))
        for i, (name, t) in enumerate(structure.iter_elements(type_spec))])
  return value


def _dataset_from_elements(elements: list, element_type) -> tf.data.Dataset:
  if not elements:
    return tensorflow_utils.make_data_set_from_elements(None, [], element_type)
  signature = tf.nest.map_structure(
      lambda s: tf.TensorSpec(s.shape, s.dtype),
      type_conversions.type_to_tf_structure(element_type))
  materialised = [_to_tf_structure(e, element_type) for e in elements]
  return tf.data.Dataset.from_generator(lambda: iter(materialised),
                                        output_signature=signature)


def _leafwise(fn, *values):
  first = values[0]
  if isinstance(first, structure.Struct):
    return structure.Struct([
        (name, _leafwise(fn, *[v[i] for v in values]))
        for i, (name, _) in enumerate(structure.iter_elements(first))])
  return fn(*values)


def _zeros(type_spec, num_clients: int):
  if isinstance(type_spec, _TensorType):
    if not type_spec.is_fully_defined():
      raise UnsupportedComputationError(
          f'Cannot make a zero of the not fully defined type {type_spec}.')
    return np.zeros(type_spec.shape, type_spec.dtype)
  if isinstance(type_spec, _StructType):
    return _struct_of(type_spec, [_zeros(t, num_clients)
                                  for _, t in structure.iter_elements(type_spec)])
  if isinstance(type_spec, _FederatedType):
    member = _zeros(type_spec.member, num_clients)
    if type_spec.placement is placements.CLIENTS:
      return [member] * num_clients
    return member
  raise UnsupportedComputationError(f'Cannot make a zero of type {type_spec}.')


def _add(a, b):
  return _leafwise(tf.add, a, b)


def _to_numpy(value):
  if isinstance(value, structure.Struct):
    return structure.Struct([(n, _to_numpy(v))
                             for n, v in structure.iter_elements(value)])
  if isinstance(value, list):
    return [_to_numpy(v) for v in value]
  if isinstance(value, tf.data.Dataset):
    return value
  if isinstance(value, (tf.Tensor, tf.Variable)):
    return value.numpy()
  return value


# ---------------------------------------------------------------------------
# TensorFlow computations, imported once per (device, slot).

_FUNCTIONS_LOCK = threading.Lock()
# Per thread: device, slot, client (pool threads), function-call options.
_THREAD = threading.local()
_SUFFIXES = itertools.count()
# Shared by all contexts and programs; an entry lives while a program uses it.
_TF_FUNCTIONS: 'weakref.WeakValueDictionary[bytes, _TensorFlowFunction]' = (
    weakref.WeakValueDictionary())


def _rename_functions(graph_def, suffix: str) -> None:
  """Renames (in place) the functions of a graph's library, and their uses.

  All imports share this process's one function library. Two TFF computations
  may each carry a function of the same name (e.g. `__inference_reduce_fn_N`)
  with different bodies, which TensorFlow refuses ("Attempting to add a
  duplicate function ... definitions differ"); the C++ runtime is immune as it
  gives each computation its own session. `suffix` is derived from the
  computation's proto, so imports of the same computation stay identical.
  """
  mapping = {f.signature.name: f'{f.signature.name}_{suffix}'
             for f in graph_def.library.function}
  if not mapping:
    return

  def fix_attr(value):
    if value.HasField('func'):
      fix_name_attr_list(value.func)
    if value.HasField('list'):
      for func in value.list.func:
        fix_name_attr_list(func)

  def fix_name_attr_list(func):
    if func.name in mapping:
      func.name = mapping[func.name]
    for nested in func.attr.values():
      fix_attr(nested)

  def fix_node(node):
    if node.op in mapping:
      node.op = mapping[node.op]
    for value in node.attr.values():
      fix_attr(value)

  for node in graph_def.node:
    fix_node(node)
  for function in graph_def.library.function:
    function.signature.name = mapping[function.signature.name]
    for node in function.node_def:
      fix_node(node)
    for value in function.attr.values():
      fix_attr(value)
  for gradient in graph_def.library.gradient:
    gradient.function_name = mapping.get(gradient.function_name,
                                         gradient.function_name)
    gradient.gradient_func = mapping.get(gradient.gradient_func,
                                         gradient.gradient_func)


def _import_graph(tf_proto, graph_def, inputs: list, suffix: str, token):
  """Imports a TFF TensorFlow computation into the current graph.

  What `tensorflow_utils.deserialize_and_call_tf_computation` does, on flat
  inputs (a dataset as its variant tensor), without its check of the outputs'
  static shapes against the declared type: after the compiler's Grappler pass,
  function-call outputs of TFF's own learning computations come back with less
  specific shapes, and that check rejects them (the C++ runtime does not check).

  Args:
    tf_proto: the computation's `pb.TensorFlow`.
    graph_def: its graph (functions renamed); not modified.
    inputs: flat input tensors in the order of the flattened parameter type.
    suffix: appended to the shared names of resources (unique per import).
    token: string tensor fed to the session token placeholder.

  Returns:
    (initializer op or None, flat list of output tensors; variants for
    sequences), in the order of the computation's flattened result type.
  """
  input_map = {}
  if tf_proto.HasField('parameter'):
    names = tensorflow_utils.extract_tensor_names_from_binding(
        tf_proto.parameter)
    if len(names) != len(inputs):
      raise ValueError(f'Expected {len(names)} inputs, got {len(inputs)}.')
    input_map = graph_utils.add_control_dep_mappings(dict(zip(names, inputs)))
  if tf_proto.session_token_tensor_name:
    input_map[tf_proto.session_token_tensor_name] = token
  output_names = tensorflow_utils.extract_tensor_names_from_binding(
      tf_proto.result)
  return_elements = list(output_names)
  if tf_proto.initialize_op:
    return_elements.append(tf_proto.initialize_op)
  graph_def = tensorflow_utils._uniquify_shared_names_with_suffix(  # pylint: disable=protected-access
      _copy(graph_def), suffix)
  imported = tf.graph_util.import_graph_def(
      graph_def, input_map, return_elements, name='subcomputation')
  init_op = imported[len(output_names)] if tf_proto.initialize_op else None
  return init_op, list(imported[:len(output_names)])


def _copy(graph_def):
  copy = type(graph_def)()
  copy.CopyFrom(graph_def)
  return copy


def _call_options():
  """Function-call options for our calls (cached per thread).

  Grappler stays on even if the user switched it off globally: without it, the
  eager function runtime ran TFF's compiled client-update graphs with a race
  (repeated calls with identical inputs gave different deltas in 12 of 27
  calls), while with TensorFlow's default Grappler passes they are
  deterministic and match the C++ runtime. Soft placement lets ops without a
  GPU kernel (e.g. tf.data) fall back to the CPU.
  """
  options = getattr(_THREAD, 'call_options', None)
  if options is None:
    current = tf_context.context().function_call_options
    config = tf.compat.v1.ConfigProto()
    config.ParseFromString(current.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = False
    config.allow_soft_placement = True
    options = tf_context.FunctionCallOptions(
        executor_type=current.executor_type, config_proto=config)
    _THREAD.call_options = options
  return options


@contextlib.contextmanager
def _our_call_options():
  context = tf_context.context()
  previous = context.function_call_options
  context.function_call_options = _call_options()
  try:
    yield
  finally:
    context.function_call_options = previous


class _Imported:
  """An imported computation: `main(*flat)`, and `init(*flat[i] for i in
  init_inputs)` to run first when the computation has variables."""
  __slots__ = ('main', 'init', 'init_inputs')

  def __init__(self, main, init, init_inputs=()):
    self.main = main
    self.init = init
    self.init_inputs = tuple(init_inputs)


def _inputs_needed(fetch, inputs: list) -> list[int]:
  """Indices of the `inputs` tensors that op `fetch` depends on."""
  wanted = {tensor.op: index for index, tensor in enumerate(inputs)}
  needed, seen, stack = set(), set(), [fetch]
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    if op in wanted:
      needed.add(wanted[op])
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return sorted(needed)


class _TensorFlowFunction:
  """One TFF TensorFlow computation as in-process callables."""

  def __init__(self, proto, name: str, key: bytes):
    self._proto = proto
    self.name = name
    self._key = key
    self._graph_def = None
    self._lock = threading.Lock()
    self._key_locks: dict[tuple[str, str], threading.Lock] = {}
    type_spec = type_serialization.deserialize_type(proto.type)
    self.parameter_type = type_spec.parameter
    self.result_type = type_spec.result
    self._parameter_leaves = _leaf_types(self.parameter_type)
    self._result_leaves = _leaf_types(self.result_type)
    self._instances: dict[tuple[str, str], _Imported] = {}
    self._folds: dict[tuple[str, str, int], Callable] = {}
    self.fold_traces = 0

  def _renamed_graph_def(self):
    with self._lock:
      if self._graph_def is None:
        graph_def = serialization_utils.unpack_graph_def(
            self._proto.tensorflow.graph_def)
        _rename_functions(graph_def, self._key[:8].hex())
        self._graph_def = graph_def
      return self._graph_def

  def _instance(self, device: str, slot: str) -> _Imported:
    key = (device, slot)
    imported = self._instances.get(key)
    if imported is None:
      with self._lock:
        key_lock = self._key_locks.setdefault(key, threading.Lock())
      with key_lock:
        imported = self._instances.get(key)
        if imported is None:
          imported = self._import(device, f'inprocess{next(_SUFFIXES)}')
          self._instances[key] = imported
    return imported

  def _import(self, device: str, suffix: str) -> _Imported:
    signature = [
        tf.TensorSpec(t.shape, _tf_dtype(t)) if isinstance(t, _TensorType)
        else tf.TensorSpec([], tf.variant) for t in self._parameter_leaves]
    found = {}

    def body(*flat):
      found['inputs'] = list(flat)
      with tf.device(device):
        token = tf.constant(suffix, tf.string)
        found['init'], outputs = _import_graph(
            self._proto.tensorflow, self._renamed_graph_def(), list(flat),
            suffix, token)
        return outputs

    main = tf.compat.v1.wrap_function(body, signature)
    init, init_inputs = None, ()
    init_op = found.get('init')
    if init_op is not None:
      if isinstance(init_op, str):
        init_op = main.graph.get_operation_by_name(init_op)
      # Fed only what it reads (usually nothing): a pruned function cannot
      # bind positional arguments to its structured signature, and TF's
      # fallback first formats every argument, whole tensors included, into
      # an error text; for HGB's client work that took as long as the
      # client's training itself (docs/BENCHMARKS.md).
      init_inputs = _inputs_needed(init_op, found['inputs'])
      init = main.prune(feeds=[found['inputs'][i] for i in init_inputs],
                        fetches=[init_op])
    return _Imported(main, init, init_inputs)

  def foldable(self) -> bool:
    """Whether `fold` applies: (<A, V> -> A) over tensors only."""
    parameter = self.parameter_type
    if not (isinstance(parameter, _StructType) and len(parameter) == 2):
      return False
    if any(isinstance(t, _SequenceType) for t in self._parameter_leaves):
      return False
    accumulator_type = parameter[0]
    return (self.result_type is not None and
            accumulator_type.is_equivalent_to(self.result_type))

  def fold(self, accumulator, values, device: str, slot: str):
    """accumulator ← self(<accumulator, v>) for v in values, in ONE call.

    `federated_aggregate` otherwise calls its `accumulate` once per client;
    each call of an imported graph costs ~1 ms of Python and eager dispatch
    for a few microseconds of arithmetic, which made the round's metric and
    delta aggregations about a third of an in-process round. The folded
    function calls the same imported graph once per value inside one
    tf.function (traced once per number of values), so the arithmetic and
    its order are unchanged. Returns None when the computation has
    variables to initialise per call (then the caller folds call by call).
    """
    imported = self._instance(device, slot)
    if imported.init is not None:
      return None
    accumulator_type, value_type = self.parameter_type[0], self.parameter_type[1]
    accumulator_leaves = _leaf_types(accumulator_type)
    value_leaves = _leaf_types(value_type)

    def tensors(leaf_types, value_type_, value):
      return [x if isinstance(x, tf.Tensor) and x.dtype == _tf_dtype(t) else
              tf.convert_to_tensor(x, _tf_dtype(t))
              for t, x in zip(leaf_types, _flatten(value_type_, value))]

    key = (device, slot, len(values))
    folded = self._folds.get(key)
    if folded is None:
      main = imported.main

      def fold_all(initial, all_values):
        self.fold_traces += 1  # Python runs only while tracing.
        current = list(initial)
        for value in all_values:
          current = list(main(*(current + list(value))))
        return current

      def spec(t):
        return tf.TensorSpec(t.shape, _tf_dtype(t))

      # A fixed signature: traced once per number of values, whatever the
      # (possibly unknown) dimensions of the values.
      folded = tf.function(fold_all, autograph=False, input_signature=[
          [spec(t) for t in accumulator_leaves],
          [[spec(t) for t in value_leaves]] * len(values)])
      # Called as a concrete function: the tf.function looked its trace up
      # from the arguments' types on every call, three quarters of a fold.
      with tf.device(device), _our_call_options():
        folded = folded.get_concrete_function()
      self._folds[key] = folded
    with tf.device(device), _our_call_options():
      outputs = folded(
          tensors(accumulator_leaves, accumulator_type, accumulator),
          [tensors(value_leaves, value_type, v) for v in values])
    return _pack(self.result_type, iter(outputs))

  def call(self, arg, device: str, slot: str):
    """Runs on `device`; returns (packed result, flat output tensors)."""
    imported = self._instance(device, slot)
    flat = []
    if self.parameter_type is not None:
      for t, value in zip(self._parameter_leaves,
                          _flatten(self.parameter_type, arg)):
        if isinstance(t, _SequenceType):
          if not isinstance(value, tf.data.Dataset):
            raise TypeError(f'{self.name}: expected a tf.data.Dataset for {t}, '
                            f'got {type(value).__name__}.')
          flat.append(tf.data.experimental.to_variant(value))
        elif isinstance(value, tf.Tensor) and value.dtype == _tf_dtype(t):
          flat.append(value)
        else:
          flat.append(tf.convert_to_tensor(value, _tf_dtype(t)))
    # Under the device, so that outputs stay there (no copy to the caller's).
    with tf.device(device), _our_call_options():
      if imported.init is not None:
        imported.init(*(flat[i] for i in imported.init_inputs))
      outputs = imported.main(*flat)
    if self.result_type is None:
      return None, outputs

    def leaf(t, x):
      return _dataset_from_variant(x, t.element) if isinstance(
          t, _SequenceType) else x

    return _pack(self.result_type, iter(outputs), leaf), outputs


def _tensorflow_function(comp: building_blocks.CompiledComputation):
  kind = comp.proto.WhichOneof('computation')
  if kind != 'tensorflow':
    raise UnsupportedComputationError(
        f'CompiledComputation {comp.name} is of kind {kind!r}; the in-process '
        'context runs only TensorFlow computations.')
  key = hashlib.sha256(comp.proto.SerializeToString(deterministic=True)).digest()
  with _FUNCTIONS_LOCK:
    function = _TF_FUNCTIONS.get(key)
    if function is None:
      function = _TensorFlowFunction(comp.proto, comp.name, key)
      _TF_FUNCTIONS[key] = function
  return function


# ---------------------------------------------------------------------------
# The interpreter.



class _Invocation:
  __slots__ = ('context', 'num_clients')

  def __init__(self, context: 'InProcessContext', num_clients: int):
    self.context = context
    self.num_clients = num_clients


class _Scope:
  __slots__ = ('_names', '_parent')

  def __init__(self, parent: Optional['_Scope'] = None):
    self._names = {}
    self._parent = parent

  def bind(self, name, value):
    self._names[name] = value

  def lookup(self, name):
    scope = self
    while scope is not None:
      if name in scope._names:  # pylint: disable=protected-access
        return scope._names[name]  # pylint: disable=protected-access
      scope = scope._parent  # pylint: disable=protected-access
    raise UnsupportedComputationError(f'Unbound reference {name!r}.')


class _Closure:
  """A building-block lambda bound to its scope."""

  __slots__ = ('_body', '_parameter', '_scope', '_invocation', 'inline')

  def __init__(self, body, parameter, scope, invocation, inline):
    self._body = body
    self._parameter = parameter
    self._scope = scope
    self._invocation = invocation
    # Structural only (no call): cheaper to run than to hand to a thread.
    self.inline = inline

  def __call__(self, arg=None):
    scope = _Scope(self._scope)
    if self._parameter is not None:
      scope.bind(self._parameter, arg)
    return self._body(scope, self._invocation)


class _BoundTensorFlow:
  """A TensorFlow computation run on the calling thread's device."""

  __slots__ = ('_function', '_context')
  inline = False

  def __init__(self, function: _TensorFlowFunction, context):
    self._function = function
    self._context = context

  def _placement(self):
    """(device, slot, client): a client thread's, else the server's."""
    if getattr(_THREAD, 'context', None) is self._context:
      return _THREAD.device, _THREAD.slot, _THREAD.client
    return self._context.devices[0], f'main-{threading.get_ident()}', None

  def __call__(self, arg=None):
    device, slot, client = self._placement()
    result, outputs = self._function.call(arg, device, slot)
    if client is not None:
      output_device = outputs[0].device if outputs else None
      self._context._record(client, device, slot, self._function.name,  # pylint: disable=protected-access
                            output_device)
    return result

  def fold(self, accumulator, values):
    """`_TensorFlowFunction.fold` where a call would run, or None."""
    if len(values) < 2 or not self._function.foldable():
      return None
    device, slot, _ = self._placement()
    return self._function.fold(accumulator, values, device, slot)


def _eta_reduced(lam) -> Optional[building_blocks.CompiledComputation]:
  """The computation c if `lam` is (x -> c(x)) or (x -> let y=c(x) in y)."""
  bb = building_blocks
  body = lam.result
  if isinstance(body, bb.Block) and len(body.locals) == 1:
    (name, value), result = body.locals[0], body.result
    if not (isinstance(result, bb.Reference) and result.name == name):
      return None
    body = value
  if (isinstance(body, bb.Call) and
      isinstance(body.function, bb.CompiledComputation) and
      isinstance(body.argument, bb.Reference) and
      body.argument.name == lam.parameter_name):
    return body.function
  return None


def _contains_call(comp) -> bool:
  if isinstance(comp, (building_blocks.Call, building_blocks.CompiledComputation,
                       building_blocks.Intrinsic)):
    return True
  return any(_contains_call(c) for c in comp.children())


SUPPORTED_INTRINSICS = frozenset(
    d.uri for d in vars(intrinsic_defs).values()
    if isinstance(d, intrinsic_defs.IntrinsicDef))


class _Program:
  """A compiled building block as nested closures."""

  def __init__(self, comp: building_blocks.ComputationBuildingBlock):
    self.type_signature = comp.type_signature
    self._fn = self._compile(comp)

  def __call__(self, invocation: _Invocation, arg):
    value = self._fn(_Scope(), invocation)
    if not isinstance(self.type_signature, computation_types.FunctionType):
      return value
    return value(arg)

  def _compile(self, comp):  # pylint: disable=too-many-return-statements
    bb = building_blocks
    if isinstance(comp, bb.Reference):
      name = comp.name
      return lambda scope, inv: scope.lookup(name)
    if isinstance(comp, bb.Selection):
      source, index = self._compile(comp.source), comp.as_index()
      return lambda scope, inv: _element(source(scope, inv), index, None)
    if isinstance(comp, bb.Struct):
      names = [name for name, _ in structure.iter_elements(comp)]
      elements = [self._compile(e) for _, e in structure.iter_elements(comp)]
      return lambda scope, inv: structure.Struct(
          list(zip(names, [e(scope, inv) for e in elements])))
    if isinstance(comp, bb.Call):
      function = self._compile(comp.function)
      if comp.argument is None:
        return lambda scope, inv: function(scope, inv)()
      argument = self._compile(comp.argument)
      return lambda scope, inv: function(scope, inv)(argument(scope, inv))
    if isinstance(comp, bb.Lambda):
      wrapped = _eta_reduced(comp)
      if wrapped is not None:
        # (x -> comp(x)) is comp itself; as such, `federated_aggregate` can
        # fold its clients in one call (`_BoundTensorFlow.fold`).
        return self._compile(wrapped)
      body, parameter = self._compile(comp.result), comp.parameter_name
      inline = not _contains_call(comp.result)
      return lambda scope, inv: _Closure(body, parameter, scope, inv, inline)
    if isinstance(comp, bb.Block):
      bindings = [(name, self._compile(value)) for name, value in comp.locals]
      result = self._compile(comp.result)

      def block(scope, inv):
        inner = _Scope(scope)
        for name, value in bindings:
          inner.bind(name, value(inner, inv))
        return result(inner, inv)

      return block
    if isinstance(comp, bb.Intrinsic):
      if comp.uri not in _INTRINSICS:
        raise UnsupportedComputationError(
            f'Intrinsic {comp.uri!r} is not supported by the in-process '
            'context.')
      implementation, type_signature = _INTRINSICS[comp.uri], comp.type_signature
      if comp.uri == intrinsic_defs.GENERIC_ZERO.uri:
        return lambda scope, inv: _zeros(type_signature, inv.num_clients)
      return lambda scope, inv: _Intrinsic(implementation, type_signature, inv)
    if isinstance(comp, bb.CompiledComputation):
      function = _tensorflow_function(comp)
      return lambda scope, inv: _BoundTensorFlow(function, inv.context)
    if isinstance(comp, bb.Literal):
      value = np.asarray(comp.value, comp.type_signature.dtype)
      return lambda scope, inv: value
    if isinstance(comp, bb.Placement):
      return lambda scope, inv: comp
    raise UnsupportedComputationError(
        f'The in-process context cannot evaluate a {type(comp).__name__} '
        f'building block ({comp.compact_representation()[:200]}).')


class _Intrinsic:
  __slots__ = ('_implementation', '_type', '_invocation')
  inline = False

  def __init__(self, implementation, type_signature, invocation):
    self._implementation = implementation
    self._type = type_signature
    self._invocation = invocation

  def __call__(self, arg=None):
    return self._implementation(self._invocation, self._type, arg)


# Intrinsic implementations: (invocation, intrinsic type, argument) -> value.


def _federated_map(inv, type_signature, arg):
  del type_signature
  return inv.context._map_clients(arg[0], list(arg[1]))  # pylint: disable=protected-access


def _federated_apply(inv, type_signature, arg):
  del inv, type_signature
  return arg[0](arg[1])


def _federated_broadcast(inv, type_signature, arg):
  del type_signature
  return [arg] * inv.num_clients


def _federated_value(inv, type_signature, arg):
  if type_signature.result.placement is placements.CLIENTS:
    return [arg] * inv.num_clients
  return arg


def _federated_eval(inv, type_signature, arg):
  if type_signature.result.placement is placements.CLIENTS:
    return inv.context._map_clients(lambda _: arg(), [None] * inv.num_clients)  # pylint: disable=protected-access
  return arg()


def _zip(value, type_spec, client: Optional[int]):
  if isinstance(type_spec, _FederatedType):
    if client is not None and type_spec.placement is placements.CLIENTS:
      return value[client]
    return value
  if isinstance(type_spec, _StructType):
    return _struct_of(type_spec, [
        _zip(_element(value, i, name), t, client)
        for i, (name, t) in enumerate(structure.iter_elements(type_spec))])
  return value


def _federated_zip_at_clients(inv, type_signature, arg):
  return [_zip(arg, type_signature.parameter, i)
          for i in range(inv.num_clients)]


def _federated_zip_at_server(inv, type_signature, arg):
  del inv
  return _zip(arg, type_signature.parameter, None)


def _federated_aggregate(inv, type_signature, arg):
  del inv
  values, accumulator, accumulate, _, report = (arg[i] for i in range(5))
  values = list(values)
  if isinstance(accumulate, _BoundTensorFlow):
    folded = accumulate.fold(accumulator, values)
    if folded is not None:
      return report(folded)
  pair_type = type_signature.parameter[2].parameter
  for value in values:
    accumulator = accumulate(_struct_of(pair_type, [accumulator, value]))
  return report(accumulator)


def _sum_of(values, member_type, num_clients):
  if not values:
    return _zeros(member_type, num_clients)
  total = values[0]
  for value in values[1:]:
    total = _add(total, value)
  return total


def _federated_sum(inv, type_signature, arg):
  return _sum_of(list(arg), type_signature.result.member, inv.num_clients)


def _federated_secure_sum(inv, type_signature, arg):
  return _sum_of(list(arg[0]), type_signature.result.member, inv.num_clients)


def _federated_mean(inv, type_signature, arg):
  del inv, type_signature
  count = len(arg)
  total = _sum_of(list(arg), None, 0)
  return _leafwise(lambda t: tf.math.divide(t, tf.cast(count, t.dtype)), total)


def _federated_weighted_mean(inv, type_signature, arg):
  del inv, type_signature
  values, weights = list(arg[0]), list(arg[1])
  weighted = [_leafwise(lambda v, w=w: tf.multiply(v, tf.cast(w, v.dtype)), v)
              for v, w in zip(values, weights)]
  total = _sum_of(weighted, None, 0)
  weight = tf.add_n([tf.convert_to_tensor(w) for w in weights])
  return _leafwise(lambda t: tf.math.divide_no_nan(t, tf.cast(weight, t.dtype)),
                   total)


def _extremum(op):
  def fn(inv, type_signature, arg):
    del inv, type_signature
    values = list(arg)
    result = values[0]
    for value in values[1:]:
      result = _leafwise(op, result, value)
    return result
  return fn


def _federated_select(inv, type_signature, arg):
  keys, _, server_value, select_fn = (arg[i] for i in range(4))
  pair_type = type_signature.parameter[3].parameter
  element_type = type_signature.result.member.element

  def client(client_keys):
    elements = [select_fn(_struct_of(pair_type, [server_value, key]))
                for key in np.asarray(client_keys).reshape(-1)]
    return _dataset_from_elements(elements, element_type)

  return inv.context._map_clients(client, list(keys))  # pylint: disable=protected-access


def _sequence_reduce(inv, type_signature, arg):
  del inv
  dataset, accumulator, op = arg[0], arg[1], arg[2]
  element_type = type_signature.parameter[0].element
  pair_type = type_signature.parameter[2].parameter
  for element in dataset:
    accumulator = op(_struct_of(
        pair_type, [accumulator, _from_tf_structure(element, element_type)]))
  return accumulator


def _sequence_sum(inv, type_signature, arg):
  element_type = type_signature.parameter.element
  total = _zeros(element_type, inv.num_clients)
  for element in arg:
    total = _add(total, _from_tf_structure(element, element_type))
  return total


def _sequence_map(inv, type_signature, arg):
  del inv
  fn, dataset = arg[0], arg[1]
  element_type = type_signature.parameter[1].element
  results = [fn(_from_tf_structure(e, element_type)) for e in dataset]
  return _dataset_from_elements(results, type_signature.result.element)


def _generic(op):
  def fn(inv, type_signature, arg):
    del inv, type_signature
    return _leafwise(op, arg[0], arg[1])
  return fn


_INTRINSICS = {
    intrinsic_defs.FEDERATED_AGGREGATE.uri: _federated_aggregate,
    intrinsic_defs.FEDERATED_APPLY.uri: _federated_apply,
    intrinsic_defs.FEDERATED_BROADCAST.uri: _federated_broadcast,
    intrinsic_defs.FEDERATED_EVAL_AT_CLIENTS.uri: _federated_eval,
    intrinsic_defs.FEDERATED_EVAL_AT_SERVER.uri: _federated_eval,
    intrinsic_defs.FEDERATED_MAP.uri: _federated_map,
    intrinsic_defs.FEDERATED_MAP_ALL_EQUAL.uri: _federated_map,
    intrinsic_defs.FEDERATED_MAX.uri: _extremum(tf.maximum),
    intrinsic_defs.FEDERATED_MEAN.uri: _federated_mean,
    intrinsic_defs.FEDERATED_MIN.uri: _extremum(tf.minimum),
    intrinsic_defs.FEDERATED_SECURE_SELECT.uri: _federated_select,
    intrinsic_defs.FEDERATED_SECURE_SUM.uri: _federated_secure_sum,
    intrinsic_defs.FEDERATED_SECURE_SUM_BITWIDTH.uri: _federated_secure_sum,
    intrinsic_defs.FEDERATED_SELECT.uri: _federated_select,
    intrinsic_defs.FEDERATED_SUM.uri: _federated_sum,
    intrinsic_defs.FEDERATED_VALUE_AT_CLIENTS.uri: _federated_value,
    intrinsic_defs.FEDERATED_VALUE_AT_SERVER.uri: _federated_value,
    intrinsic_defs.FEDERATED_WEIGHTED_MEAN.uri: _federated_weighted_mean,
    intrinsic_defs.FEDERATED_ZIP_AT_CLIENTS.uri: _federated_zip_at_clients,
    intrinsic_defs.FEDERATED_ZIP_AT_SERVER.uri: _federated_zip_at_server,
    intrinsic_defs.GENERIC_DIVIDE.uri: _generic(tf.math.divide),
    intrinsic_defs.GENERIC_MULTIPLY.uri: _generic(tf.multiply),
    intrinsic_defs.GENERIC_PLUS.uri: _generic(tf.add),
    intrinsic_defs.GENERIC_ZERO.uri: None,  # A value, see _Program._compile.
    intrinsic_defs.SEQUENCE_MAP.uri: _sequence_map,
    intrinsic_defs.SEQUENCE_REDUCE.uri: _sequence_reduce,
    intrinsic_defs.SEQUENCE_SUM.uri: _sequence_sum,
}
assert set(_INTRINSICS) == SUPPORTED_INTRINSICS, (
    sorted(SUPPORTED_INTRINSICS ^ set(_INTRINSICS)))


# ---------------------------------------------------------------------------
# Arguments in, results out.


def _ingest(value, type_spec, num_clients: int):
  """A Python argument → the internal representation of `type_spec`."""
  if isinstance(type_spec, _FederatedType):
    if type_spec.all_equal:
      member = _ingest(value, type_spec.member, num_clients)
      if type_spec.placement is placements.CLIENTS:
        return [member] * num_clients
      return member
    if not isinstance(value, (list, tuple)):
      raise TypeError(f'Expected a list of client values for {type_spec}, got '
                      f'{type(value).__name__}.')
    return [_ingest(v, type_spec.member, num_clients) for v in value]
  if isinstance(type_spec, _StructType):
    elements = structure.to_elements(structure.from_container(value))
    type_elements = structure.to_elements(type_spec)
    if len(elements) != len(type_elements):
      raise TypeError(f'A value with {len(elements)} elements cannot be a '
                      f'{type_spec}.')
    return structure.Struct([
        (name, _ingest(v, t, num_clients))
        for (_, v), (name, t) in zip(elements, type_elements)])
  if isinstance(type_spec, _SequenceType):
    if isinstance(value, tf.data.Dataset):
      return value
    if isinstance(value, (list, tuple)):
      return tensorflow_utils.make_data_set_from_elements(
          None, list(value), type_spec.element)
    raise TypeError(f'Expected a tf.data.Dataset for {type_spec}, got '
                    f'{type(value).__name__}.')
  if isinstance(type_spec, _TensorType):
    if isinstance(value, tf.Variable):
      value = value.read_value()
    if isinstance(value, tf.Tensor):
      return tf.cast(value, _tf_dtype(type_spec))
    if _tf_dtype(type_spec) == tf.string:
      return tf.constant(value, tf.string)
    return np.asarray(value, type_spec.dtype)
  raise UnsupportedComputationError(
      f'The in-process context cannot take an argument of type {type_spec}.')


def _export(value, type_spec):
  """An internal result → numpy / Struct / list, as TFF's runtime returns."""
  if isinstance(type_spec, _FederatedType):
    if type_spec.placement is placements.CLIENTS:
      if type_spec.all_equal:
        return _export(value[0], type_spec.member) if value else None
      return [_export(v, type_spec.member) for v in value]
    return _export(value, type_spec.member)
  if isinstance(type_spec, _StructType):
    return structure.Struct([
        (name, _export(_element(value, i, name), t))
        for i, (name, t) in enumerate(structure.iter_elements(type_spec))])
  return _to_numpy(value)


# ---------------------------------------------------------------------------
# The context.


class InProcessContext(context_base.SyncContext):
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
    self._programs: dict[int, tuple[weakref.ref, _Program]] = {}
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

  def _program(self, comp) -> _Program:
    """Compiles `comp` once; forgotten when `comp` is garbage-collected."""
    key = id(comp)
    with self._lock:
      entry = self._programs.get(key)
    if entry is not None and entry[0]() is comp:
      return entry[1]
    compiled = self._compiler_fn(comp)
    program = _Program(compiled.to_building_block())

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
      cardinalities = cardinalities_utils.infer_cardinalities(
          arg, parameter_type)
      num_clients = cardinalities.get(placements.CLIENTS, num_clients)
      internal_arg = _ingest(arg, parameter_type, num_clients)
    result = program(_Invocation(self, num_clients), internal_arg)
    exported = _export(result, program.type_signature.result)
    return type_conversions.type_to_py_container(exported,
                                                 type_signature.result)


def set_inprocess_context(
    devices: DeviceSpec = None,
    *,
    max_clients_in_flight_per_device: int =
    DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE,
    default_num_clients: int = 0,
) -> InProcessContext:
  """Installs the in-process context as TFF's default context.

  Must run before TensorFlow initialises its devices in this process (see the
  module docstring): first thing in `main`, or in a fresh process.

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
  names = configure_devices(devices)
  context = InProcessContext(
      names, max_clients_in_flight_per_device=max_clients_in_flight_per_device,
      default_num_clients=default_num_clients)
  tff.framework.get_context_stack().set_default_context(context)
  return context
