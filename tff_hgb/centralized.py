"""Centralised (non-federated) training of the multi-modal model.

The reference the federated runs are compared with (the paper's Table I
"Centralized" column): the same Keras model (`models.build_keras_model`), the
same masked per-head losses (`losses.head_statistics`, `losses.blended_loss`)
and the same evaluation (`evaluation.evaluate`), trained in this process with
plain mini-batch SGD (no momentum, no TFF).

Head weights (ALGORITHM.md §2, order `losses.head_names`: uni-modal heads, then
the fusion head):

* `blend='fixed'`: `head_weights` throughout; None = fusion head only (the
  paper's FedAvg objective), `models.equal_head_weights` = fixed auxiliary
  heads. Weights are used as given (not renormalised), as `MultiModalModel`
  does.
* `blend='offline_gblend'`: G-Blend's offline estimate (Wang et al., CVPR 2020;
  ALGORITHM.md §3, §5 "Offline G-Blend style"). From the initial weights w0
  (checkpoint A), a warm-up of `gblend_warmup_epochs` epochs trains with equal
  weights over the heads (checkpoint B). Per head, L^T on a training probe and
  L^V on the validation split are measured at A and B in inference mode
  (through `evaluation.evaluate`), and z ∝ ΔG/ΔO² over the heads
  (`ogr.modality_blend_weights`, with its guards; if no head has ΔG > 0, z is
  the equal weighting). The probe is, by default, the whole training part,
  not a subset as large as the validation split as the federated clients use
  (ALGORITHM.md §4): centrally the extra inference pass is cheap, and the
  sampling noise of a small probe easily dominates ΔO (on the test data of
  `tests/centralized_test.py`, an 80-example probe gave the pure-noise
  modality's head 0.97 of the weight for one of six seeds; the full training
  part gave it ≤ 0.03 for all six). `gblend_probe_size` restores the §4 probe.
  `gblend_relative_floor` and `gblend_fusion_floor` are ALGORITHM.md §5b's
  relative ΔO² floor and fusion-head floor (both off by default: literal
  G-Blend, which can leave the fusion head, the one evaluated, almost no
  weight). Training then RESTARTS from w0 and runs `epochs` epochs
  with z frozen. The warm-up is extra work on top of `epochs`, is not part of
  `history`, and is summarised in `CentralizedResult.gblend`. Because the main
  run restarts from w0 and uses the same batch order as a `blend='fixed'` run
  with the same seed, the two differ only in their head weights.

Data and selection: a validation split (`validation_fraction` of `train`,
stratified by label, seeded) is carved from `train` before training and never
trained on; the test set is only reported, never used to choose anything.
`best_accuracy` is the test fusion accuracy at the evaluated epoch with the best
validation fusion accuracy (ties: lower validation fusion loss, then earlier).

Determinism: initial weights come from `model_config.seed` (seeded
initialisers); the split, the probe and the batch order come from `seed`
(independent NumPy streams). Same arguments → identical history. Vary both
seeds for independent repetitions. No global random state is touched.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import numbers
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import evaluation
from tff_hgb import losses
from tff_hgb import models
from tff_hgb import ogr
from tff_hgb.data import dataset as dataset_lib

BLEND_FIXED = 'fixed'
BLEND_OFFLINE_GBLEND = 'offline_gblend'
BLENDS = (BLEND_FIXED, BLEND_OFFLINE_GBLEND)

# Independent NumPy streams derived from `seed`.
_STREAM_SPLIT = 0
_STREAM_TRAIN = 1
_STREAM_WARMUP = 2
_STREAM_PROBE = 3


@dataclasses.dataclass
class CentralizedResult:
  """What `train_centralized` returns.

  Attributes:
    final_accuracy: test fusion-head accuracy after the last epoch.
    best_accuracy: test fusion-head accuracy at `best_epoch`.
    best_epoch: the evaluated epoch (1-based) with the best validation fusion
      accuracy (ties: lower validation fusion loss, then earlier epoch).
    history: one dict per epoch of the main run, in order, with 'epoch'
      (1-based), 'train_loss' (mean training objective over the epoch's steps),
      'train/<head>/loss' and 'train/<head>/accuracy' (training mode, over the
      epoch's batches), 'head_weights' (list, heads order) and 'evaluated'.
      Evaluated epochs (every `eval_every`-th and the last) also have
      'val/<head>/accuracy', 'val/<head>/loss', 'test/<head>/accuracy' and
      'test/<head>/loss' from `evaluation.evaluate`.
    heads: head names, the order of every head vector.
    head_weights: the head weights z of the main run.
    keras_model: the trained Keras model (holding the final weights).
    final_weights: trainable weights after the last epoch (NumPy arrays, the
      order of `keras_model.trainable_variables`).
    best_weights: trainable weights at `best_epoch`.
    initial_weights: trainable weights before training.
    train_indices: indices into `train` of the examples trained on.
    validation_indices: indices into `train` of the validation split.
    gblend: for `blend='offline_gblend'`, the estimate: 'z' (used), 'z_ogr'
      (before the fusion floor), 'delta_g',
      'delta_o', 'present', 'warmup_epochs', 'probe_indices' and the per-head
      losses 'train_a', 'val_a', 'train_b', 'val_b'; None otherwise.
  """

  final_accuracy: float
  best_accuracy: float
  best_epoch: int
  history: list[dict[str, Any]]
  heads: list[str]
  head_weights: np.ndarray
  keras_model: tf.keras.Model
  final_weights: list[np.ndarray]
  best_weights: list[np.ndarray]
  initial_weights: list[np.ndarray]
  train_indices: np.ndarray
  validation_indices: np.ndarray
  gblend: Optional[dict[str, Any]] = None


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class GBlendOptions:
  """The switches of `blend='offline_gblend'` (`train_centralized`'s gblend_*).

  Attributes:
    warmup_epochs: warm-up epochs; None = max(1, round(0.2 · epochs)).
    epsilon: floor of ΔO² (ALGORITHM.md §3).
    probe_size: None = L^T on the whole training part; an integer = on a
      seeded subset of that size.
    relative_floor: optional κ, ΔO² ≥ κ · mean over heads (§5b).
    fusion_floor: z_fusion ≥ this after the estimate (§5b; 0 = none).
  """

  warmup_epochs: Optional[int] = None
  epsilon: float = ogr.DEFAULT_EPSILON
  probe_size: Optional[int] = None
  relative_floor: Optional[float] = None
  fusion_floor: float = 0.0

  def __post_init__(self):
    if self.warmup_epochs is not None and (
        not _is_int(self.warmup_epochs) or self.warmup_epochs < 1):
      raise ValueError('gblend_warmup_epochs must be an integer ≥ 1 or None, '
                       f'got {self.warmup_epochs!r}.')
    if self.probe_size is not None and (
        not _is_int(self.probe_size) or self.probe_size < 1):
      raise ValueError('gblend_probe_size must be an integer ≥ 1 or None (the '
                       f'whole training part), got {self.probe_size!r}.')
    if self.relative_floor is not None and (
        not isinstance(self.relative_floor, numbers.Real) or
        not math.isfinite(self.relative_floor) or self.relative_floor < 0):
      raise ValueError('gblend_relative_floor must be a finite number ≥ 0 or '
                       f'None, got {self.relative_floor!r}.')
    if (not isinstance(self.fusion_floor, numbers.Real) or
        not 0.0 <= self.fusion_floor <= 1.0):
      raise ValueError('gblend_fusion_floor must lie in [0, 1], got '
                       f'{self.fusion_floor!r}.')
    if (not isinstance(self.epsilon, numbers.Real) or
        not math.isfinite(self.epsilon) or self.epsilon <= 0):
      raise ValueError('gblend_epsilon must be a finite number > 0, got '
                       f'{self.epsilon!r}.')


def _check_arguments(train, test, epochs, batch_size, learning_rate,
                     blend, validation_fraction, eval_every):
  if not isinstance(train, dataset_lib.MultiModalDataset):
    raise ValueError('train must be a MultiModalDataset, got '
                     f'{type(train).__name__}.')
  if not isinstance(test, dataset_lib.MultiModalDataset):
    raise ValueError('test must be a MultiModalDataset, got '
                     f'{type(test).__name__}.')
  if not _is_int(epochs) or epochs < 1:
    raise ValueError(f'epochs must be an integer ≥ 1, got {epochs!r}.')
  if not _is_int(batch_size) or batch_size < 1:
    raise ValueError(f'batch_size must be an integer ≥ 1, got {batch_size!r}.')
  if not _is_int(eval_every) or eval_every < 1:
    raise ValueError(f'eval_every must be an integer ≥ 1, got {eval_every!r}.')
  if (not isinstance(learning_rate, numbers.Real) or
      not math.isfinite(learning_rate) or learning_rate <= 0):
    raise ValueError('learning_rate must be a finite number > 0, got '
                     f'{learning_rate!r}.')
  if blend not in BLENDS:
    raise ValueError(f'Unknown blend {blend!r}; expected one of '
                     f'{", ".join(repr(b) for b in BLENDS)}.')
  if (not isinstance(validation_fraction, numbers.Real) or
      not 0.0 < validation_fraction < 1.0):
    raise ValueError('validation_fraction must lie strictly between 0 and 1 '
                     '(the validation split is carved from train), got '
                     f'{validation_fraction!r}.')


def _check_data(train, test):
  if len(train) < 2:
    raise ValueError(f'train ({train.name}) needs at least 2 examples (one to '
                     f'train on, one to validate on), has {len(train)}.')
  if len(test) < 1:
    raise ValueError(f'test ({test.name}) is empty.')
  train_specs = [(m.name, m.kind, tuple(m.shape)) for m in train.modalities]
  missing = [name for name, _, _ in train_specs if name not in test.features]
  if missing:
    raise ValueError(f'test ({test.name}) lacks the modalities {missing} of '
                     f'train ({train.name}).')
  for name, _, shape in train_specs:
    test_shape = tuple(test.features[name].shape[1:])
    if test_shape != shape:
      raise ValueError(f'Modality {name!r} has per-example shape {shape} in '
                       f'train but {test_shape} in test.')
  if test.num_classes != train.num_classes:
    raise ValueError(f'train has {train.num_classes} classes, test has '
                     f'{test.num_classes}.')


def _check_head_weights(head_weights, heads, blend) -> Optional[np.ndarray]:
  if head_weights is None:
    return None
  if blend != BLEND_FIXED:
    raise ValueError(f"head_weights is for blend='fixed'; blend={blend!r} "
                     'estimates the head weights itself (its warm-up uses '
                     'equal weights).')
  try:
    weights = np.asarray(head_weights, np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'head_weights must be {len(heads)} numbers ({heads}), '
                     f'got {head_weights!r}.') from e
  if weights.shape != (len(heads),):
    raise ValueError(f'head_weights needs {len(heads)} entries, one per head '
                     f'{heads} (uni-modal heads, then fusion), got shape '
                     f'{weights.shape}.')
  if not np.all(np.isfinite(weights)) or np.any(weights < 0):
    raise ValueError(f'head_weights must be finite and ≥ 0, got '
                     f'{weights.tolist()}.')
  if weights.sum() <= 0:
    raise ValueError('head_weights must have a positive sum, got '
                     f'{weights.tolist()}.')
  return weights.astype(np.float32)


def stratified_split(labels: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(train_indices, validation_indices), stratified by label, seeded.

  The validation split has round(fraction · n) examples (at least 1, at most
  n − 1), allotted to classes in proportion to their sizes (largest
  remainders, ties broken at random); both index arrays are sorted.
  """
  labels = np.asarray(labels)
  n = labels.shape[0]
  if n < 2:
    raise ValueError(f'Cannot split {n} example(s) into train and validation.')
  rng = np.random.default_rng([seed, _STREAM_SPLIT])
  num_val = int(min(max(1, round(fraction * n)), n - 1))
  classes, counts = np.unique(labels, return_counts=True)
  exact = num_val * counts / n
  quota = np.floor(exact).astype(np.int64)
  remainder = exact - quota
  # Largest remainders first; a random key breaks ties reproducibly.
  order = np.lexsort((rng.random(len(classes)), -remainder))
  quota[order[:num_val - int(quota.sum())]] += 1
  val = []
  for cls, q in zip(classes, quota):
    members = np.flatnonzero(labels == cls)
    val.append(rng.permutation(members)[:q])
  val = np.sort(np.concatenate(val)).astype(np.int64)
  is_val = np.zeros(n, bool)
  is_val[val] = True
  return np.flatnonzero(~is_val).astype(np.int64), val


def _arrays(ds: dataset_lib.MultiModalDataset):
  """NumPy arrays in the element structure, absent modalities zero-filled.

  Same contents as `dataset_lib.to_tf_dataset(ds)`, kept as arrays so that
  batches are gathered by index (seeded order, no tf.data shuffle state).
  """
  x = collections.OrderedDict()
  mask = collections.OrderedDict()
  for m in ds.modalities:
    flags = np.asarray(ds.presence[m.name], np.float32)
    array = ds.features[m.name]
    x[m.name] = (array * flags.reshape((-1,) + (1,) * (array.ndim - 1))
                 ).astype(np.float32)
    mask[m.name] = flags
  return collections.OrderedDict(x=x, mask=mask,
                                 y=ds.labels.astype(np.int32))


def _take(arrays, indices):
  return tf.nest.map_structure(lambda a: a[indices], arrays)


def _weights_of(keras_model: tf.keras.Model) -> list[np.ndarray]:
  return [v.numpy() for v in keras_model.trainable_variables]


def _model_weights(keras_model: tf.keras.Model):
  return tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in keras_model.trainable_variables],
      non_trainable=[v.numpy() for v in keras_model.non_trainable_variables])


def _head_losses(metrics: Mapping[str, float], heads: Sequence[str]
                 ) -> np.ndarray:
  return np.array([metrics[f'{h}/loss'] for h in heads], np.float32)


class _Trainer:
  """A Keras model, its plain-SGD train step and a seeded batch order."""

  def __init__(self, keras_model, modalities, train_arrays, batch_size,
               learning_rate):
    self.keras_model = keras_model
    self.modalities = [m.name for m in modalities]
    self.heads = losses.head_names(self.modalities)
    self.arrays = train_arrays
    self.num_examples = int(train_arrays['y'].shape[0])
    self.batch_size = batch_size
    spec = dataset_lib.element_spec(modalities)
    batch_spec = tf.nest.map_structure(
        lambda s: tf.TensorSpec([None] + s.shape.as_list(), s.dtype), spec)
    z_spec = tf.TensorSpec([len(self.heads)], tf.float32)
    variables = keras_model.trainable_variables
    lr = tf.constant(learning_rate, tf.float32)

    @tf.function(input_signature=[batch_spec, z_spec])
    def train_step(batch, z):
      with tf.GradientTape() as tape:
        logits = keras_model(models.keras_inputs(batch), training=True)
        loss_sum, correct, count = losses.head_statistics(
            logits, batch['y'], batch['mask'], self.modalities)
        loss = losses.blended_loss(
            losses.mean_head_losses(loss_sum, count), z)
        if keras_model.losses:
          loss += tf.add_n(keras_model.losses)
      gradients = tape.gradient(loss, variables)
      for variable, gradient in zip(variables, gradients):
        if gradient is not None:
          variable.assign_sub(lr * gradient)
      return loss, loss_sum, correct, count

    self._train_step = train_step

  def set_weights(self, weights: Sequence[np.ndarray]) -> None:
    for variable, value in zip(self.keras_model.trainable_variables, weights):
      variable.assign(value)

  def run_epoch(self, z: np.ndarray, rng: np.random.Generator
                ) -> dict[str, Any]:
    """One shuffled pass over the training part (last batch may be short)."""
    order = rng.permutation(self.num_examples)
    z = tf.constant(z, tf.float32)
    step_losses = []
    totals = np.zeros((3, len(self.heads)), np.float64)
    for start in range(0, self.num_examples, self.batch_size):
      batch = _take(self.arrays, order[start:start + self.batch_size])
      loss, loss_sum, correct, count = self._train_step(batch, z)
      step_losses.append(float(loss.numpy()))
      totals += np.stack([loss_sum.numpy(), correct.numpy(), count.numpy()])
    if not np.all(np.isfinite(step_losses)):
      raise FloatingPointError(
          'Centralised training diverged (non-finite loss); lower the '
          'learning rate.')
    stats = {'train_loss': float(np.mean(step_losses))}
    loss_sum, correct, count = totals
    for i, head in enumerate(self.heads):
      stats[f'train/{head}/loss'] = (float(loss_sum[i] / count[i]) if count[i]
                                     else float('nan'))
      stats[f'train/{head}/accuracy'] = (float(correct[i] / count[i])
                                         if count[i] else float('nan'))
    return stats


def _selection_key(entry):
  accuracy = entry['val/fusion/accuracy']
  loss = entry['val/fusion/loss']
  accuracy = -math.inf if math.isnan(accuracy) else accuracy
  loss = math.inf if math.isnan(loss) else loss
  return (accuracy, -loss, -entry['epoch'])


def estimate_gblend(trainer: _Trainer, evaluate_on, train_part, val_part,
                    train_indices: np.ndarray, options: GBlendOptions, *,
                    epochs: int, seed: int, probe_name: str
                    ) -> tuple[np.ndarray, dict[str, Any]]:
  """G-Blend's offline head weights z, and the estimate's record.

  From the trainer's current weights (checkpoint A), a warm-up with equal
  weights over the heads that apply (checkpoint B); per head, L^T on the
  training probe and L^V on `val_part` at A and B (`evaluate_on`, inference
  mode), then z ∝ ΔG/ΔO² (`ogr.modality_blend_weights`) with the fusion floor
  (`ogr.stabilize_blend`). Leaves the trainer at B: the caller restarts.

  Returns:
    (z, the `CentralizedResult.gblend` dict).
  """
  heads = trainer.heads
  warmup_epochs = (max(1, int(round(0.2 * epochs)))
                   if options.warmup_epochs is None else options.warmup_epochs)
  if options.probe_size is None or options.probe_size >= len(train_indices):
    probe_positions = np.arange(len(train_indices))
  else:
    probe_rng = np.random.default_rng([seed, _STREAM_PROBE])
    probe_positions = np.sort(probe_rng.choice(
        len(train_indices), options.probe_size, replace=False))
  probe_part = train_part.subset(probe_positions, name=probe_name)
  # Checkpoint A: the initial weights.
  train_a = _head_losses(evaluate_on(probe_part), heads)
  val_a = _head_losses(evaluate_on(val_part), heads)
  present = (np.isfinite(train_a) & np.isfinite(val_a)).astype(np.float32)
  if not present.any():
    raise ValueError('offline_gblend: no head applies to both the training '
                     'probe and the validation split.')
  equal = ogr.uniform_over(present).numpy()
  warmup_rng = np.random.default_rng([seed, _STREAM_WARMUP])
  for _ in range(warmup_epochs):
    trainer.run_epoch(equal, warmup_rng)
  # Checkpoint B: after the warm-up.
  train_b = _head_losses(evaluate_on(probe_part), heads)
  val_b = _head_losses(evaluate_on(val_part), heads)
  z_ogr = ogr.modality_blend_weights(train_a, val_a, train_b, val_b,
                                     present, equal, epsilon=options.epsilon,
                                     relative_floor=options.relative_floor)
  z = ogr.stabilize_blend(z_ogr, present,
                          fusion_floor=options.fusion_floor).numpy()
  delta_g, delta_o = ogr.generalization_and_overfitting(
      train_a, val_a, train_b, val_b)
  return z, {
      'z': z.copy(),
      'z_ogr': z_ogr.numpy(),
      'delta_g': delta_g.numpy(),
      'delta_o': delta_o.numpy(),
      'present': present,
      'warmup_epochs': warmup_epochs,
      'probe_indices': train_indices[probe_positions],
      'train_a': train_a, 'val_a': val_a,
      'train_b': train_b, 'val_b': val_b,
  }


def _fit(trainer: _Trainer, z: np.ndarray, evaluate_on, evaluated_parts, *,
         epochs: int, eval_every: int, seed: int):
  """`epochs` epochs with the fixed head weights z; (history, best, weights).

  Evaluates `evaluated_parts` ((prefix, dataset) pairs) every `eval_every`-th
  and the last epoch, and keeps the weights of the best one by
  `_selection_key`.
  """
  train_rng = np.random.default_rng([seed, _STREAM_TRAIN])
  history = []
  best_entry = None
  best_weights = None
  for epoch in range(1, epochs + 1):
    entry = {'epoch': epoch}
    entry.update(trainer.run_epoch(z, train_rng))
    entry['head_weights'] = [float(w) for w in z]
    evaluated = epoch % eval_every == 0 or epoch == epochs
    entry['evaluated'] = evaluated
    if evaluated:
      for prefix, part in evaluated_parts:
        for key, value in evaluate_on(part).items():
          entry[f'{prefix}/{key}'] = float(value)
      if best_entry is None or _selection_key(entry) > _selection_key(
          best_entry):
        best_entry = entry
        best_weights = _weights_of(trainer.keras_model)
    history.append(entry)
  return history, best_entry, best_weights


def train_centralized(
    train: dataset_lib.MultiModalDataset,
    test: dataset_lib.MultiModalDataset,
    *,
    model_config: models.ModelConfig = models.ModelConfig(),
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 0.05,
    seed: int = 0,
    head_weights: Optional[Sequence[float]] = None,
    blend: str = BLEND_FIXED,
    validation_fraction: float = 0.1,
    eval_every: int = 1,
    gblend_warmup_epochs: Optional[int] = None,
    gblend_epsilon: float = ogr.DEFAULT_EPSILON,
    gblend_probe_size: Optional[int] = None,
    gblend_relative_floor: Optional[float] = None,
    gblend_fusion_floor: float = 0.0,
    encoders: Optional[Mapping[str, models.EncoderFn]] = None,
    eval_batch_size: int = 256,
) -> CentralizedResult:
  """Trains the multi-modal model centrally; see the module docstring.

  Args:
    train: the training pool; the validation split is carved from it.
    test: the held-out test set (reported only).
    model_config: encoder sizes and the initialisation seed.
    epochs: epochs of the main run (≥ 1).
    batch_size: mini-batch size of SGD.
    learning_rate: SGD learning rate (plain SGD, no momentum).
    seed: seeds the validation split, the G-Blend probe and the batch order.
    head_weights: fixed head weights (`blend='fixed'` only), one per head in
      `losses.head_names` order; None = fusion head only.
    blend: 'fixed' or 'offline_gblend'.
    validation_fraction: share of `train` held out for validation, in (0, 1).
    eval_every: evaluate on validation and test every this many epochs (and
      always after the last).
    gblend_warmup_epochs: warm-up epochs of `offline_gblend`; None =
      max(1, round(0.2 · epochs)).
    gblend_epsilon: floor of ΔO² (ALGORITHM.md §3).
    gblend_probe_size: None = measure L^T on the whole training part; an
      integer = on a seeded subset of that size (e.g. the validation split's
      size, as the federated clients do).
    gblend_relative_floor: optional κ, ΔO² ≥ κ · mean over heads (§5b).
    gblend_fusion_floor: z_fusion ≥ this after the estimate (§5b
      `fusion_weight_floor`; 0 = none). G-Blend's z can starve the fusion
      head, which is the head evaluated.
    encoders: optional per-modality encoders for `models.build_keras_model`.
    eval_batch_size: batch size of `evaluation.evaluate`.

  Returns:
    A `CentralizedResult`.

  Raises:
    ValueError: bad arguments (the message says which and why).
  """
  _check_arguments(train, test, epochs, batch_size, learning_rate, blend,
                   validation_fraction, eval_every)
  gblend_options = GBlendOptions(
      warmup_epochs=gblend_warmup_epochs, epsilon=gblend_epsilon,
      probe_size=gblend_probe_size, relative_floor=gblend_relative_floor,
      fusion_floor=gblend_fusion_floor)
  _check_data(train, test)
  if not _is_int(eval_batch_size) or eval_batch_size < 1:
    raise ValueError('eval_batch_size must be an integer ≥ 1, got '
                     f'{eval_batch_size!r}.')
  if not isinstance(model_config, models.ModelConfig):
    raise ValueError('model_config must be a models.ModelConfig, got '
                     f'{type(model_config).__name__}.')
  modality_names = train.modality_names
  heads = losses.head_names(modality_names)
  fixed_weights = _check_head_weights(head_weights, heads, blend)

  train_indices, val_indices = stratified_split(train.labels,
                                                validation_fraction, seed)
  train_part = train.subset(train_indices, name=f'{train.name}/train')
  val_part = train.subset(val_indices, name=f'{train.name}/validation')
  test_view = test.with_modalities(modality_names)

  keras_model = models.build_keras_model(train.modalities, train.num_classes,
                                         config=model_config,
                                         encoders=encoders)
  trainer = _Trainer(keras_model, train.modalities, _arrays(train_part),
                     batch_size, float(learning_rate))
  initial_weights = _weights_of(keras_model)

  def evaluate_on(part):
    return evaluation.evaluate(keras_model, _model_weights(keras_model), part,
                               batch_size=eval_batch_size)

  gblend = None
  if blend == BLEND_FIXED:
    z = (models.fused_only_weights(modality_names) if fixed_weights is None
         else fixed_weights)
  else:
    z, gblend = estimate_gblend(trainer, evaluate_on, train_part, val_part,
                                train_indices, gblend_options, epochs=epochs,
                                seed=seed, probe_name=f'{train.name}/probe')
    # Restart from the initial weights with z frozen.
    trainer.set_weights(initial_weights)
  z = np.asarray(z, np.float32)
  history, best_entry, best_weights = _fit(
      trainer, z, evaluate_on, (('val', val_part), ('test', test_view)),
      epochs=epochs, eval_every=eval_every, seed=seed)

  return CentralizedResult(
      final_accuracy=history[-1]['test/fusion/accuracy'],
      best_accuracy=best_entry['test/fusion/accuracy'],
      best_epoch=best_entry['epoch'],
      history=history,
      heads=heads,
      head_weights=z,
      keras_model=keras_model,
      final_weights=_weights_of(keras_model),
      best_weights=best_weights,
      initial_weights=initial_weights,
      train_indices=train_indices,
      validation_indices=val_indices,
      gblend=gblend,
  )
