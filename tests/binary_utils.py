"""Running an experiment binary in a child process, as a user would."""

import os
import subprocess
import sys
import time
import uuid

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = 'TFF_HGB_TEST_RUN'


def run_binary(module, args, timeout=300):
  """Runs `python -m module args`; asserts nothing it started outlives it.

  Returns:
    (exit code, stdout, stderr).
  """
  marker = uuid.uuid4().hex
  env = dict(os.environ)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env['TF_CPP_MIN_LOG_LEVEL'] = '3'
  env[MARKER] = marker
  process = subprocess.Popen([sys.executable, '-m', module] + list(args),
                             cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  try:
    stdout, stderr = process.communicate(timeout=timeout)
  finally:
    if process.poll() is None:
      process.kill()
  deadline = time.monotonic() + 10
  while True:
    left = []
    for p in psutil.process_iter(['pid']):
      try:
        if (p.environ().get(MARKER) == marker and
            p.status() != psutil.STATUS_ZOMBIE):
          left.append(p)
      except (psutil.NoSuchProcess, psutil.AccessDenied,
              psutil.ZombieProcess):
        pass
    if not left:
      break
    assert time.monotonic() < deadline, f'left behind: {left}'
    time.sleep(0.2)
  return process.returncode, stdout, stderr
