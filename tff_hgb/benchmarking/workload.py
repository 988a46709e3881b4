"""What the benchmark trains: synthetic equal clients, registry processes.

`Workload` is the MLP one (the paper_regime preset's vectors); `MediaWorkload`
the paper's media in miniature (a spectrogram and a frame, conv encoders).
Data and processes are built once per size, E and --jit, then cached.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Callable

import numpy as np
import tensorflow_federated as tff

from tff_hgb import algorithms
from tff_hgb.algorithms import registry
from tff_hgb import models
from tff_hgb.benchmarking import settings as settings_lib
from tff_hgb.data import client_data
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.data import partition
from tff_hgb.data import synthetic


class Workload:
  """Synthetic clients of equal size, the registry's processes, cached."""

  def __init__(self, settings: settings_lib.Settings):
    self.settings = settings
    preset = synthetic.PRESETS['paper_regime']
    wide, clean = preset['modalities']
    self.modalities = (dataclasses.replace(
        wide, dim=settings.wide_dim,
        informative_dims=min(wide.informative_dims, settings.wide_dim)), clean)
    self.num_classes = preset['num_classes']
    self._data = {}
    self._processes = {}

  def describe(self) -> dict[str, Any]:
    s = self.settings
    num_val = max(math.ceil(0.1 * s.examples_per_client), 4)
    return collections.OrderedDict(
        data=self._data_description(),
        partition=('iid, equal client sizes: '
                   f'{s.examples_per_client} examples per client = '
                   f'{s.examples_per_client - num_val} local training (T_k) + '
                   f'{num_val} local validation (V_k); probe T\'_k = first '
                   f'{num_val} of T_k'),
        model=f'tff_hgb.models default encoders, {models.ModelConfig()}',
        batch_size=s.batch_size,
        client_optimizer='SGD, learning rate 0.05',
        server_optimizer='SGD, learning rate 1.0',
        hgb_mode='hgb (registry default hyper-parameters)',
    )

  def _data_description(self) -> str:
    return ('synthetic, the paper_regime preset\'s modalities: ' + ', '.join(
        f'{m.name} ({m.dim} features)' for m in self.modalities) +
            f'; {self.num_classes} classes')

  def _pool(self, num_examples: int) -> dataset_lib.MultiModalDataset:
    return synthetic.make_synthetic(
        num_examples=num_examples, num_classes=self.num_classes,
        modalities=self.modalities, seed=self.settings.seed,
        name='synthetic-bench')

  def data(self, num_clients: int):
    """FederatedData of `num_clients` clients of equal size."""
    if num_clients not in self._data:
      s = self.settings
      pool = self._pool(num_clients * s.examples_per_client)
      split = partition.make_partition(
          pool, 'iid', num_clients=num_clients, alpha=None, val_fraction=0.1,
          min_val_examples=4, seed=s.seed)
      self._data[num_clients] = client_data.FederatedData(pool, split)
    return self._data[num_clients]

  def config(self, local_epochs: int, jit: bool = False):
    return algorithms.AlgorithmConfig(
        local_epochs=local_epochs, batch_size=self.settings.batch_size,
        seed=self.settings.seed, jit=jit)

  def process(self, name: str, local_epochs: int, *, jit: bool = False,
              cached: bool = True):
    """The registry's process `name` ('hgb', 'fedavg') or 'fedavg_reduce'.

    'fedavg_reduce' is TFF's `build_weighted_fed_avg` with its default loop
    (DATASET_REDUCE), as a user builds it; the registry's baselines use the
    iterator loop (`registry.BASELINE_LOOP`). `jit`: the registry's --jit.
    """
    key = (name, local_epochs, jit)
    if cached and key in self._processes:
      return self._processes[key]
    fd = self.data(self.settings.clients)
    config = self.config(local_epochs, jit)
    if name == 'fedavg_reduce':
      process = tff.learning.algorithms.build_weighted_fed_avg(
          models.build_model_fn(fd.modalities, fd.num_classes,
                                config=config.model),
          client_optimizer_fn=tff.learning.optimizers.build_sgdm(
              learning_rate=config.client_learning_rate),
          server_optimizer_fn=tff.learning.optimizers.build_sgdm(
              learning_rate=config.server_learning_rate))
    else:
      process = registry.build_algorithm(name, fd, config).process
    if cached:
      self._processes[key] = process
    return process

  def shuffle_seed(self, client_index: int, round_num: int) -> int:
    return (self.settings.seed * 1_000_003 + round_num * 7919 +
            client_index) % (2**31)

  def hgb_data_fn(self, fd) -> Callable[[str, int], Any]:
    """As the registry's HGB client_data: OrderedDict(train, val, probe)."""
    index = {cid: i for i, cid in enumerate(fd.client_ids)}

    def data(cid, round_num):
      return fd.client_datasets(
          cid, batch_size=self.settings.batch_size,
          shuffle_seed=self.shuffle_seed(index[cid], round_num))

    return data

  def fedavg_data_fn(self, fd, local_epochs: int) -> Callable[[str, int], Any]:
    """T_k only (no V_k), E passes: the training work HGB does."""
    index = {cid: i for i, cid in enumerate(fd.client_ids)}

    def data(cid, round_num):
      return fd.train_dataset(
          cid, batch_size=self.settings.batch_size,
          shuffle_seed=self.shuffle_seed(index[cid], round_num),
          local_epochs=local_epochs, include_val=False)

    return data

  def client_sizes(self, fd, client_ids) -> list[tuple[int, int, int]]:
    """(training, probe, validation) examples of each client."""
    return [(fd.num_train_examples(c), min(fd.num_val_examples(c),
                                           fd.num_train_examples(c)),
             fd.num_val_examples(c)) for c in client_ids]


class MediaWorkload(Workload):
  """The paper's media setting in miniature, for speed (issue 17).

  Per example a log-mel spectrogram [50, 32] ('audio') and one 16×16×3 frame
  ('frame'), 10 classes, through `tff_hgb.models`' default encoders for those
  kinds (1-D and 2-D convolutions). The features are Gaussian around a mean
  per class: only their shapes matter to the round time.
  """

  MODALITIES = (
      dataset_lib.ModalitySpec('audio', dataset_lib.SPECTROGRAM, (50, 32)),
      dataset_lib.ModalitySpec('frame', dataset_lib.IMAGE, (16, 16, 3)),
  )

  def __init__(self, settings: settings_lib.Settings):
    super().__init__(settings)
    self.modalities = self.MODALITIES
    self.num_classes = 10

  def _pool(self, num_examples: int) -> dataset_lib.MultiModalDataset:
    rng = np.random.default_rng(self.settings.seed)
    labels = rng.permutation(np.arange(num_examples) % self.num_classes)
    features = {}
    for m in self.modalities:
      means = rng.normal(size=(self.num_classes,) + m.shape)
      features[m.name] = (0.5 * means[labels] + rng.normal(
          size=(num_examples,) + m.shape)).astype(np.float32)
    return dataset_lib.MultiModalDataset(
        name='synthetic-media-bench', modalities=list(self.modalities),
        features=features, labels=labels,
        class_names=[f'class_{i}' for i in range(self.num_classes)])

  def _data_description(self) -> str:
    return ('synthetic, Gaussian around a per-class mean, the shapes of the '
            'paper\'s media: ' + ', '.join(
                f'{m.name} ({m.kind} {list(m.shape)})'
                for m in self.modalities) + f'; {self.num_classes} classes')
