r"""Prints, per modality, the default encoder's accuracy against a flattening MLP.

  python -m experiments.check_encoders --dataset=basicmotions
  python -m experiments.check_encoders --dataset=tfrecord:my_clips.tfrecord \
      --partition=natural --rounds=10 --client_learning_rate=0.1

Centralized uni-modal training and (unless --nofederated) FedAvg runs of
`uni:<modality>` with the run flags every binary has (--partition, --rounds,
--client_learning_rate, --local_epochs, --seed, ...;
tff_hgb.experiment.encoder_check): a user with their own data sees at once
whether the default encoder of a modality's kind fits it (a negative gap: try
--encoder=<modality>:mlp). Real data of every kind, without downloads:
`python -m experiments.make_encoder_data --output_dir=DIR`.
"""

import tempfile

from absl import flags

from experiments import flags_lib
from tff_hgb.experiment import config as config_lib

FLAGS = flags.FLAGS
_EPOCHS = flags.DEFINE_integer('epochs', 20, 'Epochs of each centralized '
                               'training.')
_LEARNING_RATE = flags.DEFINE_float(
    'learning_rate', 0.05, 'SGD learning rate of the centralized training.')
_FEDERATED = flags.DEFINE_bool(
    'federated', True, 'Also FedAvg (uni:<modality>) per modality and encoder.')
# A few rounds: a check, not a study.
FLAGS.set_default('rounds', 10)
FLAGS.set_default('progress', False)
# One modality at a time: every client holds it (natural: see --partition).
FLAGS.set_default('partition', 'iid')


def check_flags() -> config_lib.ExperimentConfig:
  """Flags checked without TensorFlow; one-line errors name the flag."""
  flags_lib.reject_export_dir('check_encoders')
  if FLAGS.encoder:
    raise config_lib.UsageError(
        'encoder', 'check_encoders compares each default with mlp itself.')
  if _EPOCHS.value < 1:
    raise config_lib.UsageError('epochs', f'must be ≥ 1, got {_EPOCHS.value}.')
  if not _LEARNING_RATE.value > 0:
    raise config_lib.UsageError(
        'learning_rate', f'must be > 0, got {_LEARNING_RATE.value}.')
  config = flags_lib.config_from_flags('fedavg')
  flags_lib.check_runtime_flags()
  return config


def main(config: config_lib.ExperimentConfig) -> None:
  # The harness needs TensorFlow, loaded once the flags were checked.
  from tff_hgb.experiment import caches  # pylint: disable=g-import-not-at-top
  from tff_hgb.experiment import encoder_check  # pylint: disable=g-import-not-at-top
  with flags_lib.user_errors_exit(), tempfile.TemporaryDirectory() as scratch:
    federated = None
    if _FEDERATED.value:
      flags_lib.start_runtime()
      federated = config.replace(output_dir=config.run.output_dir or scratch)
    data_cache = caches.DataCache()
    train, test = data_cache.load(config)
    rows = encoder_check.check_encoders(
        train, test, epochs=_EPOCHS.value, learning_rate=_LEARNING_RATE.value,
        batch_size=config.algorithm.batch_size, seed=config.run.seed,
        federated=federated, data_cache=data_cache)
  print(encoder_check.format_table(rows, config.data.dataset, federated))


if __name__ == '__main__':
  flags_lib.run(main, check_flags)
