"""Where TFF computations run: owned local workers, several workers, in-process."""

from tff_hgb.runtime.configure import configure_runtime
from tff_hgb.runtime.configure import validate_runtime_flags
from tff_hgb.runtime.inprocess import DeviceConfigurationError
from tff_hgb.runtime.inprocess import InProcessContext
from tff_hgb.runtime.inprocess import set_inprocess_context
from tff_hgb.runtime.local import local_runtime
from tff_hgb.runtime.local import set_local_context
from tff_hgb.runtime.local import set_multi_worker_context
from tff_hgb.runtime.workers import WorkerError
from tff_hgb.runtime.workers import start_worker
from tff_hgb.runtime.workers import started_workers
from tff_hgb.runtime.workers import stop_all_workers
