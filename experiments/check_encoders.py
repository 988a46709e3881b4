r"""Prints, per modality, the default encoder's accuracy against a flattening MLP.

  python -m experiments.check_encoders --dataset=basicmotions
  python -m experiments.check_encoders --dataset=tfrecord:my_clips.tfrecord

Centralized uni-modal training (tff_hgb.experiment.encoder_check): a user with
their own data sees at once whether the default encoder of a modality's kind
fits it (a negative gap: try --encoder=<modality>:mlp). Federated figures are
not part of this check.
"""

from absl import flags

from experiments import startup
from tff_hgb.data import datasets
from tff_hgb.experiment import config as config_lib

_DATASET = flags.DEFINE_string(
    'dataset', datasets.DEFAULT_DATASET,
    f'A data set name ({", ".join(datasets.dataset_names())}).')
_TEST_FRACTION = flags.DEFINE_float(
    'test_fraction', datasets.DEFAULT_TEST_FRACTION,
    'Fraction held out as the test set.')
_EPOCHS = flags.DEFINE_integer('epochs', 20, 'Epochs of each training.')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 0.05, 'SGD learning rate.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Mini-batch size.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the split, initialisation '
                             'and batch order.')


def _check():
  """Flags checked without TensorFlow; one-line errors name the flag."""
  try:
    _check_flags()
  except config_lib.UsageError as e:
    raise SystemExit(f'error: {e}') from None


def _check_flags():
  config_lib.DataConfig(dataset=_DATASET.value,
                        test_fraction=_TEST_FRACTION.value)
  for flag, value in (('epochs', _EPOCHS.value),
                      ('batch_size', _BATCH_SIZE.value)):
    if value < 1:
      raise config_lib.UsageError(flag, f'must be ≥ 1, got {value}.')
  if not _LEARNING_RATE.value > 0:
    raise config_lib.UsageError(
        'learning_rate', f'must be > 0, got {_LEARNING_RATE.value}.')


def main(unused_checked):
  from tff_hgb.experiment import encoder_check  # pylint: disable=g-import-not-at-top
  try:
    train, test = datasets.load(_DATASET.value,
                                test_fraction=_TEST_FRACTION.value,
                                seed=_SEED.value)
  except datasets.DataError as e:
    raise SystemExit(f'error: --dataset: {" ".join(str(e).split())}') from None
  rows = encoder_check.check_encoders(
      train, test, epochs=_EPOCHS.value, learning_rate=_LEARNING_RATE.value,
      batch_size=_BATCH_SIZE.value, seed=_SEED.value)
  print(encoder_check.format_table(rows, _DATASET.value))


if __name__ == '__main__':
  startup.run(main, _check)
