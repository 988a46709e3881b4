r"""Prints a data set's sizes, classes, modality shapes, optionally a partition.

  python -m experiments.describe_data --dataset=htad
  python -m experiments.describe_data --dataset=watch --partition=natural
  python -m experiments.describe_data --dataset=htad --partition=mixed_b \
      --num_clients=10 --alpha=0.1 --seed=0

Runs no TFF computation, so it starts no TFF runtime.
"""

import sys

from absl import app
from absl import flags

from tff_hgb.data import datasets
from tff_hgb.data import partition

_DATASET = flags.DEFINE_string(
    'dataset', datasets.DEFAULT_DATASET,
    f'A data set name ({", ".join(datasets.dataset_names())}).')
_TEST_FRACTION = flags.DEFINE_float(
    'test_fraction', datasets.DEFAULT_TEST_FRACTION,
    'Fraction held out as the global test set.')
_PARTITION = flags.DEFINE_enum(
    'partition', None, list(partition.SCHEMES),
    'If set, also print the partition of the training pool.')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 10, 'Number of clients.')
_ALPHA = flags.DEFINE_float(
    'alpha', partition.DEFAULT_ALPHA,
    'Dirichlet label-skew concentration; <= 0 means IID.')
_VAL_FRACTION = flags.DEFINE_float(
    'val_fraction', 0.1, 'Fraction of each client held out for validation.')
_MIN_VAL_EXAMPLES = flags.DEFINE_integer(
    'min_val_examples', 4, 'Smallest local validation part.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the test split and partition.')


def describe(argv) -> str:
  """The whole report, as text."""
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}')
  train, test = datasets.load(_DATASET.value,
                              test_fraction=_TEST_FRACTION.value,
                              seed=_SEED.value)
  sections = [datasets.describe(train), datasets.describe(test)]
  if _PARTITION.value:
    split = partition.make_partition(
        train, _PARTITION.value, num_clients=_NUM_CLIENTS.value,
        alpha=_ALPHA.value if _ALPHA.value > 0 else None,
        val_fraction=_VAL_FRACTION.value,
        min_val_examples=_MIN_VAL_EXAMPLES.value, seed=_SEED.value)
    sections.append(split.report(train))
  return '\n'.join(sections)


def main(argv):
  try:
    print(describe(argv))
  except ValueError as e:  # DataError is a ValueError.
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
