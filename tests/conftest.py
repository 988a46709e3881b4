"""Test session set-up: computations run in this process (no open port); tests
that compare with TFF's C++ runtime ask for it with the `tff_runtime` fixture."""

import contextlib
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top
import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

from tff_hgb import runtime  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session', autouse=True)
def inprocess_runtime():
  """The session's default: the in-process runtime, as the binaries' default."""
  runtime.configure_runtime()
  yield
  runtime.stop_all_workers()


class TFFRuntime:
  """TFF's C++ runtime on one worker the session owns (started on first use)."""

  def __init__(self):
    stack = tff.framework.get_context_stack()
    saved = stack.current
    self.worker = runtime.set_local_context()
    self.context = stack.current
    stack.set_default_context(saved)

  @contextlib.contextmanager
  def active(self):
    """Computations inside run on the worker; the previous context returns."""
    stack = tff.framework.get_context_stack()
    saved = stack.current
    stack.set_default_context(self.context)
    try:
      yield self.worker
    finally:
      stack.set_default_context(saved)


@pytest.fixture(scope='session')
def tff_runtime():
  """The reference of the parity tests: TFF's own runtime (its worker listens
  on a port while the session lasts, so only tests that need it start it)."""
  tff_runtime = TFFRuntime()
  yield tff_runtime
  tff_runtime.worker.stop()
