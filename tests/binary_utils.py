"""Running an experiment binary in a child process, as a user would."""

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = 'TFF_HGB_TEST_RUN'


def child_env(marker):
  """The environment of a child binary, tagged with `marker`."""
  env = dict(os.environ)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  env[MARKER] = marker
  return env


def processes_with(marker):
  """Live (non-zombie) processes whose environment carries `marker`."""
  found = []
  for p in psutil.process_iter(['pid']):
    try:
      if (p.environ().get(MARKER) == marker and
          p.status() != psutil.STATUS_ZOMBIE):
        found.append(p)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
      pass
  return found


def assert_none_left(marker, seconds=10):
  """Waits up to `seconds` for every process tagged `marker` to be gone."""
  deadline = time.monotonic() + seconds
  while True:
    left = processes_with(marker)
    if not left:
      return
    assert time.monotonic() < deadline, f'left behind: {left}'
    time.sleep(0.2)


def start(module, args):
  """Starts `python -m module args` as a user would, tagged with a marker."""
  marker = uuid.uuid4().hex
  process = subprocess.Popen([sys.executable, '-m', module] + list(args),
                             cwd=REPO, env=child_env(marker),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  process.marker = marker
  return process


def finish(process, timeout=300):
  """Waits for a started binary; asserts nothing it started outlives it.

  Returns:
    (exit code, stdout, stderr).
  """
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  finally:
    if process.poll() is None:
      process.kill()
  assert_none_left(process.marker)
  return process.returncode, stdout, stderr


def run_binary(module, args, timeout=300):
  """Runs `python -m module args` to its end: (exit code, stdout, stderr)."""
  return finish(start(module, args), timeout)


def kill_at_checkpoint(process, output_dir, round_num, timeout=240):
  """SIGKILLs a started run once its round-`round_num` checkpoint exists.

  Returns:
    finish()'s (exit code, stdout, stderr) of the killed run.
  """
  checkpoint = os.path.join(output_dir, 'state', f'program_state_{round_num}')
  deadline = time.monotonic() + timeout
  try:
    while not os.path.isdir(checkpoint):
      assert process.poll() is None, process.communicate()[1][-3000:]
      assert time.monotonic() < deadline, f'no round-{round_num} checkpoint'
      time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
  finally:
    outcome = finish(process, timeout)
  assert outcome[0] == -signal.SIGKILL
  assert not os.path.exists(os.path.join(output_dir, 'summary.json')), (
      'the run finished before it was killed')
  return outcome
