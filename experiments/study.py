r"""The §5b study: where HGB, M-GB and C-GB help against tuned baselines.

  python -m experiments.study --output_dir=results/study        # make study
  python -m experiments.study --quick --output_dir=/tmp/study   # a minute

Chooses the default `hgb` configuration on validation data of the selection
settings, then runs every setting × method with per-method learning-rate
tuning and --seeds seeds, and writes --output_dir/STUDY.md and study.json
(see tff_hgb/experiment/study.py). Resumable: rerun the same command to
continue.
"""

import contextlib

from absl import flags

from experiments import flags_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import presets

flags.DEFINE_list('settings', [s.name for s in presets.SETTINGS],
                  'Which settings, in order.')
flags.DEFINE_integer('study_seeds', 5, 'Seeds of the final runs (0, 1, ...).')
flags.DEFINE_bool('quick', False, 'A tiny study that shows the machinery.')
flags.DEFINE_bool('report_only', False,
                  'Run nothing: write STUDY_PARTIAL.md from what --output_dir '
                  'holds so far (e.g. while the study runs).')

flags_lib.define_jobs_flags()

FLAGS = flags.FLAGS


def check_flags() -> list[presets.Setting]:
  """The settings to run (TensorFlow-free; see flags_lib.run)."""
  flags_lib.reject_export_dir('study')
  if not FLAGS.output_dir:
    raise config_lib.UsageError('output_dir', 'is required.')
  known = {s.name: s for s in presets.SETTINGS}
  unknown = [name for name in FLAGS.settings if name not in known]
  if unknown or not FLAGS.settings:
    raise config_lib.UsageError(
        'settings', f'unknown {unknown}; expected some of {sorted(known)}.')
  if FLAGS.study_seeds < 2:
    raise config_lib.UsageError(
        'study_seeds', 'paired intervals need ≥ 2 seeds.')
  settings = [known[name] for name in FLAGS.settings]
  if not any(s.selection for s in settings):
    raise config_lib.UsageError(
        'settings', 'include a selection setting (' + ', '.join(
            s.name for s in presets.SETTINGS if s.selection) + ').')
  flags_lib.check_runtime_flags()
  flags_lib.check_jobs_flags()
  return settings


def main(settings: list[presets.Setting]) -> None:
  # The study needs TensorFlow, loaded once the flags were checked.
  from tff_hgb.experiment import study  # pylint: disable=g-import-not-at-top
  output_dir = FLAGS.output_dir
  with flags_lib.user_errors_exit():
    with (contextlib.nullcontext() if FLAGS.report_only else
          flags_lib.jobs_pool()) as pool:
      outcome = study.run_study(
          output_dir, seeds=list(range(FLAGS.study_seeds)),
          settings=settings, quick=FLAGS.quick,
          report_only=FLAGS.report_only, pool=pool)
  print(outcome['markdown'], flush=True)
  print(f'Wrote {output_dir}/'
        f'{"STUDY_PARTIAL.md" if FLAGS.report_only else "STUDY.md"}', flush=True)


if __name__ == '__main__':
  flags_lib.run(main, check_flags)
