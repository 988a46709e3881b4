"""Where TFF computations run: owned local workers, several workers, in-process.

The names below load on first use (PEP 562): most need TensorFlow or TFF, and
the binaries check their runtime flags (`options`) before loading either.
"""

import importlib

_SYMBOLS = {
    'configure_runtime': 'tff_hgb.runtime.configure',
    'validate_runtime_flags': 'tff_hgb.runtime.options',
    'DeviceConfigurationError': 'tff_hgb.runtime.options',
    'InProcessContext': 'tff_hgb.runtime.inprocess',
    'set_inprocess_context': 'tff_hgb.runtime.inprocess',
    'local_runtime': 'tff_hgb.runtime.local',
    'set_local_context': 'tff_hgb.runtime.local',
    'set_multi_worker_context': 'tff_hgb.runtime.local',
    'WorkerError': 'tff_hgb.runtime.workers',
    'start_worker': 'tff_hgb.runtime.workers',
    'started_workers': 'tff_hgb.runtime.workers',
    'stop_all_workers': 'tff_hgb.runtime.workers',
}


def __getattr__(name):
  if name in _SYMBOLS:
    return getattr(importlib.import_module(_SYMBOLS[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = sorted(_SYMBOLS)
