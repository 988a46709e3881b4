"""TFF's TensorFlow computations as in-process callables, per (device, slot).

`tensorflow_function` wraps a `CompiledComputation` once per process;
`BoundTensorFlow` runs it on the calling thread's device, or folds many values.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import threading
from typing import Callable
import weakref

import tensorflow as tf

from tff_hgb.runtime.inprocess import _tff_internals
from tff_hgb.runtime.inprocess import graph_import
from tff_hgb.runtime.inprocess import value_utils
from tff_hgb.runtime.inprocess._tff_internals import building_blocks
from tff_hgb.runtime.inprocess._tff_internals import computation_types

_TensorType = computation_types.TensorType
_SequenceType = computation_types.SequenceType
_StructType = computation_types.StructType


_FUNCTIONS_LOCK = threading.Lock()
# Per thread: device, slot, client (pool threads), function-call options.
THREAD = threading.local()
_SUFFIXES = itertools.count()
# Shared by all contexts and programs; an entry lives while a program uses it.
_TF_FUNCTIONS: 'weakref.WeakValueDictionary[bytes, _TensorFlowFunction]' = (
    weakref.WeakValueDictionary())


def _call_options():
  """Function-call options for our calls (cached per thread).

  Grappler stays on even if the user switched it off globally: without it, the
  eager function runtime ran TFF's compiled client-update graphs with a race
  (repeated calls with identical inputs gave different deltas in 12 of 27
  calls), while with TensorFlow's default Grappler passes they are
  deterministic and match the C++ runtime. Soft placement lets ops without a
  GPU kernel (e.g. tf.data) fall back to the CPU.
  """
  options = getattr(THREAD, 'call_options', None)
  if options is None:
    current = _tff_internals.eager_context().function_call_options
    config = tf.compat.v1.ConfigProto()
    config.ParseFromString(current.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = False
    config.allow_soft_placement = True
    options = _tff_internals.FunctionCallOptions(
        executor_type=current.executor_type, config_proto=config)
    THREAD.call_options = options
  return options


@contextlib.contextmanager
def _our_call_options():
  context = _tff_internals.eager_context()
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


class _TensorFlowFunction:
  """One TFF TensorFlow computation as in-process callables."""

  def __init__(self, proto, name: str, key: bytes):
    self._proto = proto
    self.name = name
    self._key = key
    self._graph_def = None
    self._lock = threading.Lock()
    self._key_locks: dict[tuple[str, str], threading.Lock] = {}
    type_spec = _tff_internals.deserialize_type(proto.type)
    self.parameter_type = type_spec.parameter
    self.result_type = type_spec.result
    self._parameter_leaves = value_utils.leaf_types(self.parameter_type)
    self._result_leaves = value_utils.leaf_types(self.result_type)
    self._instances: dict[tuple[str, str], _Imported] = {}
    self._folds: dict[tuple[str, str, int], Callable] = {}
    self.fold_traces = 0

  def _renamed_graph_def(self):
    with self._lock:
      if self._graph_def is None:
        graph_def = _tff_internals.unpack_graph_def(
            self._proto.tensorflow.graph_def)
        graph_import.rename_functions(graph_def, self._key[:8].hex())
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
        tf.TensorSpec(t.shape, value_utils.tf_dtype(t))
        if isinstance(t, _TensorType)
        else tf.TensorSpec([], tf.variant) for t in self._parameter_leaves]
    found = {}

    def body(*flat):
      found['inputs'] = list(flat)
      with tf.device(device):
        token = tf.constant(suffix, tf.string)
        found['init'], outputs = graph_import.import_graph(
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
      init_inputs = graph_import.inputs_needed(init_op, found['inputs'])
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
    accumulator_leaves = value_utils.leaf_types(accumulator_type)
    value_leaves = value_utils.leaf_types(value_type)

    def tensors(leaf_types, value_type_, value):
      return [x if isinstance(x, tf.Tensor) and
              x.dtype == value_utils.tf_dtype(t) else
              tf.convert_to_tensor(x, value_utils.tf_dtype(t))
              for t, x in zip(leaf_types,
                              value_utils.flatten(value_type_, value))]

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
        return tf.TensorSpec(t.shape, value_utils.tf_dtype(t))

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
    return value_utils.pack(self.result_type, iter(outputs))

  def call(self, arg, device: str, slot: str):
    """Runs on `device`; returns (packed result, flat output tensors)."""
    imported = self._instance(device, slot)
    flat = []
    if self.parameter_type is not None:
      for t, value in zip(self._parameter_leaves,
                          value_utils.flatten(self.parameter_type, arg)):
        if isinstance(t, _SequenceType):
          if not isinstance(value, tf.data.Dataset):
            raise TypeError(f'{self.name}: expected a tf.data.Dataset for {t}, '
                            f'got {type(value).__name__}.')
          flat.append(tf.data.experimental.to_variant(value))
        elif (isinstance(value, tf.Tensor) and
              value.dtype == value_utils.tf_dtype(t)):
          flat.append(value)
        else:
          flat.append(tf.convert_to_tensor(value, value_utils.tf_dtype(t)))
    # Under the device, so that outputs stay there (no copy to the caller's).
    with tf.device(device), _our_call_options():
      if imported.init is not None:
        imported.init(*(flat[i] for i in imported.init_inputs))
      outputs = imported.main(*flat)
    if self.result_type is None:
      return None, outputs

    def leaf(t, x):
      return value_utils.dataset_from_variant(x, t.element) if isinstance(
          t, _SequenceType) else x

    return value_utils.pack(self.result_type, iter(outputs), leaf), outputs


def tensorflow_function(comp: building_blocks.CompiledComputation):
  kind = comp.proto.WhichOneof('computation')
  if kind != 'tensorflow':
    raise value_utils.UnsupportedComputationError(
        f'CompiledComputation {comp.name} is of kind {kind!r}; the in-process '
        'context runs only TensorFlow computations.')
  key = hashlib.sha256(comp.proto.SerializeToString(deterministic=True)).digest()
  with _FUNCTIONS_LOCK:
    function = _TF_FUNCTIONS.get(key)
    if function is None:
      function = _TensorFlowFunction(comp.proto, comp.name, key)
      _TF_FUNCTIONS[key] = function
  return function


class BoundTensorFlow:
  """A TensorFlow computation run on the calling thread's device."""

  __slots__ = ('_function', '_context')
  inline = False

  def __init__(self, function: _TensorFlowFunction, context):
    self._function = function
    self._context = context

  def _placement(self):
    """(device, slot, client): a client thread's, else the server's."""
    if getattr(THREAD, 'context', None) is self._context:
      return THREAD.device, THREAD.slot, THREAD.client
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
