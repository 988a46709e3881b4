r"""The paper's Tables I–III on htad, beside the paper's numbers (`make paper`).

  python -m experiments.paper_tables --output_dir=results/paper
  python -m experiments.paper_tables --quick --output_dir=/tmp/paper  # a minute

Runs every setting the tables need as a resumable comparison under
--output_dir (rerunning skips finished runs and continues unfinished ones) and
writes --output_dir/RESULTS.md. Takes the flags of run_experiment as overrides
of the preset (tff_hgb.experiment.paper.PAPER_PRESET), plus --tables, --seeds,
--quick and --jobs (independent runs in that many processes; default the
number of cores).
"""

from absl import flags

from experiments import flags_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import presets

flags.DEFINE_list('tables', ['1', '2', '3'], 'Which tables (1, 2, 3).')
flags.DEFINE_integer('paper_seeds', 3, 'Seeds per run (--seed onwards).')
flags.DEFINE_bool('quick', False,
                  'A reduced setting (few clients, 2 rounds, 1 seed, no '
                  'tuning) that shows the machinery works.')

flags_lib.define_jobs_flags()

FLAGS = flags.FLAGS


def check_flags() -> tuple[config_lib.ExperimentConfig, list[int],
                            tuple[int, ...]]:
  """The base config, tables and seeds (TensorFlow-free; see flags_lib.run)."""
  preset = dict(presets.PAPER_PRESET)
  if FLAGS.quick:
    preset.update(presets.PAPER_QUICK)
  flags_lib.apply_preset(preset)
  seeds_count = 1 if FLAGS.quick and not FLAGS['paper_seeds'].present else (
      FLAGS.paper_seeds)
  if seeds_count < 1:
    raise config_lib.UsageError('paper_seeds', 'must be ≥ 1.')
  try:
    tables = sorted({int(t) for t in FLAGS.tables})
  except ValueError:
    raise config_lib.UsageError('tables', 'expected numbers 1, 2, 3.'
                                ) from None
  if not tables or not set(tables) <= {1, 2, 3}:
    raise config_lib.UsageError('tables', 'expected numbers 1, 2, 3.')
  base = flags_lib.config_from_flags('fedavg')
  flags_lib.reject_export_dir('paper_tables')
  config_lib.validate(base)
  flags_lib.check_runtime_flags()
  flags_lib.check_jobs_flags()
  seeds = tuple(range(base.run.seed, base.run.seed + seeds_count))
  return base, tables, seeds


def main(checked: tuple[config_lib.ExperimentConfig, list[int],
                        tuple[int, ...]]) -> None:
  # The tables need TensorFlow, loaded once the flags were checked.
  from tff_hgb.experiment import paper  # pylint: disable=g-import-not-at-top
  base, tables, seeds = checked
  with flags_lib.user_errors_exit():
    with flags_lib.jobs_pool() as pool:
      outcome = paper.run_paper_tables(base, tables=tables, seeds=seeds,
                                       output_dir=base.run.output_dir,
                                       pool=pool)
  print(outcome['markdown'], flush=True)
  print(f'Wrote {base.run.output_dir}/RESULTS.md', flush=True)


if __name__ == '__main__':
  flags_lib.run(main, check_flags)
