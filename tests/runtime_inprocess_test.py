"""The in-process context runs any TFF computation like TFF's C++ runtime.

Logical CPU devices can only be configured before TensorFlow initialises its
devices, so the two-device runs happen in a child process (`_CHILD`), which
prints its results as JSON; the pytest process compares them with TFF's C++
runtime (the `tff_runtime` fixture). The helpers below (tiny HGB data, model, processes) are shared by
the child and by runtime_multiworker_test.py.
"""

import ast
import collections
import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import hgb
from tff_hgb import models
from tff_hgb import runtime
from tff_hgb.data import client_data
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.runtime import configure
from tff_hgb.runtime import inprocess
from tff_hgb.runtime.inprocess import tf_functions

_TESTS = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(_TESTS)

MODALITIES = [dataset_lib.ModalitySpec('a', 'vector', (5,)),
              dataset_lib.ModalitySpec('b', 'vector', (3,))]
NUM_CLASSES = 3
ROUNDS = 3


# --- Shared helpers: the fixed tiny HGB run. ---------------------------------


def _client(rng, n, *, presence_b=1.0, batch_size=4, num_val=4):
  features = {'a': rng.normal(size=(n, 5)).astype(np.float32),
              'b': rng.normal(size=(n, 3)).astype(np.float32)}
  ds = dataset_lib.MultiModalDataset(
      'test', MODALITIES, features, rng.integers(0, NUM_CLASSES, n),
      ['x', 'y', 'z'],
      presence={'a': np.ones(n, np.float32),
                'b': np.full(n, presence_b, np.float32)})
  examples = dataset_lib.to_tf_dataset(ds)
  return collections.OrderedDict(
      train=examples.take(n - num_val).batch(batch_size),
      held_out=client_data.held_out_dataset(
          probe=examples.take(num_val).batch(batch_size),
          val=examples.skip(n - num_val).batch(batch_size)))


def make_clients(seed=0):
  rng = np.random.default_rng(seed)
  return [_client(rng, 20), _client(rng, 16, presence_b=0.0),
          _client(rng, 12)]


def train_data(clients):
  return [c['train'] for c in clients]


def tiny_model_fn():
  return models.build_model_fn(
      MODALITIES, NUM_CLASSES,
      config=models.ModelConfig(feature_dim=4, hidden_units=8, seed=0))


def build_hgb():
  return hgb.build_hgb_process(
      tiny_model_fn(),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1))


def build_fedavg():
  return tff.learning.algorithms.build_weighted_fed_avg(
      tiny_model_fn(),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1))


def train(process, data, rounds=ROUNDS, state=None):
  """Runs `rounds` rounds; returns (state, trainable weights as arrays)."""
  if state is None:
    state = process.initialize()
  for _ in range(rounds):
    state = process.next(state, data).state
  return state, trainable(process, state)


def trainable(process, state):
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def max_abs_diff(a, b):
  assert len(a) == len(b)
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(a, b))


@functools.lru_cache(maxsize=None)
def reference_hgb_weights(tff_runtime):
  """The fixed HGB run on TFF's C++ runtime (computed once)."""
  with tff_runtime.active():
    return tuple(train(build_hgb(), make_clients())[1])


@functools.lru_cache(maxsize=None)
def reference_fedavg_weights(tff_runtime):
  with tff_runtime.active():
    return tuple(train(build_fedavg(), train_data(make_clients()))[1])


# --- The two-device child. ---------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, sys
    from tff_hgb.runtime import inprocess
    # First, before anything initialises TensorFlow's devices.
    context = inprocess.set_inprocess_context(
        'cpu:2', max_clients_in_flight_per_device=1)
    sys.path.insert(0, sys.argv[1])
    import runtime_inprocess_test as h

    clients = h.make_clients()
    _, hgb_weights = h.train(h.build_hgb(), clients)
    hgb_log = list(context.placement_log)
    context.clear_placement_log()
    _, fedavg_weights = h.train(h.build_fedavg(), h.train_data(clients))
    print('RESULT ' + json.dumps({
        'devices': context.devices,
        'hgb': [w.tolist() for w in hgb_weights],
        'fedavg': [w.tolist() for w in fedavg_weights],
        'hgb_log': hgb_log,
        'fedavg_log': list(context.placement_log),
    }), flush=True)
    context.close()
""")


@pytest.fixture(scope='module')
def two_device_child(tff_runtime):
  env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL='2')
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    child = subprocess.Popen([sys.executable, '-c', _CHILD, _TESTS], env=env,
                             stdout=out, stderr=err, text=True)
    try:
      # The references (TFF's runtime) are computed while the child runs.
      reference_hgb_weights(tff_runtime)
      reference_fedavg_weights(tff_runtime)
      child.wait(timeout=600)
    finally:
      if child.poll() is None:
        child.kill()
        child.wait()
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read(), err.read()
  lines = [l for l in stdout.splitlines() if l.startswith('RESULT ')]
  assert child.returncode == 0 and lines, (
      f'child failed ({child.returncode}):\n{stderr[-3000:]}')
  result = json.loads(lines[-1][len('RESULT '):])
  for name in ('hgb', 'fedavg'):
    result[name] = [np.asarray(w, np.float32) for w in result[name]]
  return result


@pytest.fixture
def restore_context():
  """Puts the session's context back (and closes in-process contexts)."""
  stack = tff.framework.get_context_stack()
  saved = stack.current
  yield
  current = stack.current
  stack.set_default_context(saved)
  if current is not saved and isinstance(current, inprocess.InProcessContext):
    current.close()


# --- Parity and placement (two logical CPU devices, child process). ----------


def test_hgb_on_two_devices_matches_tff_runtime(two_device_child,
                                                tff_runtime):
  reference = reference_hgb_weights(tff_runtime)
  assert max_abs_diff(two_device_child['hgb'], reference) <= 1e-5
  process = build_hgb()
  initial = trainable(process, process.initialize())
  assert max_abs_diff(reference, initial) > 1e-3  # Training moved the model.


def test_tff_fedavg_on_two_devices_matches_tff_runtime(two_device_child,
                                                       tff_runtime):
  assert max_abs_diff(two_device_child['fedavg'],
                      reference_fedavg_weights(tff_runtime)) <= 1e-5


@pytest.mark.parametrize('log', ['hgb_log', 'fedavg_log'])
def test_clients_go_round_robin_over_both_devices(two_device_child, log):
  devices = two_device_child['devices']
  assert devices == ['/device:CPU:0', '/device:CPU:1']
  entries = two_device_child[log]
  assert {e['client'] for e in entries} == {0, 1, 2}
  for entry in entries:
    assert entry['device'] == devices[entry['client'] % 2]
    # TensorFlow really ran it there: the outputs live on that device.
    assert entry['output_device'].endswith(entry['device'][len('/device'):])
  used = collections.Counter(e['device'] for e in entries)
  assert used['/device:CPU:0'] > 0 and used['/device:CPU:1'] > 0


# --- Intrinsics, in this process on its one CPU device. ----------------------

_F32_CLIENTS = tff.FederatedType(np.float32, tff.CLIENTS)
_ELEMENT = collections.OrderedDict(a=np.float32, b=np.int32)


@tff.tensorflow.computation(tff.SequenceType(_ELEMENT))
def _reduce_dataset(ds):
  return ds.reduce(np.float32(0.0),
                   lambda s, e: s + e['a'] * tf.cast(e['b'], tf.float32))


@tff.tensorflow.computation(np.float32, np.float32)
def _scaled(x, y):
  return x * y


@tff.tensorflow.computation(np.float32)
def _double(x):
  return 2.0 * x


@tff.tensorflow.computation(np.float32, np.int32)
def _select(server_value, key):
  return server_value + tf.cast(key, tf.float32)


@tff.tensorflow.computation(np.int32)
def _two_keys(k):
  return tf.stack([k, k + 1])


@tff.tensorflow.computation(np.float32)
def _to_int(v):
  return tf.cast(v, tf.int32)


@tff.tensorflow.computation
def _seven():
  return np.float32(7.0)


@tff.tensorflow.computation(tff.SequenceType(np.float32))
def _sum_dataset(ds):
  return ds.reduce(np.float32(0.0), lambda s, x: s + x)


@tff.federated_computation(_F32_CLIENTS, _F32_CLIENTS,
                           tff.FederatedType(np.float32, tff.SERVER),
                           tff.FederatedType(tff.SequenceType(_ELEMENT),
                                             tff.CLIENTS),
                           tff.FederatedType(np.int32, tff.CLIENTS))
def _many_intrinsics(x, w, s, data, keys):
  selected = tff.federated_select(
      tff.federated_map(_two_keys, keys),
      tff.federated_value(np.int32(10), tff.SERVER), s, _select)
  return collections.OrderedDict(
      mean=tff.federated_mean(x),
      weighted_mean=tff.federated_mean(x, w),
      total=tff.federated_sum(x),
      low=tff.federated_min(x),
      high=tff.federated_max(x),
      scaled=tff.federated_map(
          _scaled, tff.federated_zip((x, tff.federated_broadcast(s)))),
      applied=tff.federated_map(_double, s),  # federated_apply at SERVER
      reduced=tff.federated_map(_reduce_dataset, data),
      selected=tff.federated_map(_sum_dataset, selected),
      at_clients=tff.federated_value(np.float32(1.5), tff.CLIENTS),
      evaluated=tff.federated_eval(_seven, tff.CLIENTS),
  )


@tff.federated_computation(_F32_CLIENTS)
def _secure_sum(x):
  # TFF's C++ runtime does not implement this one ("Cannot embed a federated
  # value"); the in-process context sums, as TFF's simulation semantics say.
  return tff.federated_secure_sum_bitwidth(tff.federated_map(_to_int, x), 8)


def _intrinsics_args():
  data = [tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(a=np.arange(n, dtype=np.float32) + 1.0,
                              b=np.full(n, 2, np.int32))) for n in (1, 2, 3)]
  return ([1.0, 2.0, 6.0], [1.0, 1.0, 2.0], 3.0, data, [0, 1, 2])


def _assert_same_structure_and_values(a, b):
  tf.nest.map_structure(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6),
      a, b)


@pytest.mark.parametrize('compiled', [True, False])
def test_intrinsics_match_tff_runtime(restore_context, tff_runtime,
                                      compiled):
  with tff_runtime.active():
    expected = _many_intrinsics(*_intrinsics_args())
  assert expected['weighted_mean'] == pytest.approx(15.0 / 4)
  assert list(expected['reduced']) == pytest.approx([2.0, 6.0, 12.0])
  # compiled=False interprets the uncompiled building block, so the intrinsics
  # the compiler would desugar (mean, sum, min, max, ...) run directly.
  context = inprocess.InProcessContext(
      ['/device:CPU:0'],
      compiler_fn=None if compiled else (lambda comp: comp))
  tff.framework.get_context_stack().set_default_context(context)
  got = _many_intrinsics(*_intrinsics_args())
  _assert_same_structure_and_values(dict(got), dict(expected))
  assert _secure_sum([1.0, 2.0, 6.0]) == 9
  assert {e['device'] for e in context.placement_log} == {'/device:CPU:0'}


@tff.tensorflow.computation(np.float32, np.float32)
def _order_sensitive_accumulate(accumulator, value):
  return accumulator * 3.0 + value  # The fold's order shows in the result.


@tff.tensorflow.computation(np.float32, np.float32)
def _merge_floats(a, b):
  return a + b


@tff.tensorflow.computation(np.float32)
def _report_float(a):
  return a


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def _ordered_aggregate(values):
  return tff.federated_aggregate(values, np.float32(1.0),
                                 _order_sensitive_accumulate, _merge_floats,
                                 _report_float)


def test_aggregate_folds_clients_in_order_in_one_traced_call(restore_context,
                                                            tff_runtime):
  values = [2.0, -1.0, 0.5, 4.0]
  expected = 1.0
  for v in values:
    expected = expected * 3.0 + v
  with tff_runtime.active():
    assert _ordered_aggregate(values) == pytest.approx(expected)
  context = inprocess.InProcessContext(['/device:CPU:0'])
  tff.framework.get_context_stack().set_default_context(context)
  def fold_traces():
    return sum(f.fold_traces for f in list(
        tf_functions._TF_FUNCTIONS.values()))  # pylint: disable=protected-access

  before = fold_traces()
  for round_values in (values, [v + 1.0 for v in values], values):
    want = 1.0
    for v in round_values:
      want = want * 3.0 + v
    assert _ordered_aggregate(round_values) == pytest.approx(want)
  # One trace for four clients, reused by the later calls.
  assert fold_traces() - before == 1


@tff.tensorflow.computation(np.float32)
def _add_to_fresh_variable(x):
  total = tf.Variable(10.0)
  with tf.control_dependencies([total.assign_add(x)]):
    return total.read_value()


@tff.tensorflow.computation(np.float32)
def _variable_from_parameter(x):
  doubled = tf.Variable(x * 2.0)
  return doubled.read_value() + 1.0


def test_variables_are_initialised_on_every_call(restore_context, tff_runtime):
  # As the C++ runtime: each call starts from the variables' initial values.
  with tff_runtime.active():
    expected = [[_add_to_fresh_variable(x) for x in (1.0, 2.0, 1.0)],
                [_variable_from_parameter(x) for x in (3.0, 5.0)]]
  assert expected == [[11.0, 12.0, 11.0], [7.0, 11.0]]
  functions = tf_functions._TF_FUNCTIONS  # pylint: disable=protected-access
  known = set(functions.keys())
  tff.framework.get_context_stack().set_default_context(
      inprocess.InProcessContext(['/device:CPU:0']))
  got = [[_add_to_fresh_variable(x) for x in (1.0, 2.0, 1.0)],
         [_variable_from_parameter(x) for x in (3.0, 5.0)]]
  assert got == expected
  # The initializer is fed only the parameters it reads (a pruned function
  # called with unused arguments formats all of them into a string each call).
  fed = sorted(imported.init_inputs
               for key, function in list(functions.items())
               if key not in known
               for imported in function._instances.values()  # pylint: disable=protected-access
               if imported.init is not None)
  assert fed == [(), (0,)]


def test_learning_process_runs_in_this_process_too(restore_context):
  # One device needs no configuration, so it also works after TF started.
  context = runtime.set_inprocess_context('cpu')
  assert context.devices == ['/device:CPU:0']
  state, weights = train(build_fedavg(), train_data(make_clients()), rounds=1)
  assert all(np.all(np.isfinite(w)) for w in weights)
  assert state is not None


# --- Devices and flags. ------------------------------------------------------


def test_logical_cpus_asked_for_too_late_raise_a_clear_error():
  tf.constant(1.0)  # TensorFlow has initialised its devices in this process.
  if len(tf.config.list_logical_devices('CPU')) >= 5:
    pytest.skip('this process already has 5 logical CPUs')
  with pytest.raises(inprocess.DeviceConfigurationError,
                     match='before the first eager op'):
    inprocess.configure_devices('cpu:5')


def test_gpu_request_without_gpu_is_explained():
  if tf.config.list_physical_devices('GPU'):
    pytest.skip('this machine has a GPU')
  with pytest.raises(inprocess.DeviceConfigurationError, match='no GPU'):
    inprocess.configure_devices('gpu')


@pytest.mark.parametrize('spec,expected', [
    (None, ('auto', None)),
    ('cpu', ('cpu', 1)),
    ('CPU:2', ('cpu', 2)),
    ('gpu', ('gpu', None)),
    ('gpu:2', ('gpu', 2)),
    ('/device:GPU:1,/gpu:0', ('names', ['/device:GPU:1', '/device:GPU:0'])),
    (['/cpu:0', '/device:CPU:1'], ('names', ['/device:CPU:0',
                                             '/device:CPU:1'])),
])
def test_parse_device_spec(spec, expected):
  assert inprocess.parse_device_spec(spec) == expected


@pytest.mark.parametrize('kwargs,flag', [
    (dict(runtime='gpu'), '--runtime'),
    (dict(runtime='tff', devices='gpu'), '--devices'),
    (dict(runtime='tff', workers=['localhost']), '--workers'),
    (dict(runtime='tff', workers='h1:80,h2:99999'), '--workers'),
    (dict(runtime='tff', workers='bad host:80'), '--workers'),
    (dict(runtime='tff', workers='h:80,h:80'), '--workers'),
    (dict(runtime='tff', local_workers=-1), '--local_workers'),
    (dict(runtime='inprocess', devices='tpu'), '--devices'),
    (dict(runtime='inprocess', devices='cpu:0'), '--devices'),
    (dict(runtime='inprocess', local_workers=2), '--local_workers'),
    (dict(runtime='inprocess', max_clients_in_flight_per_device=0),
     '--max_clients_in_flight_per_device'),
])
def test_bad_runtime_flags_name_the_flag(kwargs, flag):
  with pytest.raises(ValueError, match=flag):
    configure.validate_runtime_flags(**kwargs)


def test_good_runtime_flags_are_normalised():
  config = configure.validate_runtime_flags(
      'tff', workers='10.0.0.5:8000, worker-2:8001,[::1]:9000',
      local_workers=1)
  assert config.workers == ('10.0.0.5:8000', 'worker-2:8001', '[::1]:9000')
  config = configure.validate_runtime_flags('inprocess', devices='gpu:2')
  assert config.devices == 'gpu:2'
  assert config.max_clients_in_flight_per_device >= 1


def test_default_runtime_opens_no_port_unless_workers_are_asked_for():
  # In-process listens on nothing; workers exist only in TFF's runtime.
  assert configure.validate_runtime_flags().runtime == 'inprocess'
  assert configure.validate_runtime_flags(local_workers=2).runtime == 'tff'
  assert configure.validate_runtime_flags(workers='h:8000').runtime == 'tff'
  # A runtime that is named is kept (and then refuses the workers).
  with pytest.raises(ValueError, match='--workers / --local_workers need'):
    configure.validate_runtime_flags('inprocess', local_workers=2)


# --- The package's coupling to TFF's internals. ------------------------------

_PRIVATE_PACKAGES = ('tensorflow_federated.python', 'tensorflow.python')
_PUBLIC_ROOTS = ('tff', 'tensorflow_federated', 'tf', 'tensorflow')


def _is_private(module):
  return any(module == p or module.startswith(p + '.')
             for p in _PRIVATE_PACKAGES)


def _private_uses(path):
  """Private TFF / TensorFlow modules that a source file imports or reaches."""
  with open(path) as f:
    tree = ast.parse(f.read(), filename=path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.extend(a.name for a in node.names if _is_private(a.name))
    elif isinstance(node, ast.ImportFrom):
      if node.level == 0 and _is_private(node.module or ''):
        found.append(node.module)
    elif (isinstance(node, ast.Attribute) and node.attr == 'python' and
          isinstance(node.value, ast.Name) and node.value.id in _PUBLIC_ROOTS):
      found.append(f'{node.value.id}.python')  # e.g. tff.python.core...
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and
          any(p + '.' in node.value for p in _PRIVATE_PACKAGES)):
      found.append(node.value)  # e.g. importlib.import_module('...').
  return found


def test_private_tff_imports_only_in_internals():
  package = os.path.dirname(inprocess.__file__)
  uses = {name: _private_uses(os.path.join(package, name))
          for name in sorted(os.listdir(package)) if name.endswith('.py')}
  assert {'__init__.py', 'context.py', 'interpreter.py', 'intrinsics.py',
          'tf_functions.py', 'value_utils.py'} <= set(uses)
  assert any(m.startswith('tensorflow_federated.python.core.impl')
             for m in uses.pop('_tff_internals.py'))
  assert uses == {name: [] for name in uses}, (
      'Import private TFF / TensorFlow symbols in _tff_internals.py only (and '
      'list them in its upgrade checklist).')
