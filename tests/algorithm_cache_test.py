"""One built process serves a method's seeds and data sets, bit for bit.

`caches.AlgorithmCache` reuses a process across seeds and partitions
(`registry.process_key`); each run must still start from, and train to, exactly
what a process built for its own seed gives.
"""

import numpy as np
import pytest
import tensorflow as tf

from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import loop


def _config(algorithm, seed, **overrides):
  return config_lib.ExperimentConfig.from_dict(dict(
      dict(dataset='htad', partition='mixed_b', num_clients=4, rounds=2,
           batch_size=16, eval_every=2, seed=seed, algorithm=algorithm,
           client_learning_rate=0.2, progress=False, output_dir='/unused'),
      **overrides))


def _leaves(state):
  return [np.asarray(leaf) for leaf in tf.nest.flatten(state)]


def _assert_same(got, want):
  got, want = _leaves(got), _leaves(want)
  assert len(got) == len(want)
  for i, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_array_equal(g, w, err_msg=f'state leaf {i}')


@pytest.fixture(scope='module')
def data_cache():
  return caches.DataCache()


@pytest.mark.parametrize('algorithm', ['fedavg', 'hgb'])
def test_a_reused_process_starts_and_trains_as_its_own_seeds(algorithm,
                                                             data_cache):
  shared = caches.AlgorithmCache()
  first = _config(algorithm, seed=0)
  shared.get(first, data_cache.get(first))  # Built with seed 0.
  # Seed 3: another partition, another learning rate, the same process.
  config = _config(algorithm, seed=3, client_learning_rate=0.4)
  data = data_cache.get(config)
  reused = shared.get(config, data)
  assert shared.builds == 1
  own = caches.AlgorithmCache().get(config, data)
  assert reused.process is not own.process
  start = caches.initial_state(reused, config)
  _assert_same(start, caches.initial_state(own, config))
  # Seed 0's weights would differ: the test can tell.
  assert any(not np.array_equal(a, b) for a, b in zip(
      _leaves(start), _leaves(caches.initial_state(
          shared.get(first, data_cache.get(first)), first))))
  state, _ = loop.train(config, data, reused)
  own_state, _ = loop.train(config, data, own)
  _assert_same(state, own_state)


def test_seeded_client_work_gets_a_process_per_seed(data_cache):
  shared = caches.AlgorithmCache()
  for seed in (0, 1):
    config = _config('ogm_ge', seed=seed)
    shared.get(config, data_cache.get(config))
  assert shared.builds == 2
  for seed in (0, 1):  # Cached per seed.
    config = _config('ogm_ge', seed=seed)
    shared.get(config, data_cache.get(config))
  assert shared.builds == 2
