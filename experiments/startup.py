"""How the binaries start: flags checked before TensorFlow loads, then TensorFlow
loaded quietly (its C++ log level set unless the user set it, start-up noise dropped).

`experiments/__init__.py` calls `set_default_log_level` before any binary
imports TensorFlow; `run(main, check)` is every binary's `app.run`: a bad flag
is answered before TensorFlow's seconds-long import.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
from typing import Callable, TypeVar

from absl import app

LOG_LEVEL_VARIABLE = 'TF_CPP_MIN_LOG_LEVEL'
# TensorFlow's C++ INFO and WARNING lines hidden, errors shown.
DEFAULT_LOG_LEVEL = '2'
# Lines TF 2.14's wheel logs as errors (E) on every import on a machine
# without CUDA, though nothing is wrong: its CUDA plugins register twice.
START_UP_NOISE = re.compile(
    r'Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register '
    r'factory for plugin cu(DNN|FFT|BLAS) when one has already been registered')

# Whether the user set the level: then they see everything TensorFlow prints.
_user_chose_log_level = None


def set_default_log_level() -> None:
  """TF_CPP_MIN_LOG_LEVEL=2 unless the user set it (call before TF loads)."""
  global _user_chose_log_level
  if _user_chose_log_level is None:
    _user_chose_log_level = LOG_LEVEL_VARIABLE in os.environ
  os.environ.setdefault(LOG_LEVEL_VARIABLE, DEFAULT_LOG_LEVEL)


@contextlib.contextmanager
def _without_start_up_noise():
  """Holds back what is written to file descriptor 2, then writes it back
  without the START_UP_NOISE lines (TensorFlow's C++ code writes there
  directly, so sys.stderr cannot filter it)."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      for line in held:
        if not START_UP_NOISE.search(line.decode('utf-8', 'replace')):
          os.write(2, line)


def import_tensorflow() -> None:
  """Imports TensorFlow and TFF without their start-up noise.

  Python logging (absl's, TensorFlow's) is limited to warnings and errors: the
  progress bar shows progress. Binaries call this once their flags are checked.
  """
  set_default_log_level()
  quiet = contextlib.nullcontext() if _user_chose_log_level else (
      _without_start_up_noise())
  with quiet:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_federated  # pylint: disable=g-import-not-at-top,unused-import
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  # E.g. TF's tf.function retracing notices when models are rebuilt per run.
  tf.get_logger().setLevel('ERROR')


_Checked = TypeVar('_Checked')


def _exit_on_sigterm(signum, frame) -> None:
  del frame
  raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
  """SIGTERM (`kill`, a batch system's stop) ends the binary as SystemExit(143).

  Unhandled, SIGTERM kills the process where it stands; as an exception it
  unwinds like Ctrl-C: `finally` blocks run (a study logs its sitting's wall
  time, a --jobs pool stops its workers) and finished rounds stay on disk.
  """
  signal.signal(signal.SIGTERM, _exit_on_sigterm)


def run(main: Callable[[_Checked], None], check: Callable[[], _Checked]
        ) -> None:
  """`app.run` for a binary: parse flags, `check()` them, load TF, `main`.

  `check()` validates the parsed flags without TensorFlow and returns what
  `main` needs; it ends the program (SystemExit with a one-line message) on a
  user error. TensorFlow loads while absl parses the flags, before `app.run`'s
  own set-up: imported after it, TF 2.14 starts without its eager context
  switch and Keras builds graph placeholders instead of Keras tensors.

  Args:
    main: the binary's body, called with `check()`'s result.
    check: validates the parsed flags.
  """
  checked = []
  exit_cleanly_on_sigterm()

  def parse_check_and_load(argv):
    args = app.parse_flags_with_usage(argv)
    if len(args) > 1:
      raise SystemExit(f'error: unexpected arguments {" ".join(args[1:])}')
    checked.append(check())
    import_tensorflow()
    return args

  app.run(lambda unused_argv: main(checked[0]),
          flags_parser=parse_check_and_load)
