"""The binaries start quietly: a bad flag is answered before TensorFlow loads,
and a run prints none of TensorFlow's C++ start-up lines unless the user asks."""

import os
import re
import subprocess
import sys
import time

import binary_utils  # tests/binary_utils.py

REPO = binary_utils.REPO
# Lines of TensorFlow's C++ logging, e.g. "2026-11-29 16:09:33.069587: W
# tensorflow/compiler/tf2tensorrt/utils/py_utils.cc:38] TF-TRT Warning: ...".
TF_LOG_LINE = re.compile(r'^\d{4}-\d\d-\d\d [\d:.]+: [IWEF] \S+\.cc:\d+\]',
                         re.MULTILINE)
TINY_RUN = ['--algorithm=fedavg', '--dataset=basicmotions',
            '--partition=iid', '--num_clients=2', '--rounds=1',
            '--batch_size=8', '--progress=false']


def _env(**overrides):
  env = binary_utils.child_env('quiet_start_test')
  # The user's environment decides the log level: none set by default.
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  env.update(overrides)
  return env


def _run(args, env, code=None):
  process = subprocess.run(
      [sys.executable] + args, cwd=REPO, env=env, capture_output=True,
      text=True, timeout=300, check=False)
  return process.returncode, process.stdout, process.stderr


def test_bad_flag_is_one_line_before_tensorflow_loads():
  started = time.perf_counter()
  code, stdout, stderr = _run(
      ['-m', 'experiments.run_experiment', '--rounds=-1'], _env())
  seconds = time.perf_counter() - started
  assert (code, stdout) == (1, '')
  assert stderr == 'error: --rounds: must be ≥ 1, got -1.\n', stderr
  # Measured, not asserted (the machine may be loaded): well under 2 s here.
  print(f'bad flag answered in {seconds:.2f} s')
  # Why it is fast: the same start, run in a process that reports whether
  # TensorFlow (or TFF) was imported by the time the binary exited.
  probe = ('import runpy, sys\n'
           "sys.argv = ['run_experiment', '--rounds=-1']\n"
           'try:\n'
           "  runpy.run_module('experiments.run_experiment', "
           "run_name='__main__', alter_sys=True)\n"
           'except SystemExit:\n'
           "  print(sorted(m for m in ('tensorflow', 'tensorflow_federated')"
           ' if m in sys.modules))\n')
  code, stdout, stderr = _run(['-c', probe], _env())
  assert stdout == '[]\n', (stdout, stderr)


def test_a_run_prints_no_tensorflow_start_up_lines(tmp_path):
  code, stdout, stderr = _run(
      ['-m', 'experiments.run_experiment', *TINY_RUN,
       f'--output_dir={tmp_path / "quiet"}'], _env())
  assert code == 0, stderr
  assert 'final' in stdout
  assert not TF_LOG_LINE.search(stderr), stderr
  assert 'Unable to register' not in stderr, stderr


def test_the_users_log_level_wins(tmp_path):
  # Level 0 asks for everything: TensorFlow's start-up lines are shown.
  code, stdout, stderr = _run(
      ['-m', 'experiments.run_experiment', *TINY_RUN,
       f'--output_dir={tmp_path / "loud"}'], _env(TF_CPP_MIN_LOG_LEVEL='0'))
  assert code == 0, stderr
  # INFO lines (e.g. cpu_feature_guard's) appear only at the user's level 0.
  info_lines = [line for line in TF_LOG_LINE.findall(stderr) if ': I ' in line]
  assert info_lines, stderr


def test_every_binary_answers_a_bad_flag_without_tensorflow():
  probe = ('import runpy, sys\n'
           'module, sys.argv = sys.argv[1], sys.argv[1:]\n'
           'try:\n'
           "  runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
           'except SystemExit as e:\n'
           "  print('tensorflow' in sys.modules, e.code not in (0, None))\n")
  cases = {
      'experiments.run_experiment': ['--clients_per_round=-2'],
      'experiments.compare': ['--seeds=0'],
      'experiments.paper_tables': ['--tables=7'],
      'experiments.study': ['--study_seeds=1', '--output_dir=/tmp/x'],
      'experiments.make_tfrecords': ['--manifest=m.csv'],
      'experiments.benchmark': ['--repeats=0'],
      'experiments.worker': ['--port=0'],
      'experiments.check_encoders': ['--epochs=0'],
      'experiments.make_encoder_data': ['--output_dir=/tmp/x',
                                        '--num_speakers=0'],
  }
  for module, args in cases.items():
    code, stdout, stderr = _run(['-c', probe, module, *args], _env())
    # The error itself (one line each) is checked by each binary's tests.
    assert stdout == 'False True\n', (module, stdout, stderr)
