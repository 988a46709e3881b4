r"""Runtime benchmarks of HGB on TFF (issue 7): `make bench`.

  python -m experiments.benchmark --output_dir=results/bench
  python -m experiments.benchmark --quick --output_dir=/tmp/bench   # smoke run

Writes <output_dir>/benchmark.json (every figure: median, min, max and the
values of its repeats) and <output_dir>/BENCHMARKS.md (a table with the machine
and versions). What each figure compares is described in docs/BENCHMARKS.md.
Every comparison is measured side by side in one run (A B A B ...) after
warm-up, and reported as the median of per-repeat ratios, so a shared, noisy
machine moves both sides of a ratio together; absolute seconds from a loaded
machine are still only indicative.

Sections (--sections, in this order):
  memory    one long HGB run: peak RSS, RSS growth from round 10 to the last
            round (this process + its TFF workers), client-update traces
  ratio     one HGB round / one FedAvg round (TFF build_weighted_fed_avg, the
            registry's 'fedavg' with the iterator loop; also TFF's default
            reduce loop), equal training work, E = --local_epochs
  flops     round time / the time its arithmetic needs at the measured matmul
            rate, and where the rest goes (CPU split, perf of the worker)
  runtimes  TFF runtime and in-process context vs a plain single-process loop,
            and the in-process round with --jit
  media     the media workload (conv encoders on a spectrogram [50, 32] and a
            16x16x3 frame): round time over its FLOP floor, HGB/FedAvg,
            in-process and TFF, with and without --jit
  scaling   seconds per round at --scaling_clients clients per round
  workers   seconds per round with --worker_counts local workers (mergeable
            context), every context's workers stopped afterwards
  local_step  one local step of mmpareto, ogm_ge, ogm / fedavg_all_heads's
            (ALGORITHM.md §9), plain TF, side by side

The TFF worker is started with `runtime.set_local_context()` and every worker
the program starts is stopped on every exit path.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

from absl import flags

from experiments import startup
from tff_hgb.benchmarking import settings as settings_lib

_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'results/bench',
                                  'Where benchmark.json and BENCHMARKS.md go.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 9, 'Timed repeats of every side-by-side comparison.')
_WARMUP = flags.DEFINE_integer(
    'warmup', 2, 'Untimed rounds of every configuration before its repeats.')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 100, 'Rounds of the long run (memory section); RSS growth is '
    'from round 10 to this round.')
_CLIENTS = flags.DEFINE_integer(
    'clients', 10, 'Clients per round of the ratio, flops and runtimes '
    'sections, and of the long run.')
_EXAMPLES_PER_CLIENT = flags.DEFINE_integer(
    'examples_per_client', 100,
    'Examples per client (10% local validation, at least 4).')
_LOCAL_EPOCHS = flags.DEFINE_list('local_epochs', ['1', '2'],
                                  'Values of E for the HGB/FedAvg ratio.')
_SCALING_CLIENTS = flags.DEFINE_list(
    'scaling_clients', ['10', '100', '1000'], 'Clients per round to scale over.')
_SCALING_REPEATS = flags.DEFINE_integer(
    'scaling_repeats', 3, 'Timed repeats of the scaling section.')
_WORKER_COUNTS = flags.DEFINE_list(
    'worker_counts', ['1', '2', '4'],
    'Local TFF workers of the multi-worker comparison.')
_WORKERS_CLIENTS = flags.DEFINE_integer(
    'workers_clients', 100, 'Clients per round of the multi-worker section.')
_WORKERS_REPEATS = flags.DEFINE_integer(
    'workers_repeats', 3, 'Timed repeats of the multi-worker section.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Local batch size.')
_WIDE_DIM = flags.DEFINE_integer(
    'wide_dim', 512, "Features of the synthetic 'wide' modality.")
_PERF = flags.DEFINE_bool(
    'perf', True, "Profile the worker with Linux 'perf' when it is installed.")
_SECTIONS = flags.DEFINE_list(
    'sections', list(settings_lib.SECTIONS),
    f'Sections to run, of {", ".join(settings_lib.SECTIONS)}.')
_QUICK = flags.DEFINE_bool(
    'quick', False, 'Tiny settings for a smoke test (overrides the sizes; '
    'numbers meaningless).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of data, partition, model.')
_PLAIN_LOOP_SERVER = flags.DEFINE_integer(
    'plain_loop_server', 0, 'Internal: run as the plain-loop child process '
    'with this E (see PlainLoopChild).')


def settings_from_flags() -> settings_lib.Settings:
  """The flags' `Settings` (ValueError naming the flag when one is bad)."""
  return settings_lib.build_settings(dict(
      output_dir=_OUTPUT_DIR.value, repeats=_REPEATS.value,
      warmup=_WARMUP.value, rounds=_ROUNDS.value, clients=_CLIENTS.value,
      examples_per_client=_EXAMPLES_PER_CLIENT.value,
      local_epochs=_LOCAL_EPOCHS.value,
      scaling_clients=_SCALING_CLIENTS.value,
      scaling_repeats=_SCALING_REPEATS.value,
      worker_counts=_WORKER_COUNTS.value,
      workers_clients=_WORKERS_CLIENTS.value,
      workers_repeats=_WORKERS_REPEATS.value, batch_size=_BATCH_SIZE.value,
      wide_dim=_WIDE_DIM.value, perf=_PERF.value,
      sections=tuple(s.strip() for s in _SECTIONS.value if s.strip()),
      quick=_QUICK.value, seed=_SEED.value))


def check_flags() -> settings_lib.Settings:
  try:
    return settings_from_flags()
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None


def main(settings: settings_lib.Settings) -> None:
  start = time.perf_counter()
  from tff_hgb.benchmarking import driver  # pylint: disable=g-import-not-at-top
  if _PLAIN_LOOP_SERVER.value:
    driver.serve_plain_loop(settings, _PLAIN_LOOP_SERVER.value)
    return
  command = ' '.join(['python -m experiments.benchmark'] +
                     [shlex.quote(a) for a in sys.argv[1:]])
  report = driver.run_sections(settings, command, start)
  print(f'benchmark: wrote {os.path.join(settings.output_dir, "benchmark.json")}'
        f' and BENCHMARKS.md in {report["total_runtime_s"]:.0f} s', flush=True)


if __name__ == '__main__':
  startup.run(main, check_flags)
