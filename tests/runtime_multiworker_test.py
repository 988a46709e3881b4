"""Rounds split over several TFF workers: parity, a dying worker, the launcher.

Every test puts the session's context back and stops the workers it started;
`no_stray_workers` then checks that no worker_binary it started is left.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import psutil
import pytest
import tensorflow_federated as tff

from tff_hgb import runtime

import runtime_inprocess_test as helpers  # pylint: disable=g-bad-import-order

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _worker_binaries(match=lambda cmdline: True):
  found = []
  for process in psutil.process_iter(['pid', 'cmdline']):
    cmdline = ' '.join(process.info['cmdline'] or [])
    if 'worker_binary' in cmdline and match(cmdline):
      found.append(process.info['pid'])
  return found


def _wait_gone(pids, timeout=10.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    alive = [p for p in pids if psutil.pid_exists(p) and
             psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    if not alive:
      return []
    time.sleep(0.1)
  return alive


def _descendants():
  return {c.pid for c in psutil.Process().children(recursive=True)}


@pytest.fixture
def no_stray_workers():
  """Restores the session context; stops and checks this test's workers."""
  stack = tff.framework.get_context_stack()
  saved, before = stack.current, list(runtime.started_workers())
  ours_before = set(_worker_binaries()) & _descendants()  # Session's worker.
  yield
  stack.set_default_context(saved)
  started = [w for w in runtime.started_workers() if w not in before]
  for worker in started:
    worker.stop()
  leftover = (set(_worker_binaries()) & _descendants()) - ours_before
  assert not _wait_gone(sorted(leftover)), f'workers left: {leftover}'
  assert all(not w.alive() for w in started)


def test_hgb_split_over_two_local_workers_matches_tff_runtime(no_stray_workers,
                                                              tff_runtime):
  reference = helpers.reference_hgb_weights(tff_runtime)
  description = runtime.configure_runtime('tff', local_workers=2)
  assert 'split over 2 TFF workers' in description
  _, weights = helpers.train(helpers.build_hgb(), helpers.make_clients())
  assert helpers.max_abs_diff(weights, reference) <= 1e-5


def test_dead_worker_is_named_and_a_fresh_context_resumes(no_stray_workers):
  process = helpers.build_fedavg()
  data = helpers.train_data(helpers.make_clients())
  # Reference: two uninterrupted rounds in the session's runtime.
  state, _ = helpers.train(process, data, rounds=1)
  _, reference = helpers.train(process, data, rounds=1, state=state)

  addresses = runtime.set_multi_worker_context(local_workers=2)
  state, _ = helpers.train(process, data, rounds=1)  # Round 1, saved.
  victim = next(w for w in runtime.started_workers()
                if w.address == addresses[1])
  os.kill(victim.pid, signal.SIGKILL)
  victim.process.wait(timeout=10)
  with pytest.raises(runtime.WorkerError) as error:
    process.next(state, data)  # Round 2 dies with the worker...
  assert addresses[1] in str(error.value)
  assert str(victim.pid) in str(error.value)
  assert addresses[0] not in str(error.value)

  # ...and a fresh context continues from the last finished round's state.
  runtime.set_multi_worker_context(local_workers=2)
  _, resumed = helpers.train(process, data, rounds=1, state=state)
  assert helpers.max_abs_diff(resumed, reference) <= 1e-5


def test_worker_launcher_serves_and_stops_on_sigterm(no_stray_workers,
                                                     tmp_path):
  port = portpicker.pick_unused_port()
  env = dict(os.environ, PYTHONPATH=_REPO, TF_CPP_MIN_LOG_LEVEL='2')
  stderr_path = tmp_path / 'stderr.txt'
  with open(stderr_path, 'w') as stderr:
    launcher = subprocess.Popen(
        [sys.executable, '-m', 'experiments.worker', f'--port={port}'],
        cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
  on_port = lambda cmdline: f'--port={port}' in cmdline.split()
  try:
    line = launcher.stdout.readline()  # Blocks until READY or exit.
    assert line.startswith(f'READY 127.0.0.1:{port}'), (
        line + stderr_path.read_text()[-2000:])
    assert _worker_binaries(on_port)

    runtime.set_multi_worker_context([f'127.0.0.1:{port}'])

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def total(x):
      return tff.federated_sum(x)

    assert total([1.0, 2.0, 3.5]) == pytest.approx(6.5)

    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == 0
    assert launcher.stdout.read() == ''  # Nothing holds the pipe open.
    assert 'stopped (SIGTERM)' in stderr_path.read_text()
    assert not _wait_gone(_worker_binaries(on_port))
  finally:
    if launcher.poll() is None:
      launcher.kill()
      launcher.wait()
    for pid in _worker_binaries(on_port):  # Only if the test failed.
      psutil.Process(pid).kill()
