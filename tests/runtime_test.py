"""The local runtime runs TFF computations and never leaves a worker behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest
import tensorflow_federated as tff

from tff_hgb import runtime

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child that starts our runtime, runs a federated computation, prints the
# worker's pid and then waits to be signalled.
_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import tensorflow_federated as tff
    from tff_hgb import runtime
    worker = runtime.set_local_context()

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def mean(x):
      return tff.federated_mean(x)

    assert abs(mean([1.0, 2.0, 6.0]) - 3.0) < 1e-6
    print('WORKER', worker.pid, flush=True)
    time.sleep(600)
""")


def _worker_pids_of(pid):
  return [p.pid for p in psutil.process_iter(['cmdline'])
          if 'worker_binary' in ' '.join(p.info['cmdline'] or [])
          and p.pid == pid]


def _run_child_and_signal(sig):
  env = dict(os.environ, PYTHONPATH=_REPO)
  child = subprocess.Popen([sys.executable, '-c', _CHILD], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True)
  try:
    line = ''
    deadline = time.monotonic() + 180
    while not line.startswith('WORKER') and time.monotonic() < deadline:
      line = child.stdout.readline()
      if not line and child.poll() is not None:
        break
    assert line.startswith('WORKER'), 'child did not start its worker'
    worker_pid = int(line.split()[1])
    assert psutil.pid_exists(worker_pid)
    child.send_signal(sig)
    child.wait(timeout=60)
    # The child's stdout must reach EOF: nothing else holds the pipe open.
    assert child.stdout.read() == ''
    deadline = time.monotonic() + 10
    while _worker_pids_of(worker_pid) and time.monotonic() < deadline:
      time.sleep(0.1)
    return worker_pid
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()


def test_federated_mean_runs_on_owned_worker(tff_runtime):
  @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
  def weighted(x):
    return tff.federated_sum(x)

  with tff_runtime.active() as worker:
    assert weighted([1.0, 2.5]) == pytest.approx(3.5)
  assert worker.alive()
  assert worker in runtime.started_workers()


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_worker_dies_with_its_parent(sig):
  worker_pid = _run_child_and_signal(sig)
  assert not _worker_pids_of(worker_pid), (
      f'worker {worker_pid} survived {sig.name} of its parent')


def test_stop_all_workers_stops_extra_worker():
  worker = runtime.start_worker()
  runtime.local.workers.wait_until_ready(worker.address, process=worker)
  worker.stop()
  assert not worker.alive()
  assert worker not in runtime.started_workers()
