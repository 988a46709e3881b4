"""Multi-modal Keras models and their TFF `VariableModel` (ALGORITHM.md §2).

`build_keras_model` makes one encoder per modality (chosen by the modality's
kind, or supplied by the user), one uni-modal head per encoder and a fusion head
over the concatenated features, in which an absent modality's features are
multiplied by its mask (zero-filled). The Keras model takes a flat dict of
inputs made from a batch by `keras_inputs` (Keras 2.14 functional models
mis-handle nested dict inputs with a single modality) and returns an OrderedDict
of logits, one per head (`losses.head_names`).

`MultiModalModel` wraps such a Keras model as a `tff.learning.models.VariableModel`
whose training loss is a fixed weighting of the heads' losses: fused loss only
(the paper's FedAvg), all heads equally, or any other fixed weights. HGB's own
client work uses the same object for its per-head losses with per-client weights.
"""

from __future__ import annotations

import collections
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import losses
from tff_hgb import model_config
from tff_hgb.data import dataset as dataset_lib

FUSION = losses.FUSION

# A user-supplied encoder: (Keras input tensor, feature_dim, seed) -> features.
EncoderFn = Callable[[tf.Tensor, int, int], tf.Tensor]
# Its home is model_config (TensorFlow-free, for the flag parser).
ModelConfig = model_config.ModelConfig

MASK_SUFFIX = '__mask'
ENCODER_PREFIX = 'encoder_'
HEAD_PREFIX = 'head_'


def keras_inputs(batch) -> collections.OrderedDict:
  """A batch in the element structure → the Keras model's flat input dict."""
  inputs = collections.OrderedDict(batch['x'])
  for name, mask in batch['mask'].items():
    inputs[name + MASK_SUFFIX] = mask
  return inputs


def model_modalities(keras_model: tf.keras.Model) -> list[str]:
  """The modality names a model from `build_keras_model` takes, in order."""
  return [name for name in keras_model.input_names
          if not name.endswith(MASK_SUFFIX)]


def variable_modalities(keras_model: tf.keras.Model) -> list[Optional[str]]:
  """For each trainable variable (in order), the modality it belongs to.

  Encoder m and uni-modal head m belong to m; the fusion head (and anything a
  user adds outside encoders) to no modality (None).
  """
  modalities = model_modalities(keras_model)
  owner_by_id = {}
  for layer in keras_model.layers:
    for name in modalities:
      if layer.name in (f'{ENCODER_PREFIX}{name}', f'{HEAD_PREFIX}{name}'):
        for variable in layer.trainable_variables:
          owner_by_id[id(variable)] = name
  return [owner_by_id.get(id(v)) for v in keras_model.trainable_variables]


def _init(seed: int):
  return tf.keras.initializers.GlorotUniform(seed=seed)


def _vector_encoder(x, config: ModelConfig, seed: int):
  h = tf.keras.layers.Dense(config.hidden_units, activation='relu',
                            kernel_initializer=_init(seed))(x)
  if config.dropout:
    h = tf.keras.layers.Dropout(config.dropout, seed=seed)(h)
  return tf.keras.layers.Dense(config.feature_dim, activation='relu',
                               kernel_initializer=_init(seed + 1))(h)


# Rank of a convolution's spatial axes → (average pool, max pool, global max).
_POOLS = {
    1: (tf.keras.layers.AveragePooling1D, tf.keras.layers.MaxPool1D,
        tf.keras.layers.GlobalMaxPooling1D),
    2: (tf.keras.layers.AveragePooling2D, tf.keras.layers.MaxPool2D,
        tf.keras.layers.GlobalMaxPooling2D),
    3: (tf.keras.layers.AveragePooling3D, tf.keras.layers.MaxPool3D,
        tf.keras.layers.GlobalMaxPooling3D),
}


def _grid_features(h, config: ModelConfig, seed: int):
  """Conv features [B, *axes, C] -> [B, feature_dim], keeping where they are.

  Three summaries of the last convolution, concatenated into a dense layer:
  each axis pooled to at most `config.grid_cells` cells
  (model_config.grid_pool_sizes) by average and by maximum, flattened, so the
  head still sees where (when) a pattern occurred and how strongly; and the
  global maximum per channel, whether it occurred anywhere, undiluted by the
  silence, padding or background around it. Global average pooling alone,
  which the first encoders used, kept neither, and lost 15-65 points to a
  flattening MLP (issue 19; measurements in docs/DESIGN.md).
  """
  average, maximum, global_maximum = _POOLS[len(h.shape) - 2]
  sizes = model_config.grid_pool_sizes(h.shape[1:-1], config.grid_cells)
  layers = tf.keras.layers
  summaries = []
  for pool in (average, maximum):
    grid = pool(sizes, padding='same')(h) if any(s > 1 for s in sizes) else h
    summaries.append(layers.Flatten()(grid))
  summaries.append(global_maximum()(h))
  return layers.Dense(config.feature_dim, activation='relu',
                      kernel_initializer=_init(seed))(
                          layers.Concatenate()(summaries))


def _halve(h, config: ModelConfig, pool_time: bool = True):
  """Max-pool by 2 along each axis long enough (model_config.halving_pool_sizes);
  a clip's frames (pool_time=False) are few and kept."""
  axes = [int(d) for d in h.shape[1:-1]]
  sizes = list(model_config.halving_pool_sizes(axes, config.grid_cells))
  if not pool_time:
    sizes[0] = 1
  if all(s == 1 for s in sizes):
    return h
  _, maximum, _ = _POOLS[len(axes)]
  return maximum(tuple(sizes), padding='same')(h)


def _sequence_encoder(x, config: ModelConfig, seed: int):
  """1-D convolutions over time (time series, spectrogram frames)."""
  h = tf.keras.layers.Conv1D(config.conv_filters, 5, padding='same',
                             activation='relu', kernel_initializer=_init(seed))(x)
  h = _halve(h, config)
  h = tf.keras.layers.Conv1D(2 * config.conv_filters, 5, padding='same',
                             activation='relu',
                             kernel_initializer=_init(seed + 1))(h)
  return _grid_features(h, config, seed + 2)


def _image_encoder(x, config: ModelConfig, seed: int):
  """3x3 convolutions at full resolution, a 2x2 max-pool, a pooled grid."""
  h = tf.keras.layers.Conv2D(config.conv_filters, 3, padding='same',
                             activation='relu', kernel_initializer=_init(seed))(x)
  h = _halve(h, config)
  h = tf.keras.layers.Conv2D(2 * config.conv_filters, 3, padding='same',
                             activation='relu',
                             kernel_initializer=_init(seed + 1))(h)
  return _grid_features(h, config, seed + 2)


def _clip_encoder(x, config: ModelConfig, seed: int):
  """A clip [frames, height, width, channels]; one frame is an image.

  A one-frame clip goes to the image encoder (a 3-D kernel over one frame
  only wastes two thirds of its weights on padding); longer clips get 3-D
  convolutions, pooled over space only (frames are few), and a pooled grid.
  """
  if x.shape[1] == 1:
    return _image_encoder(tf.keras.layers.Reshape(tuple(x.shape[2:]))(x),
                          config, seed)
  h = tf.keras.layers.Conv3D(config.conv_filters, 3, padding='same',
                             activation='relu', kernel_initializer=_init(seed))(x)
  h = _halve(h, config, pool_time=False)
  h = tf.keras.layers.Conv3D(2 * config.conv_filters, 3, padding='same',
                             activation='relu',
                             kernel_initializer=_init(seed + 1))(h)
  return _grid_features(h, config, seed + 2)


def _mlp_encoder(x, config: ModelConfig, seed: int):
  """The vector encoder over the flattened input (any modality's reference)."""
  return _vector_encoder(tf.keras.layers.Flatten()(x), config, seed)


# Encoder kind (model_config.ENCODER_KINDS) → its builder; a modality's kind
# names its default encoder.
_ENCODERS = {
    dataset_lib.VECTOR: _vector_encoder,
    dataset_lib.TIMESERIES: _sequence_encoder,
    dataset_lib.SPECTROGRAM: _sequence_encoder,
    dataset_lib.IMAGE: _image_encoder,
    dataset_lib.FRAMES: _clip_encoder,
    dataset_lib.FLOW: _clip_encoder,
    model_config.MLP: _mlp_encoder,
}


def build_keras_model(
    modalities: Sequence[dataset_lib.ModalitySpec],
    num_classes: int,
    *,
    config: ModelConfig = ModelConfig(),
    encoders: Optional[Mapping[str, EncoderFn]] = None,
) -> tf.keras.Model:
  """Encoders, uni-modal heads and a masked fusion head.

  Args:
    modalities: the modalities, in order; head order follows it.
    num_classes: classes of every head.
    config: sizes of the default encoders, the initialisation seed and
      `config.encoders`, (modality, encoder kind) pairs choosing a built-in
      encoder other than the default of the modality's kind (e.g. 'mlp').
    encoders: optional per-modality encoder functions replacing the default
      for that modality's kind: `fn(input_tensor, feature_dim, seed)` → a
      [B, feature_dim]-like features tensor (the user's own Keras layers).

  Returns:
    A Keras model mapping `keras_inputs(batch)` ({m: [B, *shape]} and
    {m + MASK_SUFFIX: [B]}) to an OrderedDict {head: logits [B, num_classes]}.
  """
  if not modalities:
    raise ValueError('A model needs at least one modality.')
  names = [m.name for m in modalities]
  losses.head_names(names)  # Rejects a modality named like the fusion head.
  encoders = dict(encoders or {})
  unknown = sorted(set(encoders) - set(names))
  if unknown:
    raise ValueError(f'Encoders given for unknown modalities {unknown}; the '
                     f'model has {names}.')
  model_config.check_encoders(config.encoders, modalities)
  kinds = {m.name: m.kind for m in modalities}
  kinds.update(config.encoders)
  both = sorted(set(encoders) & set(dict(config.encoders)))
  if both:
    raise ValueError(f'Modalities {both} have both an encoder function and an '
                     'encoder kind in config.encoders; give one.')
  inputs = collections.OrderedDict()
  for m in modalities:
    inputs[m.name] = tf.keras.Input(m.shape, name=m.name)
  for m in modalities:
    inputs[m.name + MASK_SUFFIX] = tf.keras.Input((), name=m.name + MASK_SUFFIX)
  outputs = collections.OrderedDict()
  masked_features = []
  for index, spec in enumerate(modalities):
    seed = config.seed * 1000 + 10 * index
    # Each encoder is its own sub-model, so its variables can be told apart
    # (modality-aware aggregation averages them only over clients holding m).
    encoder_input = tf.keras.Input(spec.shape, name=f'{spec.name}_features')
    if spec.name in encoders:
      encoded = encoders[spec.name](encoder_input, config.feature_dim, seed)
    else:
      encoded = _ENCODERS[kinds[spec.name]](encoder_input, config, seed)
    encoder = tf.keras.Model(encoder_input, encoded,
                             name=f'{ENCODER_PREFIX}{spec.name}')
    features = encoder(inputs[spec.name])
    outputs[spec.name] = tf.keras.layers.Dense(
        num_classes, kernel_initializer=_init(seed + 5),
        name=f'{HEAD_PREFIX}{spec.name}')(features)
    mask = tf.keras.layers.Reshape((1,))(inputs[spec.name + MASK_SUFFIX])
    masked_features.append(tf.keras.layers.Multiply()([features, mask]))
  fused = (masked_features[0] if len(masked_features) == 1 else
           tf.keras.layers.Concatenate()(masked_features))
  outputs[FUSION] = tf.keras.layers.Dense(
      num_classes, kernel_initializer=_init(config.seed * 1000 + 999),
      name='head_fusion')(fused)
  return tf.keras.Model(inputs=inputs, outputs=outputs)


def fused_only_weights(modalities: Sequence[str]) -> np.ndarray:
  """Head weights of the paper's FedAvg: the fusion head's loss only."""
  weights = np.zeros(len(modalities) + 1, np.float32)
  weights[-1] = 1.0
  return weights


def equal_head_weights(modalities: Sequence[str]) -> np.ndarray:
  """Fixed auxiliary heads: every head's loss with the same weight."""
  return np.full(len(modalities) + 1, 1.0 / (len(modalities) + 1), np.float32)


class MultiModalModel(tff.learning.models.VariableModel):
  """A multi-modal Keras model as a TFF `VariableModel`.

  `forward_pass` returns the loss Σ_h head_weights[h] · L_h (fixed weights) and
  updates per-head loss/accuracy metrics. `head_statistics` gives per-head sums
  for callers that blend heads with their own weights (HGB client work).

  With `jit_compile`, `forward_pass` is an XLA-compiled `tf.function` (so are
  its gradients, which TF compiles with it), which speeds up TFF's own
  training loops (FedAvg and the other baselines call it per batch), and the
  HGB client work compiles its whole local step (`client_work`). Shapes that
  differ (a short last batch) are compiled once each.
  """

  def __init__(self, keras_model: tf.keras.Model,
               modalities: Sequence[dataset_lib.ModalitySpec],
               head_weights: Optional[Sequence[float]] = None,
               batch_size: Optional[int] = None,
               jit_compile: bool = False):
    self._keras_model = keras_model
    self.jit_compile = bool(jit_compile)
    if self.jit_compile:
      # Per instance: the class's forward_pass stays an ordinary tf.function.
      self.forward_pass = tf.function(self._forward_pass, jit_compile=True)
    self._modalities = [m.name for m in modalities]
    self._heads = losses.head_names(self._modalities)
    if head_weights is None:
      head_weights = fused_only_weights(self._modalities)
    head_weights = np.asarray(head_weights, np.float32)
    if head_weights.shape != (len(self._heads),):
      raise ValueError(f'head_weights needs {len(self._heads)} entries '
                       f'({self._heads}), got {head_weights.shape}.')
    self._head_weights = tf.constant(head_weights)
    spec = dataset_lib.element_spec(modalities)
    self._input_spec = tf.nest.map_structure(
        lambda s: tf.TensorSpec([batch_size] + s.shape.as_list(), s.dtype), spec)
    num_heads = len(self._heads)

    def zeros(name):
      return tf.Variable(tf.zeros([num_heads]), trainable=False, name=name)

    self._loss_sum = zeros('head_loss_sum')
    self._correct = zeros('head_correct')
    self._count = zeros('head_count')
    self._num_examples = tf.Variable(0, trainable=False, dtype=tf.int64,
                                     name='num_examples')
    self._num_batches = tf.Variable(0, trainable=False, dtype=tf.int64,
                                    name='num_batches')

  @property
  def keras_model(self) -> tf.keras.Model:
    return self._keras_model

  @property
  def modalities(self) -> list[str]:
    return list(self._modalities)

  @property
  def heads(self) -> list[str]:
    return list(self._heads)

  @property
  def trainable_variables(self):
    return self._keras_model.trainable_variables

  @property
  def non_trainable_variables(self):
    return self._keras_model.non_trainable_variables

  @property
  def local_variables(self):
    return [self._loss_sum, self._correct, self._count, self._num_examples,
            self._num_batches]

  @property
  def input_spec(self):
    return self._input_spec

  @tf.function
  def predict_on_batch(self, batch_input, training=True):
    return self._keras_model(keras_inputs(batch_input), training=training)

  def head_statistics(self, batch_input, training=True):
    """(logits, loss_sum [H], correct [H], count [H]) of one batch."""
    logits = self._keras_model(keras_inputs(batch_input), training=training)
    stats = losses.head_statistics(logits, batch_input['y'],
                                   batch_input['mask'], self._modalities)
    return (logits,) + stats

  def trained_head_counts(self) -> tf.Tensor:
    """Examples per head seen by `update_metrics` since the last reset."""
    return self._count.read_value()

  def update_metrics(self, loss_sum, correct, count, num_examples):
    self._loss_sum.assign_add(loss_sum)
    self._correct.assign_add(correct)
    self._count.assign_add(count)
    self._num_examples.assign_add(tf.cast(num_examples, tf.int64))
    self._num_batches.assign_add(1)

  @tf.function
  def forward_pass(self, batch_input, training=True):
    return self._forward_pass(batch_input, training)

  def _forward_pass(self, batch_input, training=True):
    logits, loss_sum, correct, count = self.head_statistics(batch_input,
                                                            training)
    num_examples = tf.shape(batch_input['y'])[0]
    self.update_metrics(loss_sum, correct, count, num_examples)
    loss = losses.blended_loss(losses.mean_head_losses(loss_sum, count),
                               self._head_weights)
    if self._keras_model.losses:
      loss += tf.add_n(self._keras_model.losses)
    return tff.learning.models.BatchOutput(
        loss=loss, predictions=logits, num_examples=num_examples)

  @tf.function
  def report_local_unfinalized_metrics(self):
    metrics = collections.OrderedDict()
    for i, head in enumerate(self._heads):
      metrics[f'{head}/loss'] = [self._loss_sum[i], self._count[i]]
      metrics[f'{head}/accuracy'] = [self._correct[i], self._count[i]]
    metrics['num_examples'] = [self._num_examples.read_value()]
    metrics['num_batches'] = [self._num_batches.read_value()]
    return metrics

  def metric_finalizers(self):
    def ratio(values):
      return tf.math.divide_no_nan(values[0], values[1])

    def total(values):
      return values[0]

    finalizers = collections.OrderedDict()
    for head in self._heads:
      finalizers[f'{head}/loss'] = ratio
      finalizers[f'{head}/accuracy'] = ratio
    finalizers['num_examples'] = total
    finalizers['num_batches'] = total
    return finalizers

  @tf.function
  def reset_metrics(self):
    for variable in self.local_variables:
      variable.assign(tf.zeros_like(variable))


def build_model_fn(
    modalities: Sequence[dataset_lib.ModalitySpec],
    num_classes: int,
    *,
    config: ModelConfig = ModelConfig(),
    encoders: Optional[Mapping[str, EncoderFn]] = None,
    head_weights: Optional[Sequence[float]] = None,
    jit_compile: bool = False,
) -> Callable[[], MultiModalModel]:
  """A no-argument `model_fn` as TFF's builders expect (new variables per call).

  `jit_compile`: the models' training steps run XLA-compiled (see
  `MultiModalModel`).
  """
  modalities = list(modalities)

  def model_fn() -> MultiModalModel:
    keras_model = build_keras_model(modalities, num_classes, config=config,
                                    encoders=encoders)
    return MultiModalModel(keras_model, modalities, head_weights=head_weights,
                           jit_compile=jit_compile)

  return model_fn
