"""An in-process TFF execution context: TensorFlow on this process's devices.

The package's public API; one module per idea (see the map below).

The pip wheel's `worker_binary` is built without CUDA, so on a GPU host every
computation of TFF's C++ runtime still runs on the CPU. This context runs the
same computations in this Python process instead, where TensorFlow does see the
GPUs:

1. Compile (`context`): `tff.backends.native.desugar_and_transform_to_native`,
   the pipeline our C++ contexts use (`runtime.local`), lowers a computation to
   a call-dominant building block made of lambdas, blocks, calls, selections,
   structs, references, literals, federated intrinsics and
   `CompiledComputation`s of the TensorFlow kind.
2. Interpret (`interpreter`, `intrinsics`, `value_utils`): each building
   block node is turned once into a Python closure; federated values are Python
   values (SERVER: the value; CLIENTS: a list with one value per client, also
   when all-equal), sequences are `tf.data.Dataset`s. All 27 intrinsics of TFF
   0.87 are implemented (`SUPPORTED_INTRINSICS`).
3. TensorFlow (`tf_functions`, `graph_import`): every `CompiledComputation` is
   imported into a `tf.compat.v1.wrap_function` graph under `tf.device(device)`
   (as TFF's `tensorflow_utils.deserialize_and_call_tf_computation` does, minus
   its static-shape check, see `graph_import.import_graph`), once per
   (computation, device, slot) and cached while a compiled program uses it. Its
   initializer runs before every call, so a call is a pure function as in the
   C++ runtime (which uses fresh resource containers). Resource shared names
   get a suffix unique to the (device, slot), so concurrent clients never share
   variables, and library functions are renamed per computation, because all
   imports share the process's one function library.
4. Devices (`devices`, `context`): the clients of a `federated_map` (and
   `federated_eval_at_clients`) go round-robin over the devices (client i on
   device i mod D); each device has `max_clients_in_flight_per_device` worker
   threads, which bounds memory. Server-side work (`federated_apply`,
   aggregation) runs on the first device. `context.placement_log` records which
   device ran each client computation.

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

Every private TFF (and TensorFlow) symbol the package uses is imported in
`_tff_internals` alone, with what to check on a TFF upgrade.
"""

from tff_hgb.runtime.inprocess.context import DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE
from tff_hgb.runtime.inprocess.context import InProcessContext
from tff_hgb.runtime.inprocess.context import PLACEMENT_LOG_LIMIT
from tff_hgb.runtime.inprocess.context import set_inprocess_context
from tff_hgb.runtime.inprocess.devices import configure_devices
from tff_hgb.runtime.inprocess.devices import DeviceConfigurationError
from tff_hgb.runtime.inprocess.devices import DeviceSpec
from tff_hgb.runtime.inprocess.devices import parse_device_spec
from tff_hgb.runtime.inprocess.intrinsics import SUPPORTED_INTRINSICS
from tff_hgb.runtime.inprocess.value_utils import UnsupportedComputationError
