"""The audit's controls (issue 16): FedAvg on T_k only, and OGR measured on a
server-held shared validation set with a whole-T_k probe.

`fedavg_tk` must be TFF's FedAvg on exactly the clients' training parts;
`validation_source='shared'` must feed OGR the shared set (so it moves the
client weights C-GB gives, and equals the local estimate when the shared set
is every client's V_k), `full_probe` the whole T_k; and the harness holds the
shared set out of the training pool once, naming its flag when that fails.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from tff_hgb import algorithms
from tff_hgb.algorithms import registry
from tff_hgb import models
from tff_hgb.data import client_data
from tff_hgb.data import dataset
from tff_hgb.data import datasets
from tff_hgb.data import partition as partition_lib
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import results

CONFIG = algorithms.AlgorithmConfig(
    client_learning_rate=0.1, batch_size=8,
    model=models.ModelConfig(feature_dim=8, hidden_units=16, conv_filters=4))
SHARED = dataclasses.replace(CONFIG, validation_source='shared')


@pytest.fixture(scope='module')
def pool():
  return datasets.load('basicmotions', seed=0)[0]


@pytest.fixture(scope='module')
def held_out_pool(pool):
  """(clients' pool, server-held shared set), as the harness splits them."""
  return datasets.hold_out_test(pool, test_fraction=0.3, seed=1)


@pytest.fixture(scope='module')
def federated(held_out_pool):
  clients_pool, shared = held_out_pool
  parts = partition_lib.make_partition(clients_pool, 'mixed_b', num_clients=3,
                                       alpha=None, seed=0)
  return client_data.FederatedData(clients_pool, parts,
                                   shared_validation=shared)


def _numpy(structure):
  return tf.nest.map_structure(lambda t: np.asarray(t), structure)


def _held_out(algorithm, cid):
  return _numpy(algorithm.client_data(cid, 0)['held_out'].get_single_element())


def _round(algorithm, state=None):
  process = algorithm.process
  state = process.initialize() if state is None else state
  data = [algorithm.client_data(cid, 0) for cid in algorithm.client_ids]
  return process.next(state, data)


def _shares(output):
  """The largest and smallest client share of an HGB round (OGR weights)."""
  metrics = output.metrics['client_work']['hgb']
  return np.array([metrics['client_weight/max_share'],
                   metrics['client_weight/min_share']])


def _flat_weights(algorithm, state):
  return np.concatenate([np.ravel(w) for w in
                         algorithm.process.get_model_weights(state).trainable])


# ---------------------------------------------------------------------------
# fedavg_tk.
# ---------------------------------------------------------------------------


def test_fedavg_tk_is_fedavg_on_the_training_parts(federated):
  tk = algorithms.build_algorithm('fedavg_tk', federated, CONFIG)
  full = algorithms.build_algorithm('fedavg', federated, CONFIG)
  state = full.process.initialize()
  # TFF's FedAvg (the registry's `fedavg` process) on each client's T_k, in
  # the order the registry shuffles it.
  training_parts = [
      federated.train_dataset(
          cid, batch_size=CONFIG.batch_size, local_epochs=CONFIG.local_epochs,
          shuffle_seed=registry._shuffle_seed(CONFIG, i, 0))  # pylint: disable=protected-access
      for i, cid in enumerate(federated.client_ids)]
  expected = full.process.next(state, training_parts)
  got = tk.process.next(tk.process.initialize(),
                        [tk.client_data(cid, 0) for cid in tk.client_ids])
  np.testing.assert_allclose(_flat_weights(tk, got.state),
                             _flat_weights(full, expected.state), atol=1e-6)
  trained = got.metrics['client_work']['train']['num_examples']
  assert trained == sum(federated.num_train_examples(c)
                        for c in federated.client_ids)
  # fedavg trains on T_k ∪ V_k: a different model.
  on_everything = full.process.next(
      state, [full.client_data(cid, 0) for cid in full.client_ids])
  assert np.max(np.abs(_flat_weights(full, on_everything.state) -
                       _flat_weights(tk, got.state))) > 1e-4


# ---------------------------------------------------------------------------
# The shared validation set and the whole-T_k probe, on every HGB mode.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('name', algorithms.HGB_MODES)
def test_every_hgb_mode_sends_the_server_held_set_and_the_whole_probe(
    federated, held_out_pool, name):
  _, shared = held_out_pool
  config = dataclasses.replace(SHARED, full_probe=True)
  algorithm = algorithms.build_algorithm(name, federated, config)
  for cid in federated.client_ids:
    held_out = _held_out(algorithm, cid)
    np.testing.assert_array_equal(held_out['val']['y'], shared.labels)
    held = federated.client_modalities(cid)
    for m in shared.modality_names:
      np.testing.assert_array_equal(held_out['val']['mask'][m],
                                    shared.presence[m] * (m in held))
    training = _numpy(next(iter(
        federated.train_client_data.create_tf_dataset_for_client(cid).batch(
            10_000))))
    tf.nest.map_structure(np.testing.assert_array_equal, held_out['probe'],
                          training)
  # The default is today's: V_k and the first |V_k| training examples.
  local = algorithms.build_algorithm(name, federated, CONFIG)
  cid = federated.client_ids[0]
  held_out = _held_out(local, cid)
  assert len(held_out['val']['y']) == federated.num_val_examples(cid)
  assert len(held_out['probe']['y']) == federated.num_val_examples(cid)


@pytest.mark.parametrize('name', ['c_gb', 'hgb_paper'])
def test_shared_source_and_whole_probe_change_the_ogr_client_weights(
    federated, name):

  def shares(config):
    output = _round(algorithms.build_algorithm(name, federated, config))
    return _shares(output)

  local = shares(CONFIG)
  shared = shares(SHARED)
  whole_probe = shares(dataclasses.replace(CONFIG, full_probe=True))
  assert np.max(np.abs(shared - local)) > 1e-3
  assert np.max(np.abs(whole_probe - local)) > 1e-3


def _twin_partition(pool):
  """A pool of two copies of `pool`'s first examples, and two clients whose
  local validation parts hold the same examples (one copy each), with the
  modalities of Mixed-B's first and third clients."""
  n = 24
  base = pool.subset(np.arange(n))
  twins = dataset.MultiModalDataset(
      name='twins', modalities=list(pool.modalities),
      features={m: np.concatenate([base.features[m]] * 2)
                for m in pool.modality_names},
      labels=np.concatenate([base.labels] * 2),
      class_names=list(pool.class_names))
  val = np.arange(6)
  clients = []
  for k, held in enumerate([tuple(pool.modality_names[:1]),
                            tuple(pool.modality_names)]):
    offset = k * n
    train = offset + np.arange(6, n)[::-1] if k else offset + np.arange(6, n)
    clients.append(partition_lib.ClientPartition(
        client_id=f'client_{k}', train_indices=train,
        val_indices=offset + val, modalities=held,
        presence={m: np.full(n, float(m in held), np.float32)
                  for m in pool.modality_names}))
  parts = partition_lib.Partition(
      scheme='twins', clients=tuple(clients), seed=0,
      modality_names=tuple(pool.modality_names), num_examples=2 * n)
  return twins, parts, base.subset(val, name='twins-shared')


@pytest.mark.parametrize('name', ['c_gb', 'hgb_paper'])
def test_shared_set_equal_to_every_clients_val_gives_the_local_round(pool,
                                                                     name):
  twins, parts, every_val = _twin_partition(pool)
  other = pool.subset(np.arange(40, 52), name='other-shared')
  results = {}
  for label, shared_set, config in (('local', every_val, CONFIG),
                                    ('same', every_val, SHARED),
                                    ('other', other, SHARED)):
    federated = client_data.FederatedData(twins, parts,
                                          shared_validation=shared_set)
    algorithm = algorithms.build_algorithm(name, federated, config)
    output = _round(algorithm)
    results[label] = (_flat_weights(algorithm, output.state), _shares(output))
  for local, same in zip(results['local'], results['same']):
    np.testing.assert_allclose(same, local, rtol=0, atol=1e-6)
  assert np.max(np.abs(results['other'][1] - results['local'][1])) > 1e-3


def test_uni_modal_view_keeps_the_server_held_set(federated, held_out_pool):
  _, shared = held_out_pool
  modality = shared.modality_names[-1]
  view = federated.uni_modal(modality)
  assert view.num_shared_val_examples == len(shared)
  assert view.shared_validation_set.modality_names == [modality]


def test_a_server_held_set_of_other_data_is_named(federated, held_out_pool):
  clients_pool, shared = held_out_pool
  with pytest.raises(dataset.DataError, match='shared validation set'):
    client_data.FederatedData(
        clients_pool, federated.partition,
        shared_validation=shared.with_modalities(shared.modality_names[:1]))


# ---------------------------------------------------------------------------
# The harness: --shared_validation_fraction.
# ---------------------------------------------------------------------------


def _config(**values):
  values = dict(dict(dataset='basicmotions', partition='mixed_b',
                     num_clients=3, algorithm='c_gb'), **values)
  return config_lib.ExperimentConfig().replace(**values)


def test_harness_holds_the_shared_set_out_of_the_training_pool():
  cache = caches.DataCache()
  plain = cache.get(_config())
  assert plain.federated_data.shared_validation_set is None
  data = cache.get(_config(shared_validation_fraction=0.25))
  shared = data.federated_data.shared_validation_set
  whole = len(plain.train_pool)
  assert len(shared) + len(data.train_pool) == whole
  assert abs(len(shared) - 0.25 * whole) <= data.train_pool.num_classes
  # Stratified: every class is in it.
  assert set(shared.labels) == set(range(plain.train_pool.num_classes))
  # No client trains on or validates with a shared example: the clients'
  # pool is the rest (compared by content, since indices are renumbered).
  rows = lambda ds: {tuple(np.concatenate(  # pylint: disable=g-long-lambda
      [ds.features[m][i].ravel() for m in ds.modality_names]))
                     for i in range(len(ds))}
  assert not rows(shared) & rows(data.train_pool)
  assert rows(shared) | rows(data.train_pool) == rows(plain.train_pool)
  # Cached: the same objects on a second request.
  assert cache.get(_config(shared_validation_fraction=0.25)) is data
  assert 'shared validation set' in data.describe()


@pytest.mark.parametrize('fraction, message', [
    (1e-4, 'holds out no example'), (0.95, 'leaves 4 training examples'),
    (1.5, 'must lie in')])
def test_bad_shared_fraction_names_its_flag(fraction, message):
  # Six clients fit the 64 examples, not the 4 a 0.95 hold-out leaves.
  caches.DataCache().get(_config(num_clients=6))
  with pytest.raises(config_lib.UsageError,
                     match=f'^--shared_validation_fraction: .*{message}'):
    caches.DataCache().get(_config(num_clients=6,
                                   shared_validation_fraction=fraction))


def test_a_run_recorded_before_the_flag_resumes_at_its_default(tmp_path):
  # flags.json of a run from before --shared_validation_fraction existed.
  config = _config().replace(output_dir=str(tmp_path / 'run'))
  old = config.to_dict()
  del old['shared_validation_fraction']
  os.makedirs(config.run.output_dir)
  results.atomic_write_json(
      os.path.join(config.run.output_dir, results.FLAGS_JSON), old)
  results.check_output_dir(config.run.output_dir, config.to_dict(),
                           resume=True)
  other = config.replace(shared_validation_fraction=0.25)
  with pytest.raises(config_lib.UsageError,
                     match='^--resume: .*shared_validation_fraction'):
    results.check_output_dir(config.run.output_dir, other.to_dict(),
                             resume=True)
