"""Devices of the in-process context: parsing a device spec, setting devices up.

Logical CPUs and GPU memory growth must be set before TensorFlow initialises
its devices; asked for too late, `DeviceConfigurationError` says what to do.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence, Union

import tensorflow as tf

from tff_hgb.runtime import options


DeviceSpec = Union[None, str, Sequence[str]]


# Defined with the runtime options, so that binaries can name it without
# loading TensorFlow.
DeviceConfigurationError = options.DeviceConfigurationError


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
