"""Seeded, deterministic partitions of a training pool (ALGORITHM.md §6).

Schemes (`make_partition(dataset, scheme, ...)`):

  iid       examples dealt out uniformly at random; every client has every
            modality.
  case_a    Dirichlet label skew: for every class, its examples are divided
            among the clients in proportions ~ Dir(alpha); every client has
            every modality.
  1m_b      every client holds ONE modality (round robin over modalities).
  2m_b      every client holds TWO modalities (client k: modalities k and k+1
            mod M); for M = 2 that is both, as ALGORITHM.md §6 reads it.
  mixed_b   a mix: clients cycle through {m1}, ..., {mM}, {all}; for M = 2 a
            third each of {m1}, {m2}, {m1, m2}.
  case_c    mixed_b's modality sets plus sample skew across modalities: in a
            client holding several modalities, modality m is present for only
            a fraction f ~ Uniform(0.2, 1) of its examples (drawn per client
            and modality); an example left with none gets one back at random,
            so every example keeps at least one modality.
  natural   one client per `client_ids` value of the data set (subject,
            speaker); every client has every modality.

The modality-subset schemes (1m_b, 2m_b, mixed_b, case_c) divide the examples
with the same Dirichlet label skew as case_a, because the paper's case B is
non-IID too; pass `alpha=None` to divide them IID instead.

The Dirichlet split follows NIID-Bench (Li et al., ICDE 2022): a client that
already holds its fair share N/K of examples gets no more, and the draw is
repeated (seeded) until every client has enough examples for a training and a
validation part; if that never happens the error names the smallest client.

Every client's examples are then split (seeded) into a training part and a
local validation part of max(ceil(val_fraction * n), min_val_examples)
examples, the training part keeping at least one.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
from typing import Optional, Sequence

import numpy as np

from tff_hgb.data import dataset

DataError = dataset.DataError

IID = 'iid'
CASE_A = 'case_a'
ONE_MODALITY_B = '1m_b'
TWO_MODALITIES_B = '2m_b'
MIXED_B = 'mixed_b'
CASE_C = 'case_c'
NATURAL = 'natural'
SCHEMES = (IID, CASE_A, ONE_MODALITY_B, TWO_MODALITIES_B, MIXED_B, CASE_C,
           NATURAL)
# Schemes whose clients hold a subset of the modalities.
MODALITY_SUBSET_SCHEMES = (ONE_MODALITY_B, TWO_MODALITIES_B, MIXED_B, CASE_C)

DEFAULT_ALPHA = 0.1
DEFAULT_PRESENCE_RANGE = (0.2, 1.0)
_MAX_DIRICHLET_ATTEMPTS = 1000
_JSON_FORMAT_VERSION = 1

# Where a client's OGR validation batches come from (ALGORITHM.md §5b): its own
# local validation part, or the shared validation set held out of the pool
# (`tff_hgb.data.client_data` builds both).
LOCAL_VALIDATION = 'local'
SHARED_VALIDATION = 'shared'
VALIDATION_SOURCES = (LOCAL_VALIDATION, SHARED_VALIDATION)

# Independent random streams of one partition, so that changing one step (say
# the validation fraction) does not change the others (say the label split).
_EXAMPLE_STREAM, _VALIDATION_STREAM, _PRESENCE_STREAM = 1, 2, 3


@dataclasses.dataclass(frozen=True, eq=False)
class ClientPartition:
  """One client's share of the training pool.

  Attributes:
    client_id: the client's name.
    train_indices: pool indices of its local training part, in a seeded random
      order (the first len(val) of them are its fixed probe set).
    val_indices: pool indices of its local validation part.
    modalities: the modalities the client holds.
    presence: for EVERY modality of the pool, float32 0/1 flags aligned with
      `concatenate([train_indices, val_indices])`; all zero for a modality the
      client does not hold.
  """

  client_id: str
  train_indices: np.ndarray
  val_indices: np.ndarray
  modalities: tuple[str, ...]
  presence: dict[str, np.ndarray]

  @property
  def indices(self) -> np.ndarray:
    """Training then validation indices (the order `presence` follows)."""
    return np.concatenate([self.train_indices, self.val_indices])

  @property
  def num_examples(self) -> int:
    return len(self.train_indices) + len(self.val_indices)

  def train_presence(self) -> dict[str, np.ndarray]:
    n = len(self.train_indices)
    return {m: p[:n] for m, p in self.presence.items()}

  def val_presence(self) -> dict[str, np.ndarray]:
    n = len(self.train_indices)
    return {m: p[n:] for m, p in self.presence.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Partition:
  """A partition of a training pool of `num_examples` examples into clients.

  Attributes:
    scheme: how it was made (one of SCHEMES, or a derived name).
    clients: the clients, in order.
    seed: the seed it was made with.
    modality_names: the pool's modalities (keys of every client's presence).
    num_examples: size of the training pool the indices refer to.
    params: the remaining arguments of `make_partition` (for the record).
  """

  scheme: str
  clients: tuple[ClientPartition, ...]
  seed: int
  modality_names: tuple[str, ...]
  num_examples: int
  params: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    _check_consistent(self)

  @property
  def client_ids(self) -> list[str]:
    return [c.client_id for c in self.clients]

  def client(self, client_id: str) -> ClientPartition:
    for c in self.clients:
      if c.client_id == client_id:
        return c
    raise DataError(f'Partition {self.scheme}: no client {client_id!r}.')

  def report(self, ds: dataset.MultiModalDataset) -> str:
    """Per client: train/val sizes, modalities, presence and label histogram."""
    if len(ds) != self.num_examples:
      raise DataError(f'Partition of {self.num_examples} examples cannot '
                      f'describe {ds.name} ({len(ds)} examples).')
    params = ', '.join(f'{k}={v}' for k, v in sorted(self.params.items()))
    lines = [f'partition {self.scheme} (seed {self.seed}; {params}): '
             f'{len(self.clients)} clients, '
             f'{sum(c.num_examples for c in self.clients)} examples']
    lines.append('  labels: ' + ' '.join(
        f'{i}={name}' for i, name in enumerate(ds.class_names)))
    width = max(len(c.client_id) for c in self.clients)
    for c in self.clients:
      histogram = np.bincount(ds.labels[c.indices], minlength=ds.num_classes)
      presence = ' '.join(
          f'{m}:{float(np.mean(c.presence[m])):.2f}' for m in c.modalities)
      lines.append(
          f'  {c.client_id:<{width}}  train {len(c.train_indices):5d}  '
          f'val {len(c.val_indices):4d}  modalities {",".join(c.modalities)} '
          f'(present {presence})  labels {histogram.tolist()}')
    return '\n'.join(lines)

  def to_json(self) -> str:
    """A JSON text that `from_json` turns back into an equal partition."""
    return json.dumps({
        'format_version': _JSON_FORMAT_VERSION,
        'scheme': self.scheme,
        'seed': self.seed,
        'modality_names': list(self.modality_names),
        'num_examples': self.num_examples,
        'params': self.params,
        'clients': [{
            'client_id': c.client_id,
            'train_indices': c.train_indices.tolist(),
            'val_indices': c.val_indices.tolist(),
            'modalities': list(c.modalities),
            # Flags as a '0'/'1' string: compact and still readable.
            'presence': {m: ''.join('1' if f else '0' for f in flags)
                         for m, flags in c.presence.items()},
        } for c in self.clients],
    })

  @classmethod
  def from_json(cls, text: str) -> 'Partition':
    try:
      record = json.loads(text)
      if record.get('format_version') != _JSON_FORMAT_VERSION:
        raise DataError(f'unsupported partition format version '
                        f'{record.get("format_version")!r}.')
      clients = tuple(
          ClientPartition(
              client_id=c['client_id'],
              train_indices=np.asarray(c['train_indices'], np.int64),
              val_indices=np.asarray(c['val_indices'], np.int64),
              modalities=tuple(c['modalities']),
              presence={m: np.frombuffer(flags.encode(), np.uint8).astype(
                  np.float32) - ord('0') for m, flags in c['presence'].items()},
          ) for c in record['clients'])
      return cls(scheme=record['scheme'], clients=clients,
                 seed=record['seed'],
                 modality_names=tuple(record['modality_names']),
                 num_examples=record['num_examples'],
                 params=dict(record['params']))
    except (ValueError, KeyError, TypeError) as e:
      if isinstance(e, DataError):
        raise DataError(f'Bad partition JSON: {e}') from None
      raise DataError(f'Bad partition JSON ({type(e).__name__}: {e}).'
                      ) from None


def make_partition(ds: dataset.MultiModalDataset, scheme: str, *,
                   num_clients: int = 10,
                   alpha: Optional[float] = DEFAULT_ALPHA,
                   val_fraction: float = 0.1,
                   min_val_examples: int = 4,
                   seed: int = 0,
                   presence_range: tuple[float, float] = DEFAULT_PRESENCE_RANGE,
                   ) -> Partition:
  """Partitions the training pool `ds` into clients (see the module docstring).

  Args:
    ds: the training pool (never the test set).
    scheme: one of SCHEMES.
    num_clients: number of clients (ignored by 'natural', which has one per
      client id).
    alpha: Dirichlet concentration of the label skew (case_a and the
      modality-subset schemes); smaller is more skewed; None divides IID.
    val_fraction: fraction of each client's examples in its validation part.
    min_val_examples: lower bound on a validation part's size.
    seed: the whole partition is a function of (ds, arguments, seed).
    presence_range: case_c's range of per-modality presence fractions.

  Returns:
    A `Partition` in which every example of `ds` belongs to exactly one client.

  Raises:
    DataError: unknown scheme, bad arguments, a client left without examples,
      or a modality that no client holds.
  """
  _check_arguments(ds, scheme, num_clients, alpha, val_fraction,
                   min_val_examples, presence_range)
  min_client_examples = min_val_examples + 1
  example_rng = np.random.default_rng([seed, _EXAMPLE_STREAM])
  if scheme == NATURAL:
    client_ids, groups = _natural_groups(ds)
  else:
    client_ids = [f'client_{k:0{len(str(num_clients - 1))}d}'
                  for k in range(num_clients)]
    if scheme == IID or alpha is None:
      groups = np.array_split(example_rng.permutation(len(ds)), num_clients)
    else:
      groups = _dirichlet_label_split(ds.labels, client_ids, alpha,
                                      example_rng, min_client_examples)
  for client_id, members in zip(client_ids, groups):
    if len(members) == 0:
      raise DataError(
          f'{scheme}: client {client_id} has no examples; use fewer clients '
          'or a larger alpha.')

  modality_sets = _modality_sets(scheme, ds.modality_names, len(client_ids))
  held = {m for s in modality_sets for m in s}
  missing = [m for m in ds.modality_names if m not in held]
  if missing:
    raise DataError(
        f'{scheme} with num_clients={len(client_ids)}: modality '
        f'{", ".join(missing)} is held by no client; use at least '
        f'{len(ds.modality_names)} clients.')

  validation_rng = np.random.default_rng([seed, _VALIDATION_STREAM])
  presence_rng = np.random.default_rng([seed, _PRESENCE_STREAM])
  clients = []
  for client_id, members, modalities in zip(client_ids, groups,
                                            modality_sets):
    train, val = _split_train_val(np.asarray(members, np.int64), val_fraction,
                                  min_val_examples, validation_rng)
    order = np.concatenate([train, val])
    presence = {m: np.full(len(order), float(m in modalities), np.float32)
                for m in ds.modality_names}
    if scheme == CASE_C:
      _skew_presence(presence, modalities, ds, order, presence_range,
                     presence_rng)
    clients.append(ClientPartition(client_id, train, val, tuple(modalities),
                                   presence))
  params = dict(num_clients=len(client_ids), alpha=alpha,
                val_fraction=val_fraction, min_val_examples=min_val_examples)
  if scheme == CASE_C:
    params['presence_range'] = list(presence_range)
  partition = Partition(scheme=scheme, clients=tuple(clients), seed=seed,
                        modality_names=tuple(ds.modality_names),
                        num_examples=len(ds), params=params)
  assigned = sum(c.num_examples for c in partition.clients)
  assert assigned == len(ds), (assigned, len(ds))  # disjoint, so a cover.
  return partition


# --------------------------------------------------------------------------
# The steps.
# --------------------------------------------------------------------------


def _check_arguments(ds, scheme, num_clients, alpha, val_fraction,
                     min_val_examples, presence_range):
  if scheme not in SCHEMES:
    raise DataError(f'Unknown partition scheme {scheme!r}; valid schemes: '
                    f'{", ".join(SCHEMES)}.')
  if scheme != NATURAL:
    if not isinstance(num_clients, (int, np.integer)) or num_clients < 1:
      raise DataError(f'num_clients must be an integer >= 1, got '
                      f'{num_clients!r}.')
    if num_clients > len(ds):
      raise DataError(f'{num_clients} clients for only {len(ds)} examples of '
                      f'{ds.name}; use fewer clients.')
  if alpha is not None and not alpha > 0:
    raise DataError(f'alpha must be > 0 (or None for IID), got {alpha!r}.')
  if not 0.0 <= val_fraction < 1.0:
    raise DataError(f'val_fraction must lie in [0, 1), got {val_fraction}.')
  if min_val_examples < 0:
    raise DataError(f'min_val_examples must be >= 0, got {min_val_examples}.')
  low, high = presence_range
  if not 0.0 < low <= high <= 1.0:
    raise DataError(f'presence_range must satisfy 0 < low <= high <= 1, got '
                    f'{presence_range}.')


def _natural_groups(ds: dataset.MultiModalDataset
                    ) -> tuple[list[str], list[np.ndarray]]:
  if ds.client_ids is None:
    raise DataError(f'{ds.name} has no client ids (subjects, speakers), so it '
                    'has no natural clients; use another scheme.')
  ids = np.asarray(ds.client_ids).astype(str)
  names = sorted(np.unique(ids).tolist())
  return names, [np.flatnonzero(ids == name) for name in names]


def _dirichlet_label_split(labels: np.ndarray, client_ids: Sequence[str],
                           alpha: float, rng: np.random.Generator,
                           min_client_examples: int) -> list[np.ndarray]:
  """Per class, Dir(alpha) proportions over clients (NIID-Bench style)."""
  n = len(labels)
  num_clients = len(client_ids)
  # Asking for more than an equal share would make success impossible.
  min_client_examples = min(min_client_examples, n // num_clients)
  smallest = None
  for _ in range(_MAX_DIRICHLET_ATTEMPTS):
    clients = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
      members = rng.permutation(np.flatnonzero(labels == label))
      proportions = rng.dirichlet(np.full(num_clients, alpha))
      # Clients that already hold their fair share get no more of this class.
      proportions *= np.array([len(c) < n / num_clients for c in clients])
      if proportions.sum() <= 0:
        proportions = np.array([len(c) < n / num_clients for c in clients],
                               np.float64)
      proportions /= proportions.sum()
      cuts = (np.cumsum(proportions) * len(members)).astype(int)[:-1]
      for client, part in zip(clients, np.split(members, cuts)):
        client.extend(part.tolist())
    sizes = [len(c) for c in clients]
    if min(sizes) >= min_client_examples:
      return [np.asarray(c, np.int64) for c in clients]
    if smallest is None or min(sizes) > smallest[1]:
      smallest = (int(np.argmin(sizes)), min(sizes))
  raise DataError(
      f'Dirichlet(alpha={alpha}) split of {n} examples into {num_clients} '
      f'clients: in {_MAX_DIRICHLET_ATTEMPTS} draws some client always kept '
      f'fewer than the {min_client_examples} examples a training and a '
      f'validation part need (the best draw left {client_ids[smallest[0]]} '
      f'with {smallest[1]}); use fewer clients or a larger alpha.')


def _modality_sets(scheme: str, names: Sequence[str], num_clients: int
                   ) -> list[tuple[str, ...]]:
  """The modalities each client holds, in the pool's modality order."""
  m = len(names)
  if scheme == ONE_MODALITY_B:
    return [(names[k % m],) for k in range(num_clients)]
  if scheme == TWO_MODALITIES_B:
    if m <= 2:
      return [tuple(names)] * num_clients
    return [tuple(n for i, n in enumerate(names) if i in (k % m, (k + 1) % m))
            for k in range(num_clients)]
  if scheme in (MIXED_B, CASE_C) and m > 1:
    cycle = [(n,) for n in names] + [tuple(names)]
    return [cycle[k % len(cycle)] for k in range(num_clients)]
  return [tuple(names)] * num_clients


def _split_train_val(members: np.ndarray, val_fraction: float,
                     min_val_examples: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
  shuffled = rng.permutation(members)
  n = len(shuffled)
  num_val = max(math.ceil(val_fraction * n), min_val_examples)
  num_val = max(0, min(num_val, n - 1))  # the training part keeps >= 1.
  return shuffled[num_val:], shuffled[:num_val]


def _skew_presence(presence: dict[str, np.ndarray], modalities: Sequence[str],
                   ds: dataset.MultiModalDataset, order: np.ndarray,
                   presence_range: tuple[float, float],
                   rng: np.random.Generator) -> None:
  """Case C: each held modality present for a random fraction of examples."""
  if len(modalities) < 2:
    return  # Its only modality stays on every example.
  n = len(order)
  for m in modalities:
    fraction = rng.uniform(*presence_range)
    present = rng.permutation(n)[:math.ceil(fraction * n)]
    presence[m][:] = 0.0
    presence[m][present] = 1.0
  # An example without any modality (counting absences already in the pool)
  # gets one of the client's modalities back; ceil() above and this repair
  # only ever raise a fraction, so it stays within the drawn range.
  effective = np.stack([presence[m] * ds.presence[m][order]
                        for m in modalities])
  for i in np.flatnonzero(effective.sum(axis=0) == 0):
    available = [m for m in modalities if ds.presence[m][order[i]] > 0]
    presence[available[rng.integers(len(available))] if available
             else modalities[rng.integers(len(modalities))]][i] = 1.0


def _check_consistent(partition: Partition) -> None:
  """Indices in range, no example in two clients, presence aligned."""
  seen = np.zeros(partition.num_examples, bool)
  ids = collections.Counter(c.client_id for c in partition.clients)
  duplicates = [i for i, count in ids.items() if count > 1]
  if duplicates:
    raise DataError(f'Partition {partition.scheme}: duplicate client ids '
                    f'{duplicates}.')
  for c in partition.clients:
    indices = c.indices
    if indices.size and (indices.min() < 0 or
                         indices.max() >= partition.num_examples):
      raise DataError(f'Partition {partition.scheme}: client {c.client_id} '
                      f'has indices outside [0, {partition.num_examples}).')
    if seen[indices].any() or len(np.unique(indices)) != len(indices):
      raise DataError(f'Partition {partition.scheme}: client {c.client_id} '
                      'shares examples with another client.')
    seen[indices] = True
    if set(c.presence) != set(partition.modality_names) or any(
        len(p) != len(indices) for p in c.presence.values()):
      raise DataError(f'Partition {partition.scheme}: presence of client '
                      f'{c.client_id} does not match its examples.')
    if any(not np.isin(p, (0.0, 1.0)).all() for p in c.presence.values()):
      raise DataError(f'Partition {partition.scheme}: presence of client '
                      f'{c.client_id} is not 0/1 flags.')
    unknown = set(c.modalities) - set(partition.modality_names)
    if unknown:
      raise DataError(f'Partition {partition.scheme}: client {c.client_id} '
                      f'holds unknown modalities {sorted(unknown)}.')
