"""Where TFF computations run: owned local workers, several workers, in-process.

The names below load on first use (PEP 562): most need TensorFlow or TFF, and
the binaries check their runtime flags (`options`) before loading either.
"""

from tff_hgb import lazy

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


__getattr__ = lazy.module_getattr(__name__, _SYMBOLS)


__all__ = sorted(_SYMBOLS)
