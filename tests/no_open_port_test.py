"""A default run listens on no TCP port; `--runtime=tff` does (and says so).

Each run is a `python -m experiments.run_experiment` child; while it runs, the
test polls the LISTEN sockets of the child and of every process it started
(its descendants, and any process carrying its environment marker, which also
finds a worker re-parented to init).
"""

import subprocess
import sys
import time
import uuid

import psutil

import binary_utils  # tests/binary_utils.py

# Two rounds of FedAvg on 3 clients: the smallest run that trains.
_FLAGS = ['--algorithm=fedavg', '--dataset=basicmotions', '--num_clients=3',
          '--rounds=2', '--batch_size=8', '--progress=false']
_TIMEOUT = 240


def _listening(processes):
  """{(pid, ip, port)} of the TCP sockets `processes` listen on."""
  found = set()
  for process in processes:
    try:
      for conn in process.net_connections(kind='inet'):
        if conn.status == psutil.CONN_LISTEN:
          found.add((process.pid, conn.laddr.ip, conn.laddr.port))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
      pass
  return found


def _run_and_watch(tmp_path, *flags):
  """Runs the binary; returns (exit code, stderr, listeners seen, polls)."""
  marker = uuid.uuid4().hex
  stderr_path = tmp_path / 'stderr.txt'
  with open(stderr_path, 'w') as stderr:
    child = subprocess.Popen(
        [sys.executable, '-m', 'experiments.run_experiment', *_FLAGS,
         f'--output_dir={tmp_path / "run"}', *flags],
        cwd=binary_utils.REPO, env=binary_utils.child_env(marker),
        stdout=subprocess.DEVNULL, stderr=stderr)
  seen, polls = set(), 0
  deadline = time.monotonic() + _TIMEOUT
  try:
    root = psutil.Process(child.pid)
    while child.poll() is None and time.monotonic() < deadline:
      try:
        tree = [root] + root.children(recursive=True)
      except psutil.NoSuchProcess:
        break
      seen |= _listening(tree + binary_utils.processes_with(marker))
      polls += 1
      time.sleep(0.1)
  finally:
    if child.poll() is None:
      child.kill()
    child.wait()
    binary_utils.assert_none_left(marker)
  return child.returncode, stderr_path.read_text(), seen, polls


def test_default_run_opens_no_listening_socket(tmp_path):
  code, stderr, seen, polls = _run_and_watch(tmp_path)
  assert code == 0, stderr[-2000:]
  assert polls >= 20, f'only {polls} polls: the run was not watched'
  assert not seen, f'listening sockets of a default run: {sorted(seen)}'
  assert 'listens on' not in stderr


def test_tff_runtime_listens_on_all_interfaces_and_warns(tmp_path):
  # The same watch sees TFF's worker: the test above is not vacuous.
  code, stderr, seen, _ = _run_and_watch(tmp_path, '--runtime=tff')
  assert code == 0, stderr[-2000:]
  assert seen, 'no listening socket seen under --runtime=tff'
  # worker_binary binds [::]:<port> (all interfaces); see RELIABILITY.md.
  assert {ip for _, ip, _ in seen} <= {'::', '0.0.0.0'}, sorted(seen)
  warnings = [line for line in stderr.splitlines() if 'listens on *:' in line]
  assert len(warnings) == 1, stderr[-2000:]
  port = next(iter(seen))[2]
  assert warnings[0].startswith('warning: TFF worker_binary') and (
      f'*:{port} ' in warnings[0]), warnings[0]


def test_this_test_session_runs_in_process_by_default():
  # make test's own computations run as the binaries' default does; only the
  # parity tests start a TFF worker (tests/conftest.py, `tff_runtime`).
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from tff_hgb.runtime import inprocess  # pylint: disable=g-import-not-at-top
  assert isinstance(tff.framework.get_context_stack().current,
                    inprocess.InProcessContext)
  assert not _listening([psutil.Process()])
