"""Running an experiment binary in a child process, as a user would."""

import os
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


def run_binary(module, args, timeout=300):
  """Runs `python -m module args`; asserts nothing it started outlives it.

  Returns:
    (exit code, stdout, stderr).
  """
  marker = uuid.uuid4().hex
  process = subprocess.Popen([sys.executable, '-m', module] + list(args),
                             cwd=REPO, env=child_env(marker),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  finally:
    if process.poll() is None:
      process.kill()
  assert_none_left(marker)
  return process.returncode, stdout, stderr
