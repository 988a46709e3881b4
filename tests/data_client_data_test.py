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


def _held_out(data):
  """HGB client data's held-out sets: OrderedDict(probe=, val=) of numpy."""
  return tf.nest.map_structure(lambda t: t.numpy(),
                               data['held_out'].get_single_element())


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
  assert list(data) == ['train', 'held_out']
  assert data['train'].element_spec['x']['audio'] == tf.TensorSpec(
      [None, 36], tf.float32)
  assert data['train'].element_spec['y'] == tf.TensorSpec([None], tf.int32)
  # One element: the probe and the validation set, each one whole batch.
  assert data['held_out'].cardinality() == 1
  for part in ('probe', 'val'):
    spec = data['held_out'].element_spec[part]
    assert spec['x']['audio'].shape[1:] == [36]
    assert spec['y'].dtype == tf.int32
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

  held_out = _held_out(data)
  val = held_out['val']
  x, _, y = _expected(pool, client.val_indices, client.val_presence())
  np.testing.assert_array_equal(val['y'], y)
  np.testing.assert_array_equal(val['x']['accel'], x['accel'])

  probe = held_out['probe']
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


# ---- The shared validation set (ALGORITHM.md §5b, validation = 'shared'). ----


@pytest.fixture(scope='module')
def mixed_b(pool):
  # Clients hold {audio}, {accel}, {audio, accel} in turn; 114 local val
  # examples in all, covering all 7 labels.
  return client_data.FederatedData(
      pool, partition.make_partition(pool, 'mixed_b', num_clients=6, seed=1),
      shared_validation_examples=40, shared_validation_seed=5)


def _local_val_union(data):
  return np.concatenate([c.val_indices for c in data.partition.clients])


def _shared_val(data, cid, batch_size=16):
  return _held_out(data.client_datasets(
      cid, batch_size=batch_size, shuffle_seed=0,
      validation=client_data.SHARED_VALIDATION))['val']


def test_shared_val_is_the_same_examples_masked_per_client(mixed_b, pool):
  assert client_data.VALIDATION_SOURCES == ('local', 'shared')
  by_modalities = {c.modalities: c.client_id for c in mixed_b.partition.clients}
  audio_only = by_modalities[('audio',)]
  accel_only = by_modalities[('accel',)]
  both = by_modalities[('audio', 'accel')]
  assert mixed_b.num_shared_val_examples == 40
  indices = mixed_b.shared_validation_indices
  audio, accel, full = (_shared_val(mixed_b, audio_only),
                        _shared_val(mixed_b, accel_only),
                        _shared_val(mixed_b, both))
  for got in (audio, accel, full):
    assert len(got['y']) == 40
    np.testing.assert_array_equal(got['y'], pool.labels[indices])
  # The same features for a modality both clients hold: the pool's own.
  np.testing.assert_array_equal(audio['x']['audio'],
                                pool.features['audio'][indices])
  np.testing.assert_array_equal(full['x']['audio'], audio['x']['audio'])
  np.testing.assert_array_equal(full['x']['accel'], accel['x']['accel'])
  assert full['mask']['audio'].all() and full['mask']['accel'].all()
  # A modality the client lacks: zero-filled, mask 0.
  assert not audio['mask']['accel'].any() and not audio['x']['accel'].any()
  assert not accel['mask']['audio'].any() and not accel['x']['audio'].any()
  assert audio['mask']['audio'].all()
  # train and probe are unchanged; val differs from the local one.
  local = mixed_b.client_datasets(both, batch_size=16, shuffle_seed=0)
  shared = mixed_b.client_datasets(both, batch_size=16, shuffle_seed=0,
                                   validation='shared')
  np.testing.assert_array_equal(_collect(shared['train'])['y'],
                                _collect(local['train'])['y'])
  np.testing.assert_array_equal(_held_out(shared)['probe']['y'],
                                _held_out(local)['probe']['y'])
  assert len(_held_out(local)['val']['y']) == mixed_b.num_val_examples(both)
  # Its size is min(N, total local validation examples).
  everything = client_data.FederatedData(
      pool, mixed_b.partition, shared_validation_examples=10_000)
  assert everything.num_shared_val_examples == len(_local_val_union(mixed_b))
  assert len(_shared_val(everything, both)['y']) == len(
      _local_val_union(mixed_b))


def test_shared_val_is_held_out_stratified_and_seeded(mixed_b, pool):
  indices = mixed_b.shared_validation_indices
  union = _local_val_union(mixed_b)
  training = np.concatenate([c.train_indices
                             for c in mixed_b.partition.clients])
  assert len(np.unique(indices)) == len(indices)
  assert np.isin(indices, union).all()
  assert not np.isin(indices, training).any()
  # Stratified: every label of the union appears, in proportion to its count.
  union_counts = np.bincount(pool.labels[union], minlength=pool.num_classes)
  counts = np.bincount(pool.labels[indices], minlength=pool.num_classes)
  assert set(np.flatnonzero(counts)) == set(np.flatnonzero(union_counts))
  assert (np.abs(counts - 40 * union_counts / len(union)) <= 1.5).all()
  seven = client_data.FederatedData(pool, mixed_b.partition,
                                    shared_validation_examples=7)
  assert sorted(pool.labels[seven.shared_validation_indices].tolist()) == list(
      range(7))
  # Deterministic for a seed, different for another.
  again = client_data.FederatedData(pool, mixed_b.partition,
                                    shared_validation_examples=40,
                                    shared_validation_seed=5)
  np.testing.assert_array_equal(again.shared_validation_indices, indices)
  np.testing.assert_array_equal(
      _shared_val(again, again.client_ids[0])['x']['audio'],
      _shared_val(mixed_b, mixed_b.client_ids[0])['x']['audio'])
  other = client_data.FederatedData(pool, mixed_b.partition,
                                    shared_validation_examples=40,
                                    shared_validation_seed=6)
  assert not np.array_equal(other.shared_validation_indices, indices)
  np.testing.assert_array_equal(
      np.bincount(pool.labels[other.shared_validation_indices],
                  minlength=pool.num_classes), counts)


def test_shared_val_has_the_local_element_spec(mixed_b):
  for cid in mixed_b.client_ids[:3]:
    local = mixed_b.client_datasets(cid, batch_size=8, shuffle_seed=0)
    shared = mixed_b.client_datasets(cid, batch_size=8, shuffle_seed=0,
                                     validation=client_data.SHARED_VALIDATION)
    assert list(shared) == list(local)
    assert shared['train'].element_spec == local['train'].element_spec

    def spec(data):  # Row counts differ; the rest must not.
      return tf.nest.map_structure(lambda s: (s.shape[1:], s.dtype),
                                   data['held_out'].element_spec)

    assert spec(shared) == spec(local)


def test_shared_val_settings_survive_uni_modal_views(mixed_b, pool):
  view = mixed_b.uni_modal('accel')
  assert (view.shared_validation_examples,
          view.shared_validation_seed) == (40, 5)
  indices = view.shared_validation_indices
  assert np.isin(indices, _local_val_union(view)).all()
  got = _shared_val(view, view.client_ids[0])
  assert list(got['x']) == ['accel'] and got['mask']['accel'].all()
  np.testing.assert_array_equal(got['x']['accel'],
                                pool.features['accel'][indices])


def test_shared_val_errors_name_the_problem(mixed_b, pool):
  cid = mixed_b.client_ids[0]
  with pytest.raises(ValueError, match=r"'global'.*'local', 'shared'"):
    mixed_b.client_datasets(cid, batch_size=4, shuffle_seed=0,
                            validation='global')
  with pytest.raises(dataset.DataError, match='shared_validation_examples'):
    client_data.FederatedData(pool, mixed_b.partition,
                              shared_validation_examples=0)
  with pytest.raises(dataset.DataError, match='shared_validation_seed'):
    client_data.FederatedData(pool, mixed_b.partition,
                              shared_validation_seed=-1)


def test_held_out_dataset_from_batched_datasets_and_arrays():
  examples = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=collections.OrderedDict(a=np.arange(10, dtype=np.float32)[:, None]),
      y=np.arange(10, dtype=np.int32)))
  held_out = client_data.held_out_dataset(
      probe=examples.take(5).batch(2),  # Batches of 2, 2, 1 → one of 5.
      val=examples.skip(10).batch(4))   # Empty → 0 rows, same structure.
  assert held_out.cardinality() == 1
  element = tf.nest.map_structure(lambda t: t.numpy(),
                                  held_out.get_single_element())
  np.testing.assert_array_equal(element['probe']['y'], np.arange(5))
  assert element['probe']['x']['a'].shape == (5, 1)
  assert element['val']['x']['a'].shape == (0, 1)
  assert element['val']['y'].dtype == np.int32
  # A batch of arrays goes in as it is.
  arrays = client_data.held_out_dataset(probe=element['probe'],
                                        val=element['probe'])
  np.testing.assert_array_equal(
      arrays.get_single_element()['val']['y'].numpy(), np.arange(5))
