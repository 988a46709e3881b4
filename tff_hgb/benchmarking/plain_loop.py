"""The floor of an HGB round: its local procedure in a plain loop.

`PlainHGBLoop` is the loop; `PlainLoopChild` runs it in a child.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from typing import Any, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb import client_work
from tff_hgb import hgb
from tff_hgb import hgb_config
from tff_hgb import models
from tff_hgb.benchmarking import settings as settings_lib
from tff_hgb.benchmarking import workload as workload_lib

# The repository root, where `python -m experiments.benchmark` starts the child:
# experiments/ sits beside tff_hgb/.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class PlainHGBLoop:
  """One HGB round without TFF's runtime: the floor a runtime can approach.

  The same local procedure as the TFF process (`client_work.
  build_hgb_client_update`, one tf.function traced once), called client after
  client in this process; the clients' deltas averaged with their weights in a
  tf.function; the server step w ← w − lr·Δ̄ (server SGD); the prior z̄ ← the
  n_k-weighted mean of the z^k. Metrics aggregation is not done.

  Build and run it in a process that builds no TFF process (or any Keras model
  inside a `tf.Graph`) afterwards: Keras invalidates models built eagerly once
  a model is built inside a graph, which is what TFF does when it builds a
  process. The benchmark runs it in a child process for that reason.
  """

  def __init__(self, model_fn, client_optimizer, *, blend: str, weighting: str,
               hparams: hgb_config.HGBHParams, server_learning_rate: float):
    self._update = client_work.build_hgb_client_update(
        model_fn, blend=blend, weighting=weighting)
    self._optimizer = client_optimizer
    self._optimizer_hparams = client_optimizer.get_hparams(
        client_optimizer.initialize(tf.TensorSpec((), tf.float32)))
    self._hparams = {k: tf.constant(v) for k, v in hparams.as_state().items()}
    model = model_fn()
    self.weights = tff.learning.models.ModelWeights(
        trainable=[tf.Variable(v) for v in model.trainable_variables],
        non_trainable=[tf.Variable(v) for v in model.non_trainable_variables])
    self.prior = tf.Variable(tf.fill([len(model.heads)],
                                     1.0 / len(model.heads)))
    self._server_learning_rate = server_learning_rate
    self.rounds = 0

    @tf.function
    def accumulate(totals, weight_total, z_sum, z_weight, result, stats):
      weight = result.update_weight
      totals = [t + weight * u for t, u in zip(totals, result.update)]
      return (totals, weight_total + weight, z_sum + stats['z_sum'],
              z_weight + stats['z_weight'])

    @tf.function
    def apply(totals, weight_total, z_sum, z_weight):
      for variable, total in zip(self.weights.trainable, totals):
        variable.assign_sub(self._server_learning_rate *
                            tf.math.divide_no_nan(total, weight_total))
      self.prior.assign(tf.where(z_weight > 0, z_sum / tf.maximum(
          z_weight, 1e-30), self.prior))

    self._accumulate = accumulate
    self._apply = apply

  def round(self, client_datasets: Sequence[Any]) -> None:
    weights = tff.learning.models.ModelWeights(
        trainable=[v.read_value() for v in self.weights.trainable],
        non_trainable=[v.read_value() for v in self.weights.non_trainable])
    totals = [tf.zeros_like(v) for v in self.weights.trainable]
    weight_total = tf.constant(0.0)
    z_sum = tf.zeros_like(self.prior)
    z_weight = tf.constant(0.0)
    for data in client_datasets:
      result, _, stats = self._update(self._optimizer, weights, self.prior,
                                      self._hparams, self._optimizer_hparams,
                                      data)
      totals, weight_total, z_sum, z_weight = self._accumulate(
          totals, weight_total, z_sum, z_weight, result, stats)
    self._apply(totals, weight_total, z_sum, z_weight)
    self.rounds += 1

  @property
  def client_update_traces(self) -> int:
    return self._update.experimental_get_tracing_count()


class PlainLoopChild:
  """The plain loop in a child process, driven one round at a time.

  The child (`--plain_loop_server=E`, same size flags) builds the same data and
  a `PlainHGBLoop` (`serve`), then answers each 'round' line on its stdin
  with one 'PLAIN <seconds> <traces>' line: the time of one round (client
  datasets built first, untimed).
  """

  def __init__(self, settings: settings_lib.Settings, local_epochs: int):
    args = [sys.executable, '-m', 'experiments.benchmark',
            f'--plain_loop_server={local_epochs}',
            f'--clients={settings.clients}',
            f'--examples_per_client={settings.examples_per_client}',
            f'--batch_size={settings.batch_size}',
            f'--wide_dim={settings.wide_dim}', f'--seed={settings.seed}']
    if settings.quick:
      args.append('--quick')
    env = dict(os.environ)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    env['PYTHONPATH'] = os.pathsep.join(
        [_ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    self._process = subprocess.Popen(  # pylint: disable=consider-using-with
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        text=True, cwd=_ROOT)
    self.traces = None
    self._expect('READY')

  def _expect(self, tag: str) -> list[str]:
    while True:
      line = self._process.stdout.readline()
      if not line:
        raise RuntimeError(f'the plain-loop child exited (code '
                           f'{self._process.wait()}) before answering {tag}.')
      if line.startswith(f'PLAIN {tag}'):
        return line.split()[2:]

  def round(self) -> float:
    self._process.stdin.write('round\n')
    self._process.stdin.flush()
    seconds, traces = self._expect('ROUND')
    self.traces = int(traces)
    return float(seconds)

  def close(self) -> None:
    if self._process.poll() is None:
      try:
        self._process.stdin.write('quit\n')
        self._process.stdin.flush()
        self._process.wait(timeout=60)
      except Exception:  # pylint: disable=broad-except
        self._process.kill()
        self._process.wait()


def serve(settings: settings_lib.Settings, local_epochs: int) -> None:
  """The child side of `PlainLoopChild` (runs no TFF computation)."""
  workload = workload_lib.Workload(settings)
  fd = workload.data(settings.clients)
  ids = fd.client_ids[:settings.clients]
  config = workload.config(local_epochs)
  blend, weighting = hgb.MODES['hgb']
  loop = PlainHGBLoop(
      models.build_model_fn(fd.modalities, fd.num_classes,
                            config=config.model),
      tff.learning.optimizers.build_sgdm(
          learning_rate=config.client_learning_rate),
      blend=blend, weighting=weighting,
      hparams=dataclasses.replace(hgb.DEFAULT_HGB_HPARAMS,
                                  local_epochs=local_epochs),
      server_learning_rate=config.server_learning_rate)
  data_fn = workload.hgb_data_fn(fd)
  print('PLAIN READY', flush=True)
  round_num = 0
  for line in sys.stdin:
    command = line.strip()
    if command == 'quit':
      break
    if command != 'round':
      continue
    data = [data_fn(cid, round_num) for cid in ids]
    start = time.perf_counter()
    loop.round(data)
    seconds = time.perf_counter() - start
    round_num += 1
    print(f'PLAIN ROUND {seconds:.6f} {loop.client_update_traces}',
          flush=True)

