"""A round's arithmetic: FLOPs per example, the machine's matmul rate.

With them the flops section puts a floor under a round's time.

  model_flops_per_example        forward and training-step FLOPs of a model
                                 (tf.compat.v1.profiler), with a dense-layer
                                 count as a cross-check
  measure_matmul_gflops          this machine's large-matmul rate
  hgb_round_flops                a round's FLOPs, summed over its clients
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_hgb import losses
from tff_hgb import models
from tff_hgb.benchmarking import instruments


def _fixed_batch_placeholders(input_spec, batch_size: int):
  return tf.nest.map_structure(
      lambda s: tf.compat.v1.placeholder(s.dtype, [batch_size] +
                                         s.shape.as_list()[1:]), input_spec)


@contextlib.contextmanager
def _quiet_native_output():
  """Silences C++ writes to stdout/stderr (the profiler's shape notices)."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(os.devnull, 'wb') as devnull:
    os.dup2(devnull.fileno(), 1)
    os.dup2(devnull.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for fd in saved:
      os.close(fd)


def _profiled_flops(graph: tf.Graph) -> int:
  """Float ops of every op in `graph` with a FLOPs statistic (MatMul, BiasAdd,
  element-wise ops, ...); ops whose shapes depend on the data (the masked
  losses' small element-wise ops) have none and are left out."""
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  with _quiet_native_output():
    profile = tf.compat.v1.profiler.profile(graph, options=options)
  return int(profile.total_float_ops)


def model_flops_per_example(model_fn: Callable[[], models.MultiModalModel],
                            batch_size: int = 32) -> dict[str, Any]:
  """FLOPs per example of inference and of one training step.

  Counted by `tf.compat.v1.profiler` (float_operation) on graphs with a fixed
  batch of `batch_size`: the forward pass of every head with its masked
  cross-entropy (inference, as HGB's snapshots), and forward plus gradients of
  the loss over all heads with respect to every trainable variable (a training
  step; the optimizer update's few FLOPs per parameter are counted too).

  Returns:
    OrderedDict(forward, train_step, analytic_dense_forward, parameters,
    method).
  """
  counts = {}
  for kind in ('forward', 'train_step'):
    graph = tf.Graph()
    with graph.as_default():
      model = model_fn()
      batch = _fixed_batch_placeholders(model.input_spec, batch_size)
      with tf.GradientTape() as tape:
        _, loss_sum, _, count = model.head_statistics(
            batch, training=kind == 'train_step')
        loss = losses.blended_loss(
            losses.mean_head_losses(loss_sum, count),
            tf.fill([len(model.heads)], 1.0 / len(model.heads)))
      if kind == 'train_step':
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        for variable, gradient in zip(variables, gradients):
          if gradient is not None:
            variable.assign_sub(0.01 * gradient)
      counts[kind] = _profiled_flops(graph) / batch_size
  with tf.Graph().as_default():
    keras_model = model_fn().keras_model
    analytic = dense_forward_flops(keras_model)
    parameters = int(sum(np.prod(v.shape) for v in
                         keras_model.trainable_variables))
  return collections.OrderedDict(
      forward=counts['forward'], train_step=counts['train_step'],
      analytic_dense_forward=analytic, parameters=parameters,
      method=('tf.compat.v1.profiler float_operation on a fixed batch of '
              f'{batch_size}, divided by {batch_size}'))


def dense_forward_flops(keras_model: tf.keras.Model) -> Optional[float]:
  """2·in·out (+ out for the bias) per Dense layer and example; None when the
  model has layers with weights other than Dense (e.g. convolutions)."""
  total = 0.0

  def layers_of(model):
    for layer in model.layers:
      if isinstance(layer, tf.keras.Model):
        yield from layers_of(layer)
      else:
        yield layer

  for layer in layers_of(keras_model):
    if not layer.weights:
      continue
    if not isinstance(layer, tf.keras.layers.Dense):
      return None
    fan_in, fan_out = layer.kernel.shape
    total += 2.0 * fan_in * fan_out + (fan_out if layer.use_bias else 0)
  return total


def measure_matmul_gflops(n: int = 2048, repeats: int = 5, warmup: int = 2
                          ) -> dict[str, Any]:
  """GFLOP/s of an n×n float32 tf.matmul in this process (2n³ per product)."""
  a = tf.random.stateless_uniform([n, n], seed=[1, 2])
  b = tf.random.stateless_uniform([n, n], seed=[3, 4])

  @tf.function
  def product(x, y):
    return tf.reduce_sum(tf.matmul(x, y))

  for _ in range(warmup):
    product(a, b).numpy()
  rates = []
  for _ in range(repeats):
    start = time.perf_counter()
    product(a, b).numpy()
    rates.append(2.0 * n**3 / (time.perf_counter() - start) / 1e9)
  summary = instruments.summarize(rates, digits=2)
  summary['matrix_size'] = n
  summary['threads'] = ('TensorFlow default (intra-op = usable cores: '
                        f'{instruments.machine_info()["cpus_usable"]})')
  return summary


def hgb_round_flops(sizes: Sequence[tuple[int, int, int]], local_epochs: int,
                    flops: Mapping[str, float]) -> dict[str, float]:
  """FLOPs of one round, summed over clients.

  Args:
    sizes: per client (training examples, probe examples, validation
      examples).
    local_epochs: E.
    flops: `model_flops_per_example` output.

  Returns:
    OrderedDict(training, snapshots, hgb=training+snapshots, fedavg=training):
    training = E·n_train·train_step; HGB's three snapshots each run inference
    over the probe and the validation examples.
  """
  training = sum(local_epochs * n * flops['train_step'] for n, _, _ in sizes)
  snapshots = sum(3 * (p + v) * flops['forward'] for _, p, v in sizes)
  return collections.OrderedDict(training=training, snapshots=snapshots,
                                 hgb=training + snapshots, fedavg=training)

