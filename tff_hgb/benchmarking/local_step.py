"""The local_step section: one local step of MMPareto / OGM-GE / OGM against
fedavg_all_heads's, side by side (ALGORITHM.md §9: what a user pays).

Each client update runs as one TFF computation over one client's data (no
aggregation); its time divided by its steps is one step's cost.
"""

from __future__ import annotations

import collections
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import algorithms
from tff_hgb import models
from tff_hgb.algorithms import balanced
from tff_hgb.algorithms import fednova
from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

BASELINE = 'fedavg_all_heads'
# name → (method, its hyper-parameters) of `balanced.build_client_update`.
_BALANCED = collections.OrderedDict([
    ('mmpareto', (balanced.MMPARETO, balanced.DEFAULT_HPARAMS[balanced.MMPARETO])),
    ('ogm_ge', (balanced.OGM, balanced.DEFAULT_HPARAMS[balanced.OGM])),
    ('ogm', (balanced.OGM, collections.OrderedDict(
        balanced.DEFAULT_HPARAMS[balanced.OGM], noise_scale=0.0))),
])
_COMPARED = (
    'One local step, per client update: one client\'s pass (its T_k + V_k, '
    'the benchmark\'s batch size) repeated to at least --examples_per_client '
    'steps, run as one tff.tensorflow.computation on the owned worker (as in '
    'a round, without aggregation); seconds / steps. fedavg_all_heads = '
    'TFF\'s FedAvg client loop (the one fednova.py reproduces exactly) on the '
    'fixed equal-weight loss of all heads; mmpareto, ogm_ge, ogm = '
    'tff_hgb.algorithms.balanced.build_client_update (default '
    'hyper-parameters, modulation on). Run in turn (A B C D A B C D ...) '
    'after warm-up; ratio = median of per-repeat ratios to fedavg_all_heads.')


def _computations(fd, config):
  """name → a TFF computation (weights, dataset) running that client update.

  Built as TFF builds processes (models inside graphs), so eager Keras
  state in this program does not matter.
  """
  optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=config.client_learning_rate)
  opt_hparams = collections.OrderedDict(
      learning_rate=np.float32(config.client_learning_rate))
  names = [m.name for m in fd.modalities]
  all_heads_fn = models.build_model_fn(
      fd.modalities, fd.num_classes, config=config.model,
      head_weights=models.equal_head_weights(names))
  model_fn = models.build_model_fn(fd.modalities, fd.num_classes,
                                   config=config.model)
  with tf.Graph().as_default():
    model = model_fn()
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
    weights_type = tff.learning.models.weights_type_from_model(model)
  computations = collections.OrderedDict()

  @tff.tensorflow.computation(weights_type, data_type)
  def all_heads(weights, data):
    plain = fednova._build_local_training_fn(  # pylint: disable=protected-access
        all_heads_fn, algorithms.BASELINE_LOOP)
    return plain(optimizer, weights, data, opt_hparams).model_delta

  computations[BASELINE] = all_heads

  def balanced_computation(method, hparams):
    hparams = collections.OrderedDict(
        (k, np.float32(v)) for k, v in hparams.items())

    @tff.tensorflow.computation(weights_type, data_type)
    def balanced_update(weights, data):
      update = balanced.build_client_update(model_fn, method, seed=config.seed)
      return update(optimizer, weights, data, opt_hparams, hparams,
                    np.int32(0)).result.update
    return balanced_update

  for name, (method, hparams) in _BALANCED.items():
    computations[name] = balanced_computation(method, hparams)
  initial = tff.tensorflow.computation(
      lambda: tff.learning.models.ModelWeights.from_model(model_fn()))()
  return computations, initial


def run(bench: harness_lib.Harness) -> None:
  """Writes results['local_step_cost']."""
  s = bench.settings
  fd = bench.workload.data(s.clients)
  cid = fd.client_ids[0]
  one_pass = fd.train_dataset(cid, batch_size=s.batch_size,
                              shuffle_seed=s.seed, include_val=True)
  pass_steps = int(one_pass.reduce(0, lambda n, _: n + 1))
  passes = -(-s.examples_per_client // pass_steps)  # ≥ examples_per_client.
  dataset = one_pass.repeat(passes)
  steps = pass_steps * passes
  bench.log(f'local_step: {", ".join(_BALANCED)} vs {BASELINE}, '
            f'{steps} steps of batch {s.batch_size}')
  computations, initial = _computations(fd, bench.workload.config(1))

  def timed(computation):
    def measure():
      start = time.perf_counter()
      computation(initial, dataset)
      return (time.perf_counter() - start) / steps
    return measure

  times = instruments.interleave(
      {name: timed(c) for name, c in computations.items()},
      repeats=s.repeats, warmup=max(s.warmup, 1))
  section = collections.OrderedDict(
      step_ms=collections.OrderedDict(
          (name, instruments.summarize([t * 1e3 for t in values]))
          for name, values in times.items()),
      over_fedavg_all_heads=collections.OrderedDict(
          (name, instruments.summarize(instruments.ratios(
              times[name], times[BASELINE])))
          for name in _BALANCED),
      steps=steps, compared=_COMPARED)
  bench.results['local_step_cost'] = section
