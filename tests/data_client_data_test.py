"""FederatedData: ClientData, batched client datasets, presence, views."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb.data import client_data
from tff_hgb.data import dataset
from tff_hgb.data import datasets
from tff_hgb.data import partition


@pytest.fixture(scope='module')
def pool():
  return datasets.load('htad')[0]


@pytest.fixture(scope='module')
def case_c(pool):
  return client_data.FederatedData(
      pool, partition.make_partition(pool, 'case_c', num_clients=6, seed=1))


def _collect(ds):
  """A batched or unbatched dataset as numpy arrays, batches concatenated."""
  parts = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]
  if parts and np.ndim(parts[0]['y']) == 0:
    return tf.nest.map_structure(lambda *xs: np.stack(xs), *parts)
  return tf.nest.map_structure(lambda *xs: np.concatenate(xs), *parts)


def _expected(pool, indices, partition_presence):
  """What a client's examples must be: pool values, zero-filled and masked."""
  x, mask = collections.OrderedDict(), collections.OrderedDict()
  for m in pool.modality_names:
    flags = partition_presence[m] * pool.presence[m][indices]
    x[m] = pool.features[m][indices] * flags[:, None]
    mask[m] = flags
  return x, mask, pool.labels[indices]


def test_client_data_elements_follow_the_project_structure(case_c, pool):
  spec = dataset.element_spec(pool.modalities)
  assert case_c.element_spec == spec
  assert case_c.train_client_data.element_type_structure == spec
  assert case_c.val_client_data.element_type_structure == spec
  assert case_c.client_ids == [f'client_{k}' for k in range(6)]
  assert [m.name for m in case_c.modalities] == ['audio', 'accel']


def test_unbatched_train_and_val_are_zero_filled_and_masked(case_c, pool):
  for c in case_c.partition.clients:
    for part, indices, presence in (
        (case_c.train_client_data, c.train_indices, c.train_presence()),
        (case_c.val_client_data, c.val_indices, c.val_presence())):
      got = _collect(part.create_tf_dataset_for_client(c.client_id))
      x, mask, y = _expected(pool, indices, presence)
      np.testing.assert_array_equal(got['y'], y)
      for m in pool.modality_names:
        np.testing.assert_array_equal(got['mask'][m], mask[m])
        np.testing.assert_array_equal(got['x'][m], x[m])
  # The case C skew really produced absent modalities to zero-fill.
  assert any(not c.presence['accel'].all() and c.presence['accel'].any()
             for c in case_c.partition.clients)


def test_client_datasets_batches_shuffles_and_probes(case_c, pool):
  client = case_c.partition.clients[2]
  cid = client.client_id
  data = case_c.client_datasets(cid, batch_size=8, shuffle_seed=3)
  assert list(data) == ['train', 'val', 'probe']
  for ds in data.values():
    assert ds.element_spec['x']['audio'] == tf.TensorSpec([None, 36],
                                                          tf.float32)
    assert ds.element_spec['y'] == tf.TensorSpec([None], tf.int32)
  num_train, num_val = case_c.num_train_examples(cid), case_c.num_val_examples(
      cid)
  assert (num_train, num_val) == (len(client.train_indices),
                                  len(client.val_indices))

  first, second = _collect(data['train']), _collect(data['train'])
  # One pass, not repeated; every example once; reshuffled on each pass.
  assert len(first['y']) == num_train
  assert sorted(first['y'].tolist()) == sorted(
      pool.labels[client.train_indices].tolist())
  assert not np.array_equal(first['x']['audio'], second['x']['audio'])
  # The same seed gives the same first pass.
  again = case_c.client_datasets(cid, batch_size=8, shuffle_seed=3)
  np.testing.assert_array_equal(_collect(again['train'])['x']['audio'],
                                first['x']['audio'])
  assert max(int(b['y'].shape[0]) for b in data['train']) == 8

  val = _collect(data['val'])
  x, _, y = _expected(pool, client.val_indices, client.val_presence())
  np.testing.assert_array_equal(val['y'], y)
  np.testing.assert_array_equal(val['x']['accel'], x['accel'])

  probe = _collect(data['probe'])
  probe_indices = client.train_indices[:num_val]
  x, _, y = _expected(pool, probe_indices,
                      {m: p[:num_val] for m, p in client.presence.items()})
  np.testing.assert_array_equal(probe['y'], y)
  np.testing.assert_array_equal(probe['x']['audio'], x['audio'])


def test_train_dataset_repeats_local_epochs_and_can_include_val(case_c):
  cid = case_c.client_ids[0]
  n_train, n_val = case_c.num_train_examples(cid), case_c.num_val_examples(
      cid)
  three = case_c.train_dataset(cid, batch_size=16, shuffle_seed=0,
                               local_epochs=3)
  assert len(_collect(three)['y']) == 3 * n_train
  with_val = case_c.train_dataset(cid, batch_size=16, shuffle_seed=0,
                                  include_val=True)
  assert len(_collect(with_val)['y']) == n_train + n_val
  with pytest.raises(dataset.DataError, match='batch_size'):
    case_c.train_dataset(cid, batch_size=0, shuffle_seed=0)
  with pytest.raises(dataset.DataError, match='local_epochs'):
    case_c.client_datasets(cid, batch_size=4, shuffle_seed=0, local_epochs=0)


def test_dataset_computation_runs_in_tff(case_c):
  cid = case_c.client_ids[1]
  element_type = tff.types.tensorflow_to_type(case_c.element_spec)

  @tff.tensorflow.computation(tff.SequenceType(element_type))
  def count(examples):
    return examples.reduce(np.int32(0), lambda n, _: n + 1)

  served = case_c.train_client_data.dataset_computation(cid)
  assert sum(1 for _ in served) == case_c.num_train_examples(cid)
  assert count(case_c.train_client_data.create_tf_dataset_for_client(cid)) == (
      case_c.num_train_examples(cid))


def test_uni_modal_keeps_holders_and_present_examples(case_c, pool):
  view = case_c.uni_modal('accel')
  holders = [c.client_id for c in case_c.partition.clients
             if 'accel' in c.modalities]
  assert view.client_ids == holders
  assert [m.name for m in view.modalities] == ['accel']
  for cid in view.client_ids:
    original = case_c.partition.client(cid)
    assert view.num_train_examples(cid) == int(
        original.train_presence()['accel'].sum())
    examples = _collect(
        view.train_client_data.create_tf_dataset_for_client(cid))
    assert list(examples['x']) == ['accel']
    assert examples['mask']['accel'].all()
  with pytest.raises(dataset.DataError, match="no modality 'video'"):
    case_c.uni_modal('video')


def test_errors_name_client_and_mismatch(case_c, pool):
  with pytest.raises(dataset.DataError, match="Unknown client 'nobody'"):
    case_c.client_datasets('nobody', batch_size=4, shuffle_seed=0)
  other = datasets.load('basicmotions')[0]
  with pytest.raises(dataset.DataError, match='basicmotions-train has 64'):
    client_data.FederatedData(other, case_c.partition)


def test_natural_clients_of_watch(pool):
  del pool
  train, _ = datasets.load('watch')
  data = client_data.FederatedData(
      train, partition.make_partition(train, 'natural'))
  assert data.client_ids[0] == 'subject_01'
  batch = next(iter(data.client_datasets('subject_01', batch_size=4,
                                         shuffle_seed=0)['train']))
  assert batch['x']['gyro'].shape == (4, 100, 3)
  assert batch['mask']['gyro'].dtype == tf.float32
