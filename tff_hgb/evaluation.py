"""Centralised evaluation of a global model on the held-out test set.

Every algorithm is evaluated here, the same way: the global weights are put into
a Keras model of the same architecture and run over the test set in this process
(no federated round trip), giving the fusion head's and each uni-modal head's
top-1 accuracy and loss, optionally with one modality dropped at test time.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import losses
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib


def _assign(keras_model: tf.keras.Model, weights) -> None:
  if isinstance(weights, tff.learning.models.ModelWeights):
    weights.assign_weights_to(keras_model)
    return
  for variable, value in zip(keras_model.trainable_variables, weights):
    variable.assign(value)


def _statistics_fn(keras_model, modalities):
  """One traced function per model, kept on it: evaluating every round must
  not retrace (a new tf.function per call would)."""
  fn = getattr(keras_model, '_tff_hgb_statistics_fn', None)
  if fn is None:

    @tf.function
    def fn(batch):
      logits = keras_model(models.keras_inputs(batch), training=False)
      return losses.head_statistics(logits, batch['y'], batch['mask'],
                                    modalities)

    keras_model._tff_hgb_statistics_fn = fn  # pylint: disable=protected-access
  return fn


def evaluate(keras_model: tf.keras.Model,
             weights,
             test: dataset_lib.MultiModalDataset,
             *,
             batch_size: int = 256,
             drop_modality: Optional[str] = None) -> collections.OrderedDict:
  """Per-head accuracy and loss of `weights` on `test`.

  Args:
    keras_model: a model from `tff_hgb.models.build_keras_model` for the
      modalities of `test` (its weights are overwritten).
    weights: `tff.learning.models.ModelWeights` or a list of trainable arrays.
    test: the test set (only the model's modalities are used).
    batch_size: evaluation batch size.
    drop_modality: a modality to remove at test time (zero-filled, mask 0).

  Returns:
    OrderedDict with '<head>/accuracy' and '<head>/loss' for every head;
    a head that applies to no test example reports NaN.
  """
  _assign(keras_model, weights)
  modalities = models.model_modalities(keras_model)
  view = test.with_modalities(modalities)
  presence = dict(view.presence)
  if drop_modality is not None:
    if drop_modality not in presence:
      raise ValueError(f'Cannot drop {drop_modality!r}: the model has '
                       f'{modalities}.')
    presence[drop_modality] = np.zeros_like(presence[drop_modality])
  dataset = dataset_lib.to_tf_dataset(view, presence).batch(batch_size)
  heads = losses.head_names(modalities)
  totals = np.zeros((3, len(heads)), np.float64)
  batch_statistics = _statistics_fn(keras_model, modalities)
  for batch in dataset:
    totals += np.stack([t.numpy() for t in batch_statistics(batch)])
  loss_sum, correct, count = totals
  result = collections.OrderedDict()
  for i, head in enumerate(heads):
    result[f'{head}/accuracy'] = (correct[i] / count[i] if count[i] else
                                  float('nan'))
    result[f'{head}/loss'] = loss_sum[i] / count[i] if count[i] else float(
        'nan')
  return result
