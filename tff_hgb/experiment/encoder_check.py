"""Does a modality's default encoder beat a flattening MLP on the same data?

Per modality, a uni-modal model with the default encoder of its kind and one
with `mlp` (the vector encoder over the flattened input, issue 19's
reference): trained centrally (`tff_hgb.centralized`; test accuracy at the
best validation epoch) and, optionally, with FedAvg as the registry's
`uni:<modality>` run (`run.run_experiment`, the same loop as every binary;
test accuracy after the last round, and the median seconds per round).
`experiments/check_encoders.py` prints the table.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from tff_hgb import centralized
from tff_hgb import model_config
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import run as run_lib


@dataclasses.dataclass(frozen=True)
class Federated:
  """One FedAvg run's figures: final test accuracy, median s/round."""

  accuracy: float
  seconds_per_round: float


@dataclasses.dataclass(frozen=True)
class EncoderCheck:
  """One modality's row: test accuracies of its default encoder and the MLP."""

  modality: str
  kind: str
  shape: tuple[int, ...]
  default_accuracy: float
  mlp_accuracy: float
  federated_default: Optional[Federated] = None
  federated_mlp: Optional[Federated] = None

  @property
  def gap(self) -> float:
    """Default minus MLP, in accuracy (negative: the default encoder loses)."""
    return self.default_accuracy - self.mlp_accuracy

  @property
  def federated_gap(self) -> Optional[float]:
    if self.federated_default is None or self.federated_mlp is None:
      return None
    return self.federated_default.accuracy - self.federated_mlp.accuracy


def check_encoders(train: dataset_lib.MultiModalDataset,
                   test: dataset_lib.MultiModalDataset, *, epochs: int,
                   learning_rate: float, batch_size: int = 32, seed: int = 0,
                   federated: Optional[config_lib.ExperimentConfig] = None,
                   data_cache: Optional[caches.DataCache] = None
                   ) -> list[EncoderCheck]:
  """The default encoder against the flattened MLP, for every modality.

  A vector modality's default encoder is the MLP itself: it is trained once.

  Args:
    train, test: the data (`federated`'s data set, loaded, when given).
    epochs, learning_rate, batch_size, seed: the centralized training.
    federated: if given, also a FedAvg run per modality and encoder: this
      config (data, partition, rounds, client learning rate, seed) with the
      algorithm `uni:<modality>`, the encoder choice and
      `<run.output_dir>/<modality>_<encoder>` as its output directory.
    data_cache: the federated runs' data (loaded once for all of them).
  """
  data_cache = data_cache or caches.DataCache()
  algorithm_cache = caches.AlgorithmCache()
  rows = []
  for spec in train.modalities:
    uni_train = train.with_modalities([spec.name])
    uni_test = test.with_modalities([spec.name])

    def accuracy(encoders):
      result = centralized.train_centralized(
          uni_train, uni_test, epochs=epochs, learning_rate=learning_rate,
          batch_size=batch_size, seed=seed,
          model_config=models.ModelConfig(seed=seed, encoders=encoders))
      return float(result.best_accuracy)

    def fedavg(encoder: str):
      name = 'default' if encoder == spec.kind else encoder
      config = federated.replace(
          algorithm=f'uni:{spec.name}',
          encoder=[f'{spec.name}:{encoder}'] if name != 'default' else [],
          output_dir=os.path.join(federated.run.output_dir,
                                  f'{spec.name}_{name}'),
          export_dir=None, tune='', target_accuracy=None)
      summary = run_lib.run_experiment(config, data_cache=data_cache,
                                       algorithm_cache=algorithm_cache)
      return Federated(float(summary['final_accuracy']),
                       float(summary['seconds_per_round_median']))

    is_vector = spec.kind == dataset_lib.VECTOR
    default = accuracy(())
    mlp = default if is_vector else accuracy(((spec.name, model_config.MLP),))
    federated_default = federated_mlp = None
    if federated is not None:
      federated_default = fedavg(spec.kind)
      federated_mlp = (federated_default if is_vector else
                       fedavg(model_config.MLP))
    rows.append(EncoderCheck(spec.name, spec.kind, tuple(spec.shape),
                             default, mlp, federated_default, federated_mlp))
  return rows


def format_table(rows: list[EncoderCheck], dataset: str,
                 federated: Optional[config_lib.ExperimentConfig] = None
                 ) -> str:
  """The rows as a plain-text table (accuracies in %)."""
  lines = [f'{dataset}: default encoder vs flattened MLP (centralized: test '
           'accuracy at the best validation epoch']
  if federated is not None:
    lines[0] += (f'; FedAvg uni:<modality>, {federated.data.partition} '
                 f'partition, {federated.run.rounds} rounds, client lr '
                 f'{federated.algorithm.client_learning_rate:g}, E = '
                 f'{federated.algorithm.local_epochs}: final test accuracy, '
                 'median s/round')
  lines[0] += ')'
  header = (f'{"modality":<12} {"kind":<12} {"shape":<16} {"default":>8} '
            f'{"mlp":>8} {"gap":>7}')
  if any(r.federated_default is not None for r in rows):
    header += (f' | {"fed dflt":>8} {"fed mlp":>8} {"gap":>7} '
               f'{"s/rd dflt":>9} {"s/rd mlp":>9}')
  lines.append(header)
  for row in rows:
    shape = 'x'.join(str(d) for d in row.shape)
    line = (f'{row.modality:<12} {row.kind:<12} {shape:<16} '
            f'{100 * row.default_accuracy:>7.1f}% '
            f'{100 * row.mlp_accuracy:>7.1f}% '
            f'{100 * row.gap:>+6.1f}')
    if row.federated_default is not None:
      line += (f' | {100 * row.federated_default.accuracy:>7.1f}% '
               f'{100 * row.federated_mlp.accuracy:>7.1f}% '
               f'{100 * row.federated_gap:>+6.1f} '
               f'{row.federated_default.seconds_per_round:>9.2f} '
               f'{row.federated_mlp.seconds_per_round:>9.2f}')
    lines.append(line)
  return '\n'.join(lines)
