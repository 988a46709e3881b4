"""The one call binaries make to choose where TFF computations run.

    description = configure_runtime()                              # in-process, no port
    description = configure_runtime('tff')                         # one owned local worker
    description = configure_runtime('tff', local_workers=4)        # rounds split over 4 local workers
    description = configure_runtime('tff', workers=['h1:8000', 'h2:8000'])  # other machines
    description = configure_runtime('inprocess', devices='gpu')    # this process's GPUs

`validate_runtime_flags` checks the same arguments without side effects and
raises `ValueError` naming the offending flag, so a binary can fail before it
loads data. `define_runtime_flags` / `configure_runtime_from_flags` give binaries
the absl flags --runtime, --devices, --workers, --local_workers,
--max_concurrent_computation_calls and --max_clients_in_flight_per_device.

The default (runtime=None) is 'inprocess', or 'tff' when `workers` or
`local_workers` are given: the in-process runtime opens no port, while every TFF
`worker_binary` listens unauthenticated on all interfaces (docs/RELIABILITY.md,
"Security").

With runtime='inprocess' (the default), call `configure_runtime` before
anything initialises TensorFlow's devices (building datasets, models or
processes): logical CPU devices and GPU memory growth can only be set before
that.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from tff_hgb.runtime import inprocess
from tff_hgb.runtime import local
from tff_hgb.runtime import options

# The checks and flags live in options.py (TensorFlow-free); these names stay
# here too, where binaries and users have always found them.
RUNTIMES = options.RUNTIMES
DEFAULT_RUNTIME = options.DEFAULT_RUNTIME
DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS = (
    options.DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS)
RuntimeConfig = options.RuntimeConfig
parse_address = options.parse_address
resolve_runtime = options.resolve_runtime
validate_runtime_flags = options.validate_runtime_flags
define_runtime_flags = options.define_runtime_flags
runtime_kwargs_from_flags = options.runtime_kwargs_from_flags


def configure_runtime(
    runtime: Optional[str] = None,
    devices: Optional[Union[str, Sequence[str]]] = None,
    workers: Union[str, Sequence[str], None] = (),
    local_workers: int = 0,
    max_concurrent_computation_calls: int = DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS,
    max_clients_in_flight_per_device: Optional[int] = None,
) -> str:
  """Installs the TFF execution context the arguments ask for.

  * runtime=None: 'tff' if `workers` or `local_workers` are given, else
    'inprocess'.
  * runtime='tff', no workers: TFF's C++ runtime on one worker we own
    (`local.set_local_context`).
  * runtime='tff' with `workers` and/or `local_workers`: each round's clients
    split over those workers (`local.set_multi_worker_context`); works for
    computations whose aggregations do not depend on one another (all of this
    package's algorithms and TFF's FedAvg).
  * runtime='inprocess': `inprocess.set_inprocess_context(devices)`; must come
    before TensorFlow initialises its devices.

  Workers we start are stopped at exit (`workers.stop_all_workers`).

  Returns:
    A one-line description for logs.

  Raises:
    ValueError: bad arguments (naming the flag).
    WorkerError: a worker cannot be started or reached.
    inprocess.DeviceConfigurationError: devices absent or configured too late.
  """
  config = validate_runtime_flags(
      runtime, devices, workers, local_workers,
      max_concurrent_computation_calls, max_clients_in_flight_per_device)
  if config.runtime == 'inprocess':
    context = inprocess.set_inprocess_context(
        config.devices, max_clients_in_flight_per_device=(
            config.max_clients_in_flight_per_device))
    return f'runtime=inprocess: {context.describe()}'
  if not config.workers and not config.local_workers:
    worker = local.set_local_context(
        max_concurrent_computation_calls=config.max_concurrent_computation_calls)
    return (f'runtime=tff: TFF C++ runtime on an owned local worker '
            f'{worker.address} (pid {worker.pid})')
  addresses = local.set_multi_worker_context(
      config.workers, local_workers=config.local_workers,
      max_concurrent_computation_calls=config.max_concurrent_computation_calls)
  return (f'runtime=tff: clients split over {len(addresses)} TFF workers '
          f'({", ".join(addresses)}; {config.local_workers} started here)')


def configure_runtime_from_flags() -> str:
  """`configure_runtime` with the flags of `define_runtime_flags`."""
  return configure_runtime(**options.runtime_kwargs_from_flags())
