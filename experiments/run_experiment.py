r"""Trains one algorithm on one federated configuration and records the results.

  python -m experiments.run_experiment --algorithm=hgb --dataset=htad \
      --partition=mixed_b --rounds=30 --output_dir=/tmp/hgb_run

Writes flags.json, partition.txt/.json, metrics.csv (one row per round),
TensorBoard events, summary.json and program state (for --resume) into
--output_dir; see tff_hgb/experiment.py and tff_hgb/results.py. Bad flags end
with a one-line error naming the flag.
"""

from absl import app
from absl import flags

from experiments import flags_lib
from tff_hgb import algorithms
from tff_hgb import experiment
from tff_hgb import runtime
from tff_hgb.data import dataset as dataset_lib

flags.DEFINE_string('algorithm', 'hgb',
                    f'Algorithm: {algorithms.describe_names()}.')

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    flags_lib.error_exit(ValueError(
        f'unexpected arguments {" ".join(argv[1:])}'))
  flags_lib.quiet_logs()
  config = flags_lib.config_from_flags(FLAGS.algorithm)
  try:
    flags_lib.check_runtime_flags()
    experiment.validate(config)
    experiment.check_output_dir(config.output_dir, config.to_dict(),
                                resume=config.resume)
    # The runtime comes before any data: --runtime=inprocess sets up devices.
    flags_lib.start_runtime()
    experiment.DataCache().get(config)
    summary = experiment.run_experiment(config)
  except (experiment.UsageError, dataset_lib.DataError,
          flags_lib.RuntimeFlagError, runtime.WorkerError,
          runtime.DeviceConfigurationError) as e:
    flags_lib.error_exit(e)
  except OSError as e:  # E.g. disk full or a file size limit mid-run.
    flags_lib.error_exit(OSError(
        f'cannot write results: {e.strerror or e}'
        f'{f" ({e.filename})" if e.filename else ""}; free the space and '
        'rerun with --resume to continue from the last saved round.'))
  finally:
    runtime.stop_all_workers()
  print(experiment.result_line(summary, config.output_dir), flush=True)


if __name__ == '__main__':
  app.run(main)
