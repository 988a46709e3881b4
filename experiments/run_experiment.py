r"""Trains one algorithm on one federated configuration and records the results.

  python -m experiments.run_experiment --algorithm=hgb --dataset=htad \
      --partition=mixed_b --rounds=30 --output_dir=/tmp/hgb_run

Writes flags.json, partition.txt/.json, metrics.csv (one row per round),
TensorBoard events, summary.json and program state (for --resume) into
--output_dir; see tff_hgb/experiment/ (run.py, results.py). Bad flags end
with a one-line error naming the flag.
"""

from absl import flags

from experiments import flags_lib
from tff_hgb import algorithms
from tff_hgb.experiment import config as config_lib

flags.DEFINE_string('algorithm', 'hgb',
                    f'Algorithm: {algorithms.describe_names()}.')

FLAGS = flags.FLAGS


def check_flags() -> config_lib.ExperimentConfig:
  config = flags_lib.config_from_flags(FLAGS.algorithm)
  config_lib.validate(config)
  flags_lib.check_runtime_flags()
  return config


def main(config: config_lib.ExperimentConfig) -> None:
  # The harness needs TensorFlow, loaded once the flags were checked.
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import run  # pylint: disable=g-import-not-at-top
  with flags_lib.user_errors_exit():
    # The runtime comes before any data: --runtime=inprocess sets up devices.
    flags_lib.start_runtime()
    # run_experiment checks --output_dir, then loads the data into the cache.
    summary = run.run_experiment(config, data_cache=caches.DataCache())
  print(run.result_line(summary, config.run.output_dir), flush=True)


if __name__ == '__main__':
  flags_lib.run(main, check_flags)
