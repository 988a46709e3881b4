r"""The study: which method to use, tuned robustly, with paired seeds.

  python -m experiments.study --output_dir=results/study_v2     # make study
  python -m experiments.study --estimate                 # runs and hours
  python -m experiments.study --quick --output_dir=/tmp/study   # minutes
  python -m experiments.study --plan=v1 --output_dir=results/study  # v1

Runs every setting × method of --plan (tff_hgb/experiment/presets.py:
STUDY_PLANS; v2 by default) with robust per-method tuning and --study_seeds
paired seeds, and writes --output_dir/STUDY.md and study.json (see
tff_hgb/experiment/study.py). Resumable across sittings: rerun the same
command to continue (finished runs and tuning values are reused).
--report_only regenerates the report from the output directory alone.
"""

import contextlib

from absl import flags

from experiments import flags_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import presets

flags.DEFINE_enum('plan', 'v2', sorted(presets.STUDY_PLANS),
                  'Which study (settings, methods, seeds).')
flags.DEFINE_list('settings', None,
                  'Which settings, in order (default: all of the plan\'s).')
flags.DEFINE_list('methods', None,
                  'Run only these methods (labels; default all).')
flags.DEFINE_integer('study_seeds', None,
                     'Seeds of the final runs (0, 1, ...); default the '
                     'plan\'s (v2: 10).')
flags.DEFINE_bool('quick', False, 'A tiny study that shows the machinery.')
flags.DEFINE_bool('report_only', False,
                  'Run nothing: write STUDY_PARTIAL.md from what --output_dir '
                  'holds so far (e.g. while the study runs).')
flags.DEFINE_list('measure_speed', None,
                  'Time one final run (seed 0) of each of these methods on '
                  'each --settings, one after another in this process, into '
                  '--output_dir; prints the seconds for presets.'
                  'MEASURED_RUN_SECONDS and MEASURED_METHOD_FACTOR.')
flags.DEFINE_bool('estimate', False,
                  'Print the number of runs and the wall time the plan takes '
                  'at the measured speeds with --jobs, and exit.')

flags_lib.define_jobs_flags()

FLAGS = flags.FLAGS


def check_flags():
  """(plan, settings, seeds) to run (TensorFlow-free; see flags_lib.run)."""
  flags_lib.reject_export_dir('study')
  plan = presets.STUDY_PLANS[FLAGS.plan]
  if not FLAGS.output_dir and not FLAGS.estimate:
    raise config_lib.UsageError('output_dir', 'is required.')
  known = {s.name: s for s in plan.settings}
  names = FLAGS.settings if FLAGS.settings is not None else list(known)
  unknown = [name for name in names if name not in known]
  if unknown or not names:
    raise config_lib.UsageError(
        'settings', f'unknown {unknown}; expected some of {sorted(known)}.')
  seeds = plan.seeds if FLAGS.study_seeds is None else FLAGS.study_seeds
  if seeds < 2:
    raise config_lib.UsageError(
        'study_seeds', 'paired intervals need ≥ 2 seeds.')
  settings = [known[name] for name in names]
  if plan.select_default and not any(s.selection for s in settings):
    raise config_lib.UsageError(
        'settings', 'include a selection setting (' + ', '.join(
            s.name for s in plan.settings if s.selection) + ').')
  flags_lib.check_runtime_flags()
  flags_lib.check_jobs_flags()
  if FLAGS.estimate:  # Before TensorFlow's import: an answer in a second.
    print_estimate(plan, settings, seeds)
    raise SystemExit(0)
  return plan, settings, seeds


def print_estimate(plan, settings, seeds) -> None:
  jobs = flags_lib.check_jobs_flags()
  outcome = presets.estimate(plan, seeds=seeds, jobs=jobs, settings=settings)
  for row in outcome['settings']:
    time = ('unmeasured' if row['seconds'] is None else
            f'{row["seconds"] / 60:.0f} CPU-min')
    print(f'{row["setting"]}: {row["methods"]} methods, {row["runs"]} runs, '
          f'{time}')
  print(f'total: {outcome["runs"]} runs, {outcome["wall_seconds"] / 3600:.1f} '
        f'h wall with --jobs={jobs} ({outcome["compute_seconds"] / 3600:.1f} h '
        'of single-process compute)' + (
            f'; not measured: {outcome["unmeasured"]}'
            if outcome['unmeasured'] else ''))


def measure_speed(settings, algorithms, output_dir) -> None:
  """Seconds of one final run per setting × algorithm (data loaded first)."""
  import os  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import run  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import study  # pylint: disable=g-import-not-at-top
  flags_lib.start_runtime()
  data_cache = caches.DataCache()
  for setting in settings:
    for algorithm in algorithms:
      config = study.setting_config(
          setting, presets.Method(algorithm, algorithm),
          output_dir=os.path.join(output_dir, setting.name, algorithm))
      config = config.replace(tune='', resume=False, progress=False)
      data_cache.get(config)
      started = time.perf_counter()
      run.run_experiment(config, data_cache=data_cache)
      print(f'{setting.name} {algorithm} '
            f'{time.perf_counter() - started:.1f} s', flush=True)


def main(checked) -> None:
  plan, settings, seeds = checked
  if FLAGS.measure_speed:
    with flags_lib.user_errors_exit():
      measure_speed(settings, FLAGS.measure_speed, FLAGS.output_dir)
    return
  # The study needs TensorFlow, loaded once the flags were checked.
  from tff_hgb.experiment import study  # pylint: disable=g-import-not-at-top
  output_dir = FLAGS.output_dir
  with flags_lib.user_errors_exit():
    with (contextlib.nullcontext() if FLAGS.report_only else
          flags_lib.jobs_pool()) as pool:
      outcome = study.run_study(
          output_dir, seeds=list(range(seeds)), plan=plan,
          settings=settings, method_labels=FLAGS.methods, quick=FLAGS.quick,
          report_only=FLAGS.report_only, pool=pool)
  print(outcome['markdown'], flush=True)
  print(f'Wrote {output_dir}/'
        f'{"STUDY_PARTIAL.md" if FLAGS.report_only else "STUDY.md"}', flush=True)


if __name__ == '__main__':
  flags_lib.run(main, check_flags)
