"""The private TFF 0.87 (and TensorFlow 2.14) API the in-process context uses.

The package's only import of `tensorflow_federated.python...` and
`tensorflow.python...`; the other modules use the names re-exposed here.

On a TFF upgrade (TF moves with it: TFF pins its TensorFlow), check:

Namespaces (modules re-exposed whole; the attributes we use):
- `structure` (common_libs): `Struct`, `iter_elements`, `from_container`,
  `to_elements`. Our representation of every struct value (`values`).
- `building_blocks` (core.impl.compiler): `Reference`, `Selection`, `Struct`,
  `Call`, `Lambda`, `Block`, `Intrinsic`, `CompiledComputation` (its `.proto`,
  `.name`), `Literal`, `Placement`, `ComputationBuildingBlock`: the nodes
  `interpreter.Program` evaluates. A new node kind that the native compiler
  (`tff.backends.native.desugar_and_transform_to_native`) emits raises
  `UnsupportedComputationError`.
- `intrinsic_defs` (core.impl.compiler): `IntrinsicDef` and the `*.uri`s of the
  27 intrinsics. `intrinsics` asserts at import that it implements exactly
  the intrinsics TFF defines, so an added or removed one fails every import.
- `computation_types`, `placements` (core.impl.types): the type classes and
  `CLIENTS`. (Also public as `tff.TensorType`, ..., `tff.CLIENTS`.)

Functions:
- `SyncContext` (context_stack.context_base): the base of `InProcessContext`.
- `infer_cardinalities` (executors.cardinalities_utils): CLIENTS cardinality
  of an argument.
- `type_to_tf_structure`, `type_to_py_container` (types.type_conversions) and
  `deserialize_type` (types.type_serialization): dataset structures, result
  containers, and a computation's type from its proto.
- `make_data_set_from_elements`, `extract_tensor_names_from_binding` and the
  private `_uniquify_shared_names_with_suffix` (core.impl.utils.
  tensorflow_utils), `add_control_dep_mappings` (tensorflow_libs.graph_utils),
  `unpack_graph_def` (tensorflow_libs.serialization_utils): how
  `graph_import.import_graph` repeats TFF's own
  `deserialize_and_call_tf_computation` minus its static-shape check. If that
  function changes, compare it with `import_graph`: the `pb.TensorFlow` proto
  fields read (parameter/result bindings, `initialize_op`,
  `session_token_tensor_name`, `graph_def`) must still be all there is.
- `eager_context`, `FunctionCallOptions` (TensorFlow's eager `context`): the
  per-call Grappler and soft-placement options (`tf_functions`).

How the tests catch a break: tests/runtime_inprocess_test.py runs every
intrinsic against TFF's C++ runtime, HGB and FedAvg on two logical devices to
1e-5 of it, the folded aggregation and per-call variable initialisation;
tests/binary_runtime_flags_test.py runs a binary under each runtime; and
`test_private_tff_imports_only_in_internals` keeps this module the only one.
"""

# pylint: disable=g-bad-import-order,unused-import
from tensorflow.python.eager import context as _eager_context
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

SyncContext = context_base.SyncContext
infer_cardinalities = cardinalities_utils.infer_cardinalities
type_to_tf_structure = type_conversions.type_to_tf_structure
type_to_py_container = type_conversions.type_to_py_container
deserialize_type = type_serialization.deserialize_type
make_data_set_from_elements = tensorflow_utils.make_data_set_from_elements
extract_tensor_names_from_binding = (
    tensorflow_utils.extract_tensor_names_from_binding)
uniquify_shared_names_with_suffix = (
    tensorflow_utils._uniquify_shared_names_with_suffix)  # pylint: disable=protected-access
add_control_dep_mappings = graph_utils.add_control_dep_mappings
unpack_graph_def = serialization_utils.unpack_graph_def
eager_context = _eager_context.context
FunctionCallOptions = _eager_context.FunctionCallOptions
