"""Federated views of a partitioned training pool, as TFF `ClientData`.

`FederatedData(train_pool, partition)` is what algorithms and binaries use:

* `train_client_data` / `val_client_data`: TFF `ClientData` of unbatched
  examples in the project's element structure (`dataset.element_spec`), built
  with `ClientData.from_clients_and_tf_fn`, so `dataset_computation` works too.
* `client_datasets(cid, ...)`: THE one place that batches and shuffles a
  client's data for HGB: `OrderedDict(train, held_out)`, the batched training
  part and a one-element dataset of the held-out sets as whole batches,
  `OrderedDict(probe, val)` (`held_out_dataset` builds one from the user's own
  data). `validation=LOCAL_VALIDATION` (default) makes `val` the client's own
  local validation part; `validation=SHARED_VALIDATION` makes it the client's
  view of the shared validation set (below). `full_probe=True` makes `probe`
  the client's whole training part instead of its first |V_k| examples.
* `train_dataset(cid, ...)`: one dataset of `local_epochs` passes, for
  baselines (e.g. TFF's FedAvg) that take a single dataset.

A client's presence of a modality is the pool's presence times its partition
presence; an absent modality is zero-filled and masked.

The shared validation set (ALGORITHM.md §5b, `validation_source = shared`)
simulates an IID validation set held by the server and sent to every client,
as the paper authors' prototype did. By default it is a small stratified-by-
label, seeded sample of `min(shared_validation_examples, total)` examples
drawn from the union of ALL clients' local validation parts (examples no
client trains on); given `shared_validation=<a MultiModalDataset>` (e.g. a
fraction of the training pool held out before partitioning, the audit's
control), it is that whole set instead. Either way it pools data no single
client holds, so it is a simulation device and NOT private. Every example
keeps its own presence; a client sees it restricted to the modalities it
holds (the others zero-filled and masked). It is built lazily, once, as one
table with a slice per distinct modality set, not one copy per client.

Every client's examples are kept as slices of constant tensors (one table for
training parts, one for validation parts), so a client's dataset is a slice,
not a per-example gather, and the dataset function is serialisable into a TFF
computation (the constants are embedded in its graph: fine for data sets of up
to a few hundred MB).
"""

from __future__ import annotations

import collections
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb.data import dataset
from tff_hgb.data import partition as partition_lib

DataError = dataset.DataError

# Where `client_datasets` takes a client's `val` from (ALGORITHM.md §5b).
LOCAL_VALIDATION = partition_lib.LOCAL_VALIDATION
SHARED_VALIDATION = partition_lib.SHARED_VALIDATION
VALIDATION_SOURCES = partition_lib.VALIDATION_SOURCES


def _as_batch(part):
  """A batched dataset's examples as one batch; a batch (structure of arrays or
  tensors) as it is."""
  if not isinstance(part, tf.data.Dataset):
    return part
  batches = list(part)
  if not batches:
    # No rows; an unknown inner dimension holds nothing either.
    return tf.nest.map_structure(
        lambda s: np.zeros([0] + [d or 0 for d in s.shape.as_list()[1:]],
                           s.dtype.as_numpy_dtype),
        part.element_spec)
  return tf.nest.map_structure(lambda *xs: np.concatenate(xs, axis=0),
                               *batches)


def held_out_dataset(probe, val) -> tf.data.Dataset:
  """HGB's held-out sets as the one-element dataset its client data carries.

  Args:
    probe: T'_k, the training examples HGB measures training losses on; a
      batched `tf.data.Dataset` or one batch (structure of arrays or tensors).
    val: V_k (or the client's view of the shared validation set); the same.

  Returns:
    A dataset of one element, `OrderedDict(probe=<batch>, val=<batch>)`, each
    batch holding all of its set's examples. One dataset rather than two,
    because TFF's runtime moves and rebuilds every dataset of a client's value
    separately (~5 ms each, docs/BENCHMARKS.md), and a client work process
    takes only datasets.
  """
  return tf.data.Dataset.from_tensors(collections.OrderedDict(
      probe=_as_batch(probe), val=_as_batch(val)))


class _ClientExampleTable:
  """All clients' examples (of one part) as one table of columns.

  Client k owns rows [start_k, end_k); its dataset is that slice.
  """

  def __init__(self, pool: dataset.MultiModalDataset,
               clients: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]]
               ):
    self._row_range = {}
    indices, presence = [], collections.defaultdict(list)
    start = 0
    for client_id, client_indices, client_presence in clients:
      self._row_range[client_id] = (start, start + len(client_indices))
      start += len(client_indices)
      indices.append(client_indices)
      for m in pool.modality_names:
        presence[m].append(client_presence[m] *
                           pool.presence[m][client_indices])
    indices = np.concatenate(indices).astype(np.int64)
    table = dataset.MultiModalDataset(
        name=pool.name, modalities=list(pool.modalities),
        features={m: pool.features[m][indices] for m in pool.modality_names},
        labels=pool.labels[indices], class_names=list(pool.class_names),
        presence={m: np.concatenate(p).astype(np.float32)
                  for m, p in presence.items()})
    self._spec = dataset.element_spec(pool.modalities)
    # Zero-filled and cast exactly as every other pipeline does. Kept as numpy
    # (a graph, e.g. TFF's dataset_computation, embeds it as constants; an
    # eager tensor could not be captured there) plus an eager copy.
    self._columns = tf.nest.map_structure(
        lambda t: t.numpy(),
        dataset.to_tf_dataset(table).batch(len(table)).get_single_element()
    ) if len(table) else tf.nest.map_structure(
        lambda s: np.zeros((0,) + tuple(s.shape), s.dtype.as_numpy_dtype),
        self._spec)
    self._eager_columns = tf.nest.map_structure(tf.constant, self._columns)
    self._ids = np.array(list(self._row_range))
    self._starts = np.array([r[0] for r in self._row_range.values()], np.int64)
    self._ends = np.array([r[1] for r in self._row_range.values()], np.int64)

  def size(self, client_id: str) -> int:
    start, end = self._row_range[client_id]
    return end - start

  def batch(self, client_id: str, limit=None):
    """One client's examples (the first `limit`) as one batch of numpy arrays."""
    start, end = self._row_range[client_id]
    if limit is not None:
      end = min(end, start + int(limit))
    return tf.nest.map_structure(lambda column: column[start:end],
                                 self._columns)

  def dataset_fn(self, client_id, limit=None) -> tf.data.Dataset:
    """Unbatched examples of one client; traceable (client_id may be a tensor).

    An id that is not a client fails when the dataset is built (an empty
    gather), rather than silently giving another client's data.

    Args:
      client_id: the client.
      limit: if set, only the client's first `limit` examples (a shorter
        slice, so a serialized dataset carries only those).
    """
    if tf.executing_eagerly():
      key = client_id.numpy() if isinstance(client_id, tf.Tensor) else client_id
      key = key.decode() if isinstance(key, bytes) else str(key)
      if key in self._row_range:
        # Python slicing of the numpy columns: the tensor path below costs
        # ~14 ms per dataset in eager op dispatch (a client's training data,
        # every round), this about a tenth of that.
        return tf.data.Dataset.from_tensor_slices(self.batch(key, limit))
    columns = (self._eager_columns if tf.executing_eagerly() else
               tf.nest.map_structure(tf.constant, self._columns))
    position = tf.reshape(tf.where(tf.equal(self._ids, client_id)), [-1])[0]
    start = tf.gather(self._starts, position)
    end = tf.gather(self._ends, position)
    if limit is not None:
      end = tf.minimum(end, start + limit)
    return tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda column: column[start:end], columns))


class FederatedData:
  """A training pool split into clients by a `Partition`.

  Args:
    train_pool: the training pool the partition indexes.
    partition: its division into clients.
    shared_validation_examples: size N of the sampled shared validation set
      (see the module docstring); it holds min(N, total local validation
      examples).
    shared_validation_seed: seed (>= 0) of the shared set's stratified sample.
    shared_validation: a server-held validation set (examples outside
      `train_pool`, with its modalities and classes) to use whole as the
      shared validation set instead of the sample.
  """

  def __init__(self, train_pool: dataset.MultiModalDataset,
               partition: partition_lib.Partition, *,
               shared_validation_examples: int = 256,
               shared_validation_seed: int = 0,
               shared_validation: Optional[dataset.MultiModalDataset] = None):
    if (isinstance(shared_validation_examples, bool) or
        not isinstance(shared_validation_examples, (int, np.integer)) or
        shared_validation_examples < 1):
      raise DataError(f'shared_validation_examples must be an integer >= 1, '
                      f'got {shared_validation_examples!r}.')
    if (isinstance(shared_validation_seed, bool) or
        not isinstance(shared_validation_seed, (int, np.integer)) or
        shared_validation_seed < 0):
      raise DataError(f'shared_validation_seed must be an integer >= 0, got '
                      f'{shared_validation_seed!r}.')
    if len(train_pool) != partition.num_examples:
      raise DataError(
          f'Partition {partition.scheme} is of {partition.num_examples} '
          f'examples but {train_pool.name} has {len(train_pool)}.')
    if set(partition.modality_names) != set(train_pool.modality_names):
      raise DataError(
          f'Partition {partition.scheme} is of modalities '
          f'{list(partition.modality_names)} but {train_pool.name} has '
          f'{train_pool.modality_names}.')
    if not partition.clients:
      raise DataError(f'Partition {partition.scheme} has no clients.')
    if shared_validation is not None and (
        not len(shared_validation) or
        shared_validation.modality_names != train_pool.modality_names or
        shared_validation.class_names != train_pool.class_names):
      raise DataError(
          f'The shared validation set {shared_validation.name} must hold '
          f'examples of the modalities {train_pool.modality_names} and classes '
          f'of {train_pool.name}; it has {len(shared_validation)} examples of '
          f'{shared_validation.modality_names}.')
    self._shared_set = shared_validation
    self._pool = train_pool
    self._partition = partition
    self._shared_validation_examples = int(shared_validation_examples)
    self._shared_validation_seed = int(shared_validation_seed)
    self._shared_indices = None  # Built on first use.
    self._shared_table = None
    self._clients = {c.client_id: c for c in partition.clients}
    self._train = _ClientExampleTable(train_pool, [
        (c.client_id, c.train_indices, c.train_presence())
        for c in partition.clients])
    self._val = _ClientExampleTable(train_pool, [
        (c.client_id, c.val_indices, c.val_presence())
        for c in partition.clients])
    client_data_cls = tff.simulation.datasets.ClientData
    self.train_client_data = client_data_cls.from_clients_and_tf_fn(
        self.client_ids, self._train.dataset_fn)
    self.val_client_data = client_data_cls.from_clients_and_tf_fn(
        self.client_ids, self._val.dataset_fn)

  # ---- What the data is. ----

  @property
  def train_pool(self) -> dataset.MultiModalDataset:
    return self._pool

  @property
  def partition(self) -> partition_lib.Partition:
    return self._partition

  @property
  def client_ids(self) -> list[str]:
    return self._partition.client_ids

  @property
  def modalities(self) -> list[dataset.ModalitySpec]:
    return list(self._pool.modalities)

  @property
  def num_classes(self) -> int:
    return self._pool.num_classes

  @property
  def element_spec(self):
    """Spec of one unbatched example (batched datasets add a None dimension)."""
    return dataset.element_spec(self._pool.modalities)

  def num_train_examples(self, client_id: str) -> int:
    return self._train.size(self._check(client_id).client_id)

  def num_val_examples(self, client_id: str) -> int:
    return self._val.size(self._check(client_id).client_id)

  def client_modalities(self, client_id: str) -> tuple[str, ...]:
    return self._check(client_id).modalities

  @property
  def shared_validation_examples(self) -> int:
    """The requested size N of the shared validation set."""
    return self._shared_validation_examples

  @property
  def shared_validation_seed(self) -> int:
    return self._shared_validation_seed

  @property
  def shared_validation_set(self) -> Optional[dataset.MultiModalDataset]:
    """The server-held shared validation set, or None (the sampled one)."""
    return self._shared_set

  @property
  def shared_validation_indices(self) -> np.ndarray:
    """Pool indices of the sampled shared validation set, ascending (a copy).

    A stratified-by-label sample, seeded by `shared_validation_seed`, of
    min(shared_validation_examples, total) of all clients' local validation
    examples: each label gets one example if there are at least as many
    examples to draw as labels, the rest in proportion to the labels' counts
    (largest remainders). Unused when a server-held set was given.
    """
    if self._shared_indices is None:
      self._shared_indices = _stratified_sample(
          np.sort(np.concatenate(
              [c.val_indices for c in self._partition.clients]
          ).astype(np.int64)),
          self._pool.labels, self._shared_validation_examples,
          np.random.default_rng(self._shared_validation_seed))
    return self._shared_indices.copy()

  @property
  def num_shared_val_examples(self) -> int:
    """Examples in the shared validation set (every client gets all of them)."""
    if self._shared_set is not None:
      return len(self._shared_set)
    return len(self.shared_validation_indices)

  # ---- Batched datasets for algorithms. ----

  def client_datasets(self, client_id: str, *, batch_size: int,
                      shuffle_seed: int, local_epochs: int = 1,
                      validation: str = LOCAL_VALIDATION,
                      full_probe: bool = False) -> collections.OrderedDict:
    """One client's batched data for an algorithm's local round.

    Args:
      client_id: the client.
      batch_size: examples per batch (the last batch may be smaller).
      shuffle_seed: op seed of the training shuffle.
      local_epochs: validated only: the client work makes its `local_epochs`
        passes over `train` itself, because it measures the model between
        passes (ALGORITHM.md §4); `train` is therefore not repeated.
      validation: one of VALIDATION_SOURCES (ALGORITHM.md §5b): LOCAL_VALIDATION
        takes `val` from the client's local validation part;
        SHARED_VALIDATION from the shared validation set (a simulated
        server-held IID set pooled from all clients' validation parts, not
        private; see the module docstring) restricted to the client's
        modalities. The element structure is the same either way.
      full_probe: the probe is the whole training part T_k (a control of
        ALGORITHM.md §5b: OGR's training losses without sampling noise)
        instead of its first |V_k| examples.

    Returns:
      OrderedDict(
        train=training part, shuffled (seeded, reshuffled on every pass),
          batched,
        held_out=`held_out_dataset(probe, val)`: one element holding
          probe=the first len(local validation part) training examples (all
            of them with `full_probe`) in fixed partition order (a fixed
            subset for measuring training losses) and
          val=the validation part (local or shared) in fixed order,
          each as one batch).
    """
    if validation not in VALIDATION_SOURCES:
      raise ValueError(f'Unknown validation source {validation!r}; allowed: '
                       f'{", ".join(map(repr, VALIDATION_SOURCES))}.')
    self._check_batching(batch_size, local_epochs)
    train = self.train_client_data.create_tf_dataset_for_client(
        self._check(client_id).client_id)
    num_train = self.num_train_examples(client_id)
    num_val = self.num_val_examples(client_id)
    if validation == SHARED_VALIDATION:
      val = self._shared_validation_table().batch(
          self._modality_set_key(client_id))
    else:
      val = self._val.batch(client_id)
    return collections.OrderedDict(
        train=train.shuffle(max(num_train, 1), seed=shuffle_seed,
                            reshuffle_each_iteration=True).batch(batch_size),
        # Its own slice rather than train.take(...): a serialized dataset
        # then carries |V_k| examples instead of the whole training part.
        held_out=held_out_dataset(
            self._train.batch(client_id,
                              limit=None if full_probe else num_val), val),
    )

  def train_dataset(self, client_id: str, *, batch_size: int,
                    shuffle_seed: int, local_epochs: int = 1,
                    include_val: bool = False) -> tf.data.Dataset:
    """The training part (optionally plus validation) for `local_epochs` passes.

    Each pass is reshuffled (seeded) and no batch spans two passes.
    """
    self._check_batching(batch_size, local_epochs)
    client = self._check(client_id)
    data = self.train_client_data.create_tf_dataset_for_client(
        client.client_id)
    size = self.num_train_examples(client_id)
    if include_val:
      data = data.concatenate(
          self.val_client_data.create_tf_dataset_for_client(client.client_id))
      size += self.num_val_examples(client_id)
    return data.shuffle(max(size, 1), seed=shuffle_seed,
                        reshuffle_each_iteration=True).batch(
                            batch_size).repeat(local_epochs)

  # ---- Views. ----

  def uni_modal(self, modality: str) -> 'FederatedData':
    """Only `modality`, only clients holding it, only examples where present.

    A client keeps its examples where the modality is present (pool presence
    times partition presence); a client left without training examples is
    dropped. Client ids are unchanged.
    """
    if modality not in self._pool.modality_names:
      raise DataError(f'{self._pool.name}: no modality {modality!r}; it has '
                      f'{self._pool.modality_names}.')
    clients = []
    for c in self._partition.clients:
      if modality not in c.modalities:
        continue
      present = (c.presence[modality] *
                 self._pool.presence[modality][c.indices]) > 0
      num_train = len(c.train_indices)
      keep_train, keep_val = present[:num_train], present[num_train:]
      if not keep_train.any():
        continue
      kept = len(c.train_indices[keep_train]) + len(c.val_indices[keep_val])
      clients.append(partition_lib.ClientPartition(
          client_id=c.client_id,
          train_indices=c.train_indices[keep_train],
          val_indices=c.val_indices[keep_val],
          modalities=(modality,),
          presence={modality: np.ones(kept, np.float32)}))
    if not clients:
      raise DataError(f'No client holds modality {modality!r} in partition '
                      f'{self._partition.scheme}.')
    view = partition_lib.Partition(
        scheme=f'{self._partition.scheme}/{modality}',
        clients=tuple(clients), seed=self._partition.seed,
        modality_names=(modality,),
        num_examples=self._partition.num_examples,
        params=dict(self._partition.params))
    return FederatedData(
        self._pool.with_modalities([modality]), view,
        shared_validation_examples=self._shared_validation_examples,
        shared_validation_seed=self._shared_validation_seed,
        shared_validation=None if self._shared_set is None else
        self._shared_set.with_modalities([modality]))

  # ---- Helpers. ----

  def _modality_set_key(self, client_id: str) -> str:
    """The client's modalities in pool order, e.g. 'audio+accel'."""
    held = set(self.client_modalities(client_id))
    return '+'.join(m for m in self._pool.modality_names if m in held)

  def _shared_validation_table(self) -> _ClientExampleTable:
    """The shared set once per distinct modality set (built on first use)."""
    if self._shared_table is None:
      if self._shared_set is None:
        source, indices = self._pool, self.shared_validation_indices
      else:
        source, indices = self._shared_set, np.arange(len(self._shared_set))
      keys = dict.fromkeys(self._modality_set_key(c) for c in self.client_ids)
      self._shared_table = _ClientExampleTable(source, [
          (key, indices,
           {m: np.full(len(indices), float(m in key.split('+')), np.float32)
            for m in source.modality_names})
          for key in keys])
    return self._shared_table

  def _check(self, client_id: str) -> partition_lib.ClientPartition:
    if client_id not in self._clients:
      raise DataError(f'Unknown client {client_id!r}; this data has '
                      f'{len(self._clients)} clients '
                      f'({", ".join(list(self._clients)[:5])}, ...).')
    return self._clients[client_id]

  @staticmethod
  def _check_batching(batch_size: int, local_epochs: int) -> None:
    if batch_size < 1:
      raise DataError(f'batch_size must be >= 1, got {batch_size}.')
    if local_epochs < 1:
      raise DataError(f'local_epochs must be >= 1, got {local_epochs}.')


def _stratified_sample(candidates: np.ndarray, labels: np.ndarray, size: int,
                       rng: np.random.Generator) -> np.ndarray:
  """min(size, len(candidates)) of `candidates`, stratified by label; sorted.

  Each label gets one example when there are at least as many to draw as
  labels; the rest are shared in proportion to what each label has left
  (largest remainders, ties to the smaller label).
  """
  size = min(size, len(candidates))
  if size == 0:
    return np.zeros(0, np.int64)
  classes, counts = np.unique(labels[candidates], return_counts=True)
  allocation = np.zeros(len(classes), np.int64)
  if size >= len(classes):
    allocation += 1
  capacity = counts - allocation
  remaining = size - int(allocation.sum())
  if remaining:
    quota = remaining * capacity / capacity.sum()
    extra = np.floor(quota).astype(np.int64)
    # Only labels with a fractional quota get one more, so none exceeds its
    # capacity.
    order = np.argsort(-(quota - extra), kind='stable')
    extra[order[:remaining - int(extra.sum())]] += 1
    allocation += extra
  chosen = [rng.choice(candidates[labels[candidates] == label], n,
                       replace=False)
            for label, n in zip(classes, allocation)]
  return np.sort(np.concatenate(chosen)).astype(np.int64)
