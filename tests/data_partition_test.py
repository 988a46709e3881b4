"""Partitioners of ALGORITHM.md §6: defining properties, seeding, errors."""

import math

import numpy as np
import pytest

from tff_hgb.data import dataset
from tff_hgb.data import datasets
from tff_hgb.data import partition
from tff_hgb.data import synthetic


@pytest.fixture(scope='module')
def htad():
  return datasets.load('htad')[0]


@pytest.fixture(scope='module')
def three_modalities():
  return synthetic.make_synthetic(
      num_examples=300, num_classes=3,
      modalities=tuple(synthetic.SyntheticModality(n, dim=2)
                       for n in ('rgb', 'audio', 'flow')),
      seed=0)


def _assert_exact_cover(p, ds):
  everything = np.concatenate([c.indices for c in p.clients])
  assert sorted(everything.tolist()) == list(range(len(ds)))


@pytest.mark.parametrize('scheme', [s for s in partition.SCHEMES
                                    if s != partition.NATURAL])
def test_every_example_in_exactly_one_client(htad, scheme):
  p = partition.make_partition(htad, scheme, num_clients=9, seed=1)
  _assert_exact_cover(p, htad)
  assert len(p.clients) == 9
  for c in p.clients:
    n = c.num_examples
    assert len(c.val_indices) == min(max(math.ceil(0.1 * n), 4), n - 1)
    assert len(c.train_indices) >= 1
    for m in htad.modality_names:  # presence aligned with train + val
      assert c.presence[m].shape == (n,)


@pytest.mark.parametrize('scheme', partition.SCHEMES[:-1])
def test_same_seed_same_partition(htad, scheme):
  a = partition.make_partition(htad, scheme, seed=7)
  b = partition.make_partition(htad, scheme, seed=7)
  c = partition.make_partition(htad, scheme, seed=8)
  assert a.to_json() == b.to_json()
  assert a.to_json() != c.to_json()


def test_iid_and_case_a_give_every_client_every_modality(htad):
  for scheme in ('iid', 'case_a'):
    p = partition.make_partition(htad, scheme, num_clients=5)
    for c in p.clients:
      assert c.modalities == ('audio', 'accel')
      assert all(flags.all() for flags in c.presence.values())
  sizes = [c.num_examples for c in
           partition.make_partition(htad, 'iid', num_clients=5).clients]
  assert max(sizes) - min(sizes) <= 1


def _top_two_label_share(ds, client):
  counts = np.sort(np.bincount(ds.labels[client.indices]))
  return counts[-2:].sum() / counts.sum()


def test_case_a_small_alpha_skews_labels(htad):
  skewed = partition.make_partition(htad, 'case_a', num_clients=10,
                                    alpha=0.1)
  mild = partition.make_partition(htad, 'case_a', num_clients=10,
                                  alpha=100.0)
  skewed_shares = [_top_two_label_share(htad, c) for c in skewed.clients]
  mild_shares = [_top_two_label_share(htad, c) for c in mild.clients]
  # Most clients are dominated by at most two of the seven labels...
  assert np.mean(np.array(skewed_shares) > 0.8) >= 0.7
  # ...which a near-uniform Dirichlet does not do.
  assert max(mild_shares) < 0.6


def test_1m_b_every_client_one_modality_every_modality_held(
    htad, three_modalities):
  for ds in (htad, three_modalities):
    p = partition.make_partition(ds, '1m_b', num_clients=7)
    assert all(len(c.modalities) == 1 for c in p.clients)
    assert {c.modalities[0] for c in p.clients} == set(ds.modality_names)
    for c in p.clients:
      for m in ds.modality_names:
        assert c.presence[m].all() == (m in c.modalities)
        assert c.presence[m].any() == (m in c.modalities)


def test_2m_b_is_both_for_two_modalities_and_pairs_for_three(
    htad, three_modalities):
  p = partition.make_partition(htad, '2m_b', num_clients=4)
  assert all(c.modalities == ('audio', 'accel') for c in p.clients)
  p = partition.make_partition(three_modalities, '2m_b', num_clients=3)
  assert all(len(c.modalities) == 2 for c in p.clients)
  assert {m for c in p.clients for m in c.modalities} == {
      'rgb', 'audio', 'flow'}


def test_mixed_b_a_third_each_of_m1_m2_and_both(htad):
  p = partition.make_partition(htad, 'mixed_b', num_clients=9)
  sets = [c.modalities for c in p.clients]
  assert sets.count(('audio',)) == sets.count(('accel',)) == 3
  assert sets.count(('audio', 'accel')) == 3


def test_modality_subset_schemes_use_label_skew_unless_alpha_is_none(htad):
  skewed = partition.make_partition(htad, 'mixed_b', num_clients=6,
                                    alpha=0.1)
  iid = partition.make_partition(htad, 'mixed_b', num_clients=6, alpha=None)
  assert np.mean([_top_two_label_share(htad, c) for c in skewed.clients]) > (
      np.mean([_top_two_label_share(htad, c) for c in iid.clients]) + 0.3)
  sizes = [c.num_examples for c in iid.clients]
  assert max(sizes) - min(sizes) <= 1


def test_case_c_presence_fractions_and_at_least_one_modality(htad):
  p = partition.make_partition(htad, 'case_c', num_clients=12, seed=4)
  _assert_exact_cover(p, htad)
  partial = 0
  for c in p.clients:
    flags = np.stack([c.presence[m] for m in htad.modality_names])
    assert (flags.sum(axis=0) >= 1).all()  # every example keeps a modality
    for m in htad.modality_names:
      fraction = c.presence[m].mean()
      if m not in c.modalities:
        assert fraction == 0
      elif len(c.modalities) == 1:
        assert fraction == 1
      else:
        assert 0.2 <= fraction <= 1
        partial += fraction < 1
  assert partial >= 4  # the skew really removes modalities from examples
  assert p.params['presence_range'] == [0.2, 1.0]


def test_case_c_respects_absences_already_in_the_pool(htad):
  pool = htad.subset(np.arange(len(htad)))
  pool.presence['audio'][::2] = 0.0  # every other example lacks audio
  p = partition.make_partition(pool, 'case_c', num_clients=6, seed=2)
  for c in p.clients:
    effective = np.stack([c.presence[m] * pool.presence[m][c.indices]
                          for m in pool.modality_names])
    if len(c.modalities) == 2:
      assert (effective.sum(axis=0) >= 1).all()


def test_natural_one_client_per_id():
  train, _ = datasets.load('watch')
  p = partition.make_partition(train, 'natural', num_clients=3)
  assert p.client_ids == sorted(set(train.client_ids))
  assert len(p.clients) == 10
  for c in p.clients:
    assert set(train.client_ids[c.indices]) == {c.client_id}
  _assert_exact_cover(p, train)


def test_natural_needs_client_ids(htad):
  with pytest.raises(dataset.DataError, match='htad-train has no client ids'):
    partition.make_partition(htad, 'natural')


def test_json_round_trip_and_report(htad):
  p = partition.make_partition(htad, 'case_c', num_clients=5, seed=3)
  q = partition.Partition.from_json(p.to_json())
  assert q.to_json() == p.to_json()
  for a, b in zip(p.clients, q.clients):
    np.testing.assert_array_equal(a.train_indices, b.train_indices)
    np.testing.assert_array_equal(a.presence['audio'], b.presence['audio'])
    assert b.presence['audio'].dtype == np.float32
  report = p.report(htad)
  assert 'partition case_c (seed 3' in report
  first = p.clients[0]
  line = next(l for l in report.splitlines() if first.client_id in l)
  assert f'train {len(first.train_indices):5d}' in line
  assert str(np.bincount(htad.labels[first.indices], minlength=7).tolist()
             ) in line
  with pytest.raises(dataset.DataError, match='Bad partition JSON'):
    partition.Partition.from_json('{"format_version": 1}')


@pytest.mark.parametrize('kwargs, message', [
    (dict(scheme='case_z'), "Unknown partition scheme 'case_z'.*case_a"),
    (dict(scheme='iid', num_clients=0), 'num_clients must be'),
    (dict(scheme='iid', num_clients=65), '65 clients for only 64 examples'),
    (dict(scheme='1m_b', num_clients=1), 'modality gyro is held by no client'),
    (dict(scheme='case_a', num_clients=20, alpha=0.01),
     r'client_\d+ with \d+\); use fewer clients or a larger alpha'),
    (dict(scheme='iid', alpha=0.0), 'alpha must be > 0'),
    (dict(scheme='iid', val_fraction=1.0), 'val_fraction'),
])
def test_errors_name_the_problem(kwargs, message):
  small, _ = datasets.load('basicmotions')
  with pytest.raises(dataset.DataError, match=message):
    partition.make_partition(small, **kwargs)


def test_partition_rejects_shared_examples(htad):
  p = partition.make_partition(htad, 'iid', num_clients=2)
  a, b = p.clients
  clash = partition.ClientPartition(
      b.client_id, np.concatenate([b.train_indices, a.train_indices[:1]]),
      b.val_indices, b.modalities,
      {m: np.ones(b.num_examples + 1, np.float32) for m in b.presence})
  with pytest.raises(dataset.DataError, match='shares examples'):
    partition.Partition('iid', (a, clash), 0, p.modality_names,
                        p.num_examples)
