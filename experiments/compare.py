r"""Runs several algorithms × seeds on one configuration and compares them.

  python -m experiments.compare --algorithms=fedavg,fedattn,fednova,uni:audio,hgb \
      --seeds=3 --dataset=htad --partition=mixed_b --output_dir=/tmp/cmp

  python -m experiments.compare --config=default   # what `make run` does

Takes the flags of run_experiment (except --algorithm) plus --algorithms,
--seeds, --centralized, --config and --jobs (independent runs in that many
processes; default the number of cores). Writes one run directory per algorithm
and seed, comparison.md (the paper's Table II layout), comparison.png (test
accuracy vs rounds, mean and band over seeds) and summary.json, and prints the
table. --resume continues an interrupted comparison (finished runs are kept).
"""

from absl import flags

from experiments import flags_lib
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import presets

flags.DEFINE_list('algorithms', ['fedavg', 'hgb'],
                  'Algorithms to compare (registry names, uni:<modality>, '
                  'uni:best = the modality best on its own, chosen by a '
                  'quick centralized check on training data).')
flags.DEFINE_string('seeds', '1',
                    'A number N (seeds --seed … --seed+N-1) or a list of '
                    'seeds "0,3,7".')
flags.DEFINE_bool('centralized', False,
                  'Add the centralized reference row (same model, fused loss, '
                  'whole training pool).')
flags.DEFINE_enum('config', None, sorted(presets.COMPARISON_PRESETS),
                  'A preset: fills every flag not given on the command line '
                  '(default = what `make run` runs).')

flags_lib.define_jobs_flags()

FLAGS = flags.FLAGS


def parse_seeds(text: str, first: int) -> tuple[int, ...]:
  text = (text or '').strip()
  try:
    if ',' in text:
      seeds = tuple(int(s) for s in text.split(',') if s.strip())
    else:
      count = int(text)
      if count < 1:
        raise config_lib.UsageError('seeds', f'must be ≥ 1, got {count}.')
      seeds = tuple(range(first, first + count))
  except ValueError:
    raise config_lib.UsageError(
        'seeds', f'expected a count or a list of integers, got {text!r}.'
    ) from None
  if len(set(seeds)) != len(seeds) or not seeds:
    raise config_lib.UsageError('seeds', f'bad seed list {text!r}.')
  return seeds


def check_flags() -> tuple[config_lib.ExperimentConfig, tuple[int, ...]]:
  """The base config and the seeds (TensorFlow-free; see flags_lib.run)."""
  if FLAGS.config:
    preset = dict(presets.COMPARISON_PRESETS[FLAGS.config])
    flags_lib.apply_preset(preset)
  # The base's algorithm is a stand-in: each run replaces it.
  config = flags_lib.config_from_flags('fedavg')
  flags_lib.reject_export_dir('compare')
  seeds = parse_seeds(FLAGS.seeds, config.run.seed)
  flags_lib.check_runtime_flags()
  flags_lib.check_jobs_flags()
  return config, seeds


def comparison_config(base: config_lib.ExperimentConfig,
                      seeds: tuple[int, ...]):
  """The checked flags' `ComparisonConfig` (its module needs TensorFlow)."""
  from tff_hgb.experiment import comparison as comparison_lib  # pylint: disable=g-import-not-at-top
  return comparison_lib.ComparisonConfig(
      base=base, algorithms=tuple(FLAGS.algorithms), seeds=seeds,
      centralized=FLAGS.centralized)


def main(checked: tuple[config_lib.ExperimentConfig, tuple[int, ...]]) -> None:
  # The harness needs TensorFlow, loaded once the flags were checked.
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import comparison as comparison_lib  # pylint: disable=g-import-not-at-top
  with flags_lib.user_errors_exit():
    comparison = comparison_config(*checked)
    base = comparison.base
    # The runtime comes before any data: --runtime=inprocess sets up devices.
    with flags_lib.jobs_pool() as pool:
      # run_comparison checks --output_dir and every algorithm on the data
      # before it trains anything.
      summary = comparison_lib.run_comparison(
          comparison, output_dir=base.run.output_dir, resume=base.run.resume,
          data_cache=caches.DataCache(), pool=pool)
  print(summary['markdown'], flush=True)
  print(f'Wrote {base.run.output_dir}/comparison.md, comparison.png, '
        f'summary.json ({summary["seconds"] / 60:.1f} min).', flush=True)


if __name__ == '__main__':
  flags_lib.run(main, check_flags)
