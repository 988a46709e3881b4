"""Does a modality's default encoder beat a flattening MLP on the same data?

Per modality, a uni-modal model with the default encoder of its kind and one
with `mlp` (the vector encoder over the flattened input, issue 19's
reference), trained centrally (`tff_hgb.centralized`) with the same seed,
epochs and learning rate; each scored on the test set at its best validation
epoch. `experiments/check_encoders.py` prints the table.
"""

from __future__ import annotations

import dataclasses

from tff_hgb import centralized
from tff_hgb import model_config
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib


@dataclasses.dataclass(frozen=True)
class EncoderCheck:
  """One modality's row: test accuracies of its default encoder and the MLP."""

  modality: str
  kind: str
  shape: tuple[int, ...]
  default_accuracy: float
  mlp_accuracy: float

  @property
  def gap(self) -> float:
    """Default minus MLP, in accuracy (negative: the default encoder loses)."""
    return self.default_accuracy - self.mlp_accuracy


def check_encoders(train: dataset_lib.MultiModalDataset,
                   test: dataset_lib.MultiModalDataset, *, epochs: int,
                   learning_rate: float, batch_size: int = 32, seed: int = 0
                   ) -> list[EncoderCheck]:
  """The default encoder against the flattened MLP, for every modality.

  A vector modality's default encoder is the MLP itself: it is trained once.
  """
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

    default = accuracy(())
    mlp = (default if spec.kind == dataset_lib.VECTOR else
           accuracy(((spec.name, model_config.MLP),)))
    rows.append(EncoderCheck(spec.name, spec.kind, tuple(spec.shape),
                             default, mlp))
  return rows


def format_table(rows: list[EncoderCheck], dataset: str) -> str:
  """The rows as a plain-text table (accuracies in %)."""
  lines = [f'{dataset}: default encoder vs flattened MLP (centralized, '
           'test accuracy at the best validation epoch)',
           f'{"modality":<12} {"kind":<12} {"shape":<16} {"default":>8} '
           f'{"mlp":>8} {"gap":>7}']
  for row in rows:
    shape = 'x'.join(str(d) for d in row.shape)
    lines.append(f'{row.modality:<12} {row.kind:<12} {shape:<16} '
                 f'{100 * row.default_accuracy:>7.1f}% '
                 f'{100 * row.mlp_accuracy:>7.1f}% '
                 f'{100 * row.gap:>+6.1f}')
  return '\n'.join(lines)
