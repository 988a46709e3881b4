"""What a user may ask of the runtime, checked without side effects.

The runtime flags (--runtime, --devices, --workers, ...), their defaults and
`validate_runtime_flags`; free of TensorFlow and TFF, so that binaries answer a
bad flag before loading them (`configure.py` then sets the runtime up).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Optional, Sequence, Union


RUNTIMES = ('tff', 'inprocess')
# No open port by default: TFF's worker_binary cannot bind to loopback only.
DEFAULT_RUNTIME = 'inprocess'
# Per worker we start: bounds a worker's memory (`local.set_local_context`).
DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS = 8
# In-process: clients computed at once on each device (bounds memory).
DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE = 2

_HOSTNAME = re.compile(
    r'(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
    r'(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*')


class DeviceConfigurationError(RuntimeError):
  """The requested devices cannot be set up in this process."""


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Validated runtime arguments."""

  runtime: str = DEFAULT_RUNTIME
  devices: Optional[Union[str, tuple[str, ...]]] = None
  workers: tuple[str, ...] = ()
  local_workers: int = 0
  max_concurrent_computation_calls: int = DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS
  max_clients_in_flight_per_device: int = (
      DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE)


def parse_address(address: str, flag: str = '--workers') -> tuple[str, int]:
  """'host:port' (host a name, an IPv4 address or [IPv6]) → (host, port).

  Raises:
    ValueError: naming `flag`, for a malformed address.
  """
  text = str(address).strip()
  match = re.fullmatch(r'\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)', text)
  if not match:
    raise ValueError(f'{flag}: {address!r} is not host:port (e.g. '
                     "'10.0.0.5:8000', 'worker-1:8000' or '[::1]:8000').")
  host = match.group(1) or match.group(3)
  port = int(match.group(2) or match.group(4))
  if not 1 <= port <= 65535:
    raise ValueError(f'{flag}: port {port} of {address!r} is not in 1..65535.')
  if match.group(1):
    try:
      ipaddress.IPv6Address(host)
    except ValueError:
      raise ValueError(f'{flag}: {host!r} in {address!r} is not an IPv6 '
                       'address.') from None
  elif not _is_ipv4(host) and not _HOSTNAME.fullmatch(host):
    raise ValueError(f'{flag}: {host!r} in {address!r} is not a host name or '
                     'IPv4 address.')
  return host, port


def _is_ipv4(host: str) -> bool:
  try:
    ipaddress.IPv4Address(host)
    return True
  except ValueError:
    return False


def _as_list(value, flag: str) -> list[str]:
  if value is None:
    return []
  if isinstance(value, str):
    return [part.strip() for part in value.split(',') if part.strip()]
  if isinstance(value, (list, tuple)):
    return [str(part).strip() for part in value if str(part).strip()]
  raise ValueError(f'{flag}: expected host:port,... got {value!r}.')


def resolve_runtime(runtime: Optional[str], workers=(),
                    local_workers=0) -> str:
  """The runtime to use: `runtime`, or when None the default for the others.

  Workers only exist in TFF's runtime, so asking for them without naming a
  runtime means 'tff'; otherwise the default is 'inprocess' (no open port).
  """
  if runtime not in (None, ''):
    return runtime
  if _as_list(workers, '--workers') or local_workers:
    return 'tff'
  return DEFAULT_RUNTIME


def validate_runtime_flags(
    runtime: Optional[str] = None,
    devices: Optional[Union[str, Sequence[str]]] = None,
    workers: Union[str, Sequence[str], None] = (),
    local_workers: int = 0,
    max_concurrent_computation_calls: int = DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS,
    max_clients_in_flight_per_device: Optional[int] = None,
) -> RuntimeConfig:
  """Checks runtime arguments (no side effects).

  Args:
    runtime: 'tff' (TFF's C++ worker_binary; CPU only; listens on a port) or
      'inprocess' (TensorFlow in this process; uses GPUs; opens no port).
      None: 'tff' if `workers` or `local_workers` are given, else 'inprocess'.
    devices: inprocess only: 'cpu', 'cpu:N', 'gpu', 'gpu:N' or device names
      (list or comma-separated).
    workers: tff only: 'host:port' of running workers (list or comma-separated).
    local_workers: tff only: workers to start on 127.0.0.1 (0: one owned worker
      unless `workers` are given).
    max_concurrent_computation_calls: tff only: bound on concurrent calls of a
      computation in each worker we start (non-positive: none).
    max_clients_in_flight_per_device: inprocess only: clients computed at once
      per device (>= 1).

  Returns:
    The normalised `RuntimeConfig`.

  Raises:
    ValueError: naming the flag, e.g. '--workers: ...'.
  """
  runtime = resolve_runtime(runtime, workers, local_workers)
  if runtime not in RUNTIMES:
    raise ValueError(f'--runtime: unknown runtime {runtime!r}; expected one of '
                     f'{", ".join(RUNTIMES)}.')
  addresses = _as_list(workers, '--workers')
  for address in addresses:
    parse_address(address, '--workers')
  if len(set(addresses)) != len(addresses):
    raise ValueError(f'--workers: an address is listed twice: {addresses}.')
  if isinstance(local_workers, bool) or not isinstance(local_workers, int):
    raise ValueError(f'--local_workers: expected an integer, got '
                     f'{local_workers!r}.')
  if local_workers < 0:
    raise ValueError(f'--local_workers: must be >= 0, got {local_workers}.')
  if (isinstance(max_concurrent_computation_calls, bool) or
      not isinstance(max_concurrent_computation_calls, int)):
    raise ValueError('--max_concurrent_computation_calls: expected an '
                     f'integer, got {max_concurrent_computation_calls!r}.')
  if max_clients_in_flight_per_device is not None and (
      isinstance(max_clients_in_flight_per_device, bool) or
      not isinstance(max_clients_in_flight_per_device, int) or
      max_clients_in_flight_per_device < 1):
    raise ValueError('--max_clients_in_flight_per_device: expected an integer '
                     f'>= 1, got {max_clients_in_flight_per_device!r}.')
  if runtime == 'tff':
    if devices not in (None, '', [], ()):
      raise ValueError(
          f'--devices={_show(devices)} needs --runtime=inprocess: TFF\'s '
          'worker_binary is built without CUDA and runs on the CPU only.')
    if max_clients_in_flight_per_device is not None:
      raise ValueError('--max_clients_in_flight_per_device needs '
                       '--runtime=inprocess (with --runtime=tff use '
                       '--max_concurrent_computation_calls).')
    return RuntimeConfig(
        runtime=runtime, workers=tuple(addresses), local_workers=local_workers,
        max_concurrent_computation_calls=max_concurrent_computation_calls)
  if addresses or local_workers:
    raise ValueError('--workers / --local_workers need --runtime=tff: the '
                     'in-process runtime uses only this process\'s devices.')
  if devices in ('', [], ()):
    devices = None
  if devices is not None:
    # Device names are parsed by TensorFlow, loaded only when some are given.
    from tff_hgb.runtime.inprocess import devices as devices_lib  # pylint: disable=g-import-not-at-top
    try:
      devices_lib.parse_device_spec(devices)
    except ValueError as e:
      raise ValueError(f'--devices: {e}') from None
  return RuntimeConfig(
      runtime=runtime,
      devices=devices if devices is None or isinstance(devices, str)
      else tuple(devices),
      max_concurrent_computation_calls=max_concurrent_computation_calls,
      max_clients_in_flight_per_device=(
          max_clients_in_flight_per_device or
          DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE))


def _show(value) -> str:
  return value if isinstance(value, str) else ','.join(value)


def define_runtime_flags() -> None:
  """Defines the runtime absl flags (once; no-op for flags already defined)."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  def define(kind, name, default, help_text):
    if name not in flags.FLAGS:
      getattr(flags, f'DEFINE_{kind}')(name, default, help_text)

  define('string', 'runtime', None,
         "Where TFF computations run: 'inprocess' (TensorFlow in this "
         "process, uses GPUs, opens no port) or 'tff' (TFF's C++ "
         "worker_binary, CPU only; it listens unauthenticated on all "
         "interfaces while the run lasts). Default: 'inprocess', or 'tff' "
         "when --workers or --local_workers are given.")
  define('string', 'devices', None,
         "--runtime=inprocess: 'gpu', 'gpu:N', 'cpu', 'cpu:N' or device names "
         "('/device:GPU:0,/device:GPU:1'); default all GPUs, else the CPU.")
  define('list', 'workers', [],
         '--runtime=tff: host:port,... of workers started with '
         '`python -m experiments.worker --port=P` on other machines.')
  define('integer', 'local_workers', 0,
         '--runtime=tff: start this many workers on 127.0.0.1 and split each '
         "round's clients over them.")
  define('integer', 'max_concurrent_computation_calls',
         DEFAULT_MAX_CONCURRENT_COMPUTATION_CALLS,
         '--runtime=tff: concurrent client computations per worker we start '
         '(bounds memory; non-positive: no bound).')
  define('integer', 'max_clients_in_flight_per_device', None,
         '--runtime=inprocess: clients computed at once per device (bounds '
         f'memory; default {DEFAULT_MAX_CLIENTS_IN_FLIGHT_PER_DEVICE}).')


def runtime_kwargs_from_flags() -> dict:
  from absl import flags  # pylint: disable=g-import-not-at-top

  values = flags.FLAGS
  return dict(
      runtime=values.runtime, devices=values.devices, workers=values.workers,
      local_workers=values.local_workers,
      max_concurrent_computation_calls=values.max_concurrent_computation_calls,
      max_clients_in_flight_per_device=values.max_clients_in_flight_per_device)
