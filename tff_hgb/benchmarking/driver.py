"""Runs the chosen sections of the benchmark in order on an owned TFF worker.

Writes the report after each section; stops every worker on every exit path.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from tff_hgb import runtime
from tff_hgb.benchmarking import flops
from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments
from tff_hgb.benchmarking import local_step
from tff_hgb.benchmarking import media
from tff_hgb.benchmarking import memory
from tff_hgb.benchmarking import plain_loop
from tff_hgb.benchmarking import ratio
from tff_hgb.benchmarking import report as report_lib
from tff_hgb.benchmarking import runtimes
from tff_hgb.benchmarking import scaling
from tff_hgb.benchmarking import settings as settings_lib
from tff_hgb.benchmarking import workers

# Section name (--sections) → its module, in the order the sections run.
SECTIONS = collections.OrderedDict(
    memory=memory, ratio=ratio, flops=flops, runtimes=runtimes, media=media,
    scaling=scaling, workers=workers, local_step=local_step)
assert tuple(SECTIONS) == settings_lib.SECTIONS


def run_sections(settings: settings_lib.Settings, command: str,
                 start: float) -> dict[str, Any]:
  """Runs `settings.sections` in order; writes and returns the report.

  Args:
    settings: the program's settings.
    command: the command line, as the report shows it.
    start: `time.perf_counter()` when the program started (total runtime).
  """
  report = report_lib.new_report(settings, command)
  bench = None
  try:
    worker = runtime.set_local_context()
    bench = harness_lib.Harness(settings, worker)
    report['workload'] = bench.workload.describe()
    report['results'] = bench.results
    for name, section in SECTIONS.items():
      if name not in settings.sections:
        continue
      section_start = time.perf_counter()
      section.run(bench)
      report['section_seconds'][name] = round(
          time.perf_counter() - section_start, 1)
      report['total_runtime_s'] = round(time.perf_counter() - start, 1)
      report_lib.write_reports(report, settings.output_dir)
  finally:
    if bench is not None:
      bench.close()
    runtime.stop_all_workers()
  report['machine_after'] = collections.OrderedDict(
      load_average_1_5_15=instruments.machine_info()['load_average_1_5_15'])
  report['total_runtime_s'] = round(time.perf_counter() - start, 1)
  report_lib.write_reports(report, settings.output_dir)
  return report


def serve_plain_loop(settings: settings_lib.Settings, local_epochs: int
                     ) -> None:
  """The plain-loop child (`--plain_loop_server`): `plain_loop.serve`."""
  # The child runs no TFF computation; the owned context only makes sure
  # that nothing could start TFF's default (unowned) worker.
  runtime.set_local_context()
  try:
    plain_loop.serve(settings, local_epochs)
  finally:
    runtime.stop_all_workers()
