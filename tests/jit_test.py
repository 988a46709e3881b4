"""--jit: XLA-compiled client steps train as the uncompiled ones, both runtimes.

The registry's `AlgorithmConfig.jit` compiles HGB's local step and snapshots
(`client_work`) and the baselines' forward pass (`models.MultiModalModel`).
"""

import dataclasses

import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.computation import computation_impl

from tff_hgb import algorithms
from tff_hgb import models
from tff_hgb import runtime
from tff_hgb.data import client_data
from tff_hgb.data import datasets
from tff_hgb.data import partition

CONFIG = algorithms.AlgorithmConfig(
    client_learning_rate=0.05, batch_size=16,
    model=models.ModelConfig(feature_dim=8, hidden_units=16, conv_filters=4))
ROUNDS = 3


@pytest.fixture(scope='module')
def basicmotions():
  train_pool, _ = datasets.load('basicmotions', seed=0)
  parts = partition.make_partition(train_pool, 'mixed_b', num_clients=3,
                                   alpha=None, seed=0)
  return client_data.FederatedData(train_pool, parts)


@pytest.fixture
def context(request):
  """'tff' (the session's worker) or 'inprocess', restored afterwards."""
  stack = tff.framework.get_context_stack()
  saved = stack.current
  inprocess = None
  if request.param == 'inprocess':
    inprocess = runtime.set_inprocess_context('cpu')
  yield request.param
  stack.set_default_context(saved)
  if inprocess is not None:
    inprocess.close()


def _serialized_next(algorithm) -> bytes:
  return computation_impl.ConcreteComputation.get_proto(
      algorithm.process.next).SerializeToString()


def _trained(algorithm, rounds):
  state = algorithm.process.initialize()
  initial = algorithm.process.get_model_weights(state).trainable
  for round_num in range(rounds):
    state = algorithm.process.next(state, [
        algorithm.client_data(cid, round_num)
        for cid in algorithm.client_ids]).state
  return initial, algorithm.process.get_model_weights(state).trainable


@pytest.mark.parametrize('context', ['inprocess', 'tff'], indirect=True)
@pytest.mark.parametrize('name', ['hgb', 'fedavg'])
def test_compiled_steps_train_as_uncompiled_ones(basicmotions, context, name):
  del context  # Only selects the runtime.
  weights = {}
  for jit in (False, True):
    algorithm = algorithms.build_algorithm(
        name, basicmotions, dataclasses.replace(CONFIG, jit=jit))
    # The switch reaches the graph: XLA functions only when asked for.
    assert (b'_XlaMustCompile' in _serialized_next(algorithm)) == jit
    initial, weights[jit] = _trained(algorithm, ROUNDS)
  assert max(np.max(np.abs(a - b))
             for a, b in zip(weights[True], initial)) > 1e-3
  for compiled, plain in zip(weights[True], weights[False]):
    np.testing.assert_allclose(compiled, plain, rtol=0, atol=1e-4)


def test_jit_is_off_by_default():
  assert not algorithms.AlgorithmConfig().jit
