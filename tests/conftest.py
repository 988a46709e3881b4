"""Test session set-up: one owned TFF worker for the whole session."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top

from tff_hgb import runtime  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session', autouse=True)
def tff_runtime():
  """Every TFF computation of the session runs on a worker we own and stop."""
  worker = runtime.set_local_context()
  yield worker
  runtime.stop_all_workers()
