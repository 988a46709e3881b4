"""What the benchmark's sections share: settings, workload, contexts.

The owned worker is TFF's default context; sections switch it per turn.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable

import tensorflow_federated as tff

from tff_hgb import runtime
from tff_hgb.benchmarking import settings as settings_lib
from tff_hgb.benchmarking import workload as workload_lib


class Harness:
  """The sections' shared state; each section writes its figures to `results`.

  Attributes:
    settings: the program's `Settings`.
    workload: the `Workload` every section trains.
    local_worker: the owned worker of `runtime.set_local_context()`.
    local_context: its context, TFF's default between measurements.
    results: section's key → its figures (benchmark.json's 'results').
    round_times: (process name, E) → seconds of its rounds in the ratio
      section, which the flops section puts over the FLOP floor.
    inprocess_status: why the in-process context is unavailable, or None.
  """

  def __init__(self, settings: settings_lib.Settings, local_worker):
    self.settings = settings
    self.workload = workload_lib.Workload(settings)
    self.local_worker = local_worker
    self.local_context = tff.framework.get_context_stack().current
    self.results = collections.OrderedDict()
    self.round_times = {}  # (name, E) → list of seconds (ratio section)
    self._inprocess_context = None
    self.inprocess_status = None

  def log(self, message: str) -> None:
    print(f'[benchmark {time.strftime("%H:%M:%S")}] {message}', flush=True)

  def in_context(self, context, measure: Callable[[], Any]
                 ) -> Callable[[], Any]:
    """`measure`, run with `context` as TFF's default, then the owned one's."""
    stack = tff.framework.get_context_stack()

    def measured():
      stack.set_default_context(context)
      try:
        return measure()
      finally:
        stack.set_default_context(self.local_context)
    return measured

  def inprocess(self):
    """The in-process context on the CPU (one per program, made on first use).

    Returns None, with the reason in `self.inprocess_status`, if it fails.
    """
    if self._inprocess_context is None and self.inprocess_status is None:
      try:
        self._inprocess_context = runtime.set_inprocess_context(devices='cpu')
      except Exception as e:  # pylint: disable=broad-except
        self.inprocess_status = ('pending: tff_hgb.runtime.inprocess '
                                 f'unavailable ({type(e).__name__}: {e})')
      finally:
        tff.framework.get_context_stack().set_default_context(
            self.local_context)
    return self._inprocess_context

  def close(self) -> None:
    if self._inprocess_context is not None:
      self._inprocess_context.close()
