"""The round loop of one configuration: client sampling, process.next,
evaluation, metrics rows, checkpoints and the progress bar.

Reproducibility and resume
--------------------------
A run is a pure function of its configuration: the test split is seeded by
`data_seed`, the partition, the model initialisation and the local shuffles by
`seed`, and the clients of round r are `sample_clients(ids, k, seed, r)` (no
global random state). Program state (the learning-process state and the round
number) is saved every `checkpoint_every` rounds and after the last round with
`tff.program.FileProgramStateManager`; `resume=True` reloads the newest state,
drops the metrics.csv rows after it and redoes those rounds, so a resumed run
ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import math
import os
import re
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb.algorithms import registry
from tff_hgb import evaluation
from tff_hgb import models
from tff_hgb.data import dataset as dataset_lib
from tff_hgb.experiment import caches
from tff_hgb.experiment import config as config_lib
from tff_hgb.experiment import results

# Program states kept on disk (the newest ones).
KEEP_STATES = 3
# Head whose accuracy is THE accuracy.
FUSION = models.FUSION


def _run_coroutine(coroutine):
  """Runs a TFF program-manager coroutine to completion.

  Not `asyncio.run`: that leaves the main thread without a current event loop,
  and TFF's own `tff.simulation.run_training_process` (which a user may call
  after us, in the same process) needs `asyncio.get_event_loop()` to work.
  """
  loop = asyncio.new_event_loop()
  try:
    return loop.run_until_complete(coroutine)
  finally:
    loop.close()


# ---------------------------------------------------------------------------
# The round loop.
# ---------------------------------------------------------------------------


def sample_clients(client_ids: Sequence[str], clients_per_round: int,
                   seed: int, round_num: int) -> list[str]:
  """The clients of round `round_num`: a pure function of (seed, round).

  clients_per_round ≤ 0 or ≥ the number of clients gives all of them.
  """
  ids = list(client_ids)
  if clients_per_round <= 0 or clients_per_round >= len(ids):
    return ids
  rng = np.random.default_rng([int(seed), int(round_num), 0x5A17])
  chosen = np.sort(rng.choice(len(ids), size=clients_per_round, replace=False))
  return [ids[i] for i in chosen]


def flatten_process_metrics(metrics) -> dict[str, float]:
  """A process's nested round metrics → flat metrics.csv columns.

  client_work/train/<head>/accuracy → train/<head>/accuracy;
  client_work/hgb/z/<head> → z/<head> (and the other HGB metrics:
  client_weight/effective_clients, delta_g/mean, val/<head>/...);
  other client_work/<x> → <x>; aggregator/... and finalizer/... are kept.
  """
  flat = {}
  for key, value in results.flatten_metrics(metrics).items():
    if key.startswith('client_work/'):
      key = key[len('client_work/'):]
      if key.startswith('hgb/'):
        key = key[len('hgb/'):]
    flat[key] = value
  return flat


# Where progress goes instead of a tqdm bar: a --jobs worker sends it to its
# parent, which draws one bar per running run (tff_hgb.experiment.jobs).
# Called as sink(desc, rounds done, total rounds, postfix).
_progress_sink: Optional[Callable[..., None]] = None


def set_progress_sink(sink: Optional[Callable[..., None]]) -> None:
  """Sends this process's progress to `sink` (None: tqdm bars again)."""
  global _progress_sink
  _progress_sink = sink


class _Progress:
  """A tqdm bar (stderr) showing the round and key metrics."""

  def __init__(self, enabled: bool, total: int, initial: int, desc: str):
    self._bar = None
    self._sink = _progress_sink if enabled else None
    self._desc, self._done, self._total = desc, initial, total
    if self._sink is not None:
      self._sink(desc, initial, total, {})
    elif enabled:
      from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc,
                            unit='round', file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5, leave=True)

  def update(self, postfix: Mapping[str, str]):
    if self._sink is not None:
      self._done += 1
      self._sink(self._desc, self._done, self._total, dict(postfix))
    if self._bar is not None:
      self._bar.set_postfix(postfix, refresh=False)
      self._bar.update(1)

  def close(self):
    if self._bar is not None:
      self._bar.close()


def _state_structure(algorithm):
  return collections.OrderedDict(state=algorithm.process.initialize(),
                                 round_num=0)


def _load_state(manager, algorithm):
  """(state, round) of the newest readable checkpoint, or (None, 0)."""
  versions = _run_coroutine(manager.get_versions()) or []
  structure = _state_structure(algorithm)
  for version in sorted(versions, reverse=True):
    try:
      loaded = _run_coroutine(manager.load(version, structure))
    except Exception:  # pylint: disable=broad-except
      continue  # A damaged state: fall back to the one before.
    state = tf.nest.pack_sequence_as(structure['state'],
                                     tf.nest.flatten(loaded['state']))
    return state, int(loaded['round_num'])
  return None, 0


def _save_state(manager, state_dir: str, state, round_num: int) -> None:
  """Saves the state of `round_num`; a full disk is an OSError naming it."""
  try:
    _run_coroutine(manager.save(
        collections.OrderedDict(state=state, round_num=round_num), round_num))
  except tf.errors.ResourceExhaustedError as e:
    # TensorFlow's file writes report ENOSPC this way; the binaries turn an
    # OSError into one line saying that --resume continues.
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                  os.path.join(state_dir, f'program_state_{round_num}')) from e


def _remove_states_after(state_dir: str, round_num: int) -> None:
  """Drops saved states newer than `round_num` (and temporary leftovers)."""
  if not os.path.isdir(state_dir):
    return
  for name in os.listdir(state_dir):
    match = re.fullmatch(r'program_state_(\d+)(_temp\d+)?', name)
    if match and (match.group(2) or int(match.group(1)) > round_num):
      shutil.rmtree(os.path.join(state_dir, name), ignore_errors=True)


def train(config: config_lib.ExperimentConfig, data: caches.ExperimentData,
          algorithm: registry.Algorithm, *,
          writer: Optional[results.RunWriter] = None,
          eval_rounds: Optional[Callable[[int], bool]] = None,
          desc: str = '') -> tuple[Any, list[dict[str, Any]]]:
  """Runs the rounds of one configuration; returns (final state, rows).

  Args:
    config: the run's configuration (rounds, sampling, seeds, ...).
    data: its data; `data.evaluation_set` is evaluated as
      '<data.evaluation_prefix>/<head>/accuracy|loss'.
    algorithm: a built algorithm for `data.federated_data`.
    writer: writes metrics.csv/TensorBoard and holds state/ (checkpoints) when
      given; with `config.run.resume` the newest checkpoint in it is continued.
    eval_rounds: round → whether to evaluate; default every
      `config.run.eval_every` rounds and the last round.
    desc: progress-bar label.
  """
  process = algorithm.process
  # Keras' global state (layer names, graphs) grows with every model a long
  # comparison builds; the models of earlier runs are not used any more.
  tf.keras.backend.clear_session()
  if eval_rounds is None:
    eval_rounds = lambda r: (r % config.run.eval_every == 0 or
                             r == config.run.rounds)
  state, start, manager = _start(config, algorithm, writer)
  rows = list(writer.rows) if writer is not None else []
  keras_model = algorithm.keras_model_fn()
  progress = _Progress(config.run.progress, config.run.rounds, start, desc)
  best = max((r.get(f'{data.evaluation_prefix}/{FUSION}/accuracy') or 0.0
              for r in rows), default=0.0)
  try:
    for round_num in range(start + 1, config.run.rounds + 1):
      clients = sample_clients(algorithm.client_ids,
                               config.run.clients_per_round, config.run.seed,
                               round_num)
      round_data = [algorithm.client_data(c, round_num) for c in clients]
      started = time.perf_counter()
      output = process.next(state, round_data)
      seconds = time.perf_counter() - started
      state = output.state
      row = {results.ROUND: round_num, results.SECONDS: seconds,
             'clients': len(clients)}
      row.update(flatten_process_metrics(output.metrics))
      postfix = collections.OrderedDict()
      if eval_rounds(round_num):
        row.update(_evaluate(keras_model, process, state, data))
        accuracy = row[f'{data.evaluation_prefix}/{FUSION}/accuracy']
        if math.isfinite(accuracy):
          best = max(best, accuracy)
          postfix[data.evaluation_prefix[:4]] = f'{accuracy:.3f}'
      postfix['best'] = f'{best:.3f}'
      train_loss = row.get(f'train/{FUSION}/loss')
      if train_loss is not None:
        postfix['loss'] = f'{train_loss:.3f}'
      rows.append(row)
      if writer is not None:
        writer.append(row)
        if (round_num % config.run.checkpoint_every == 0 or
            round_num == config.run.rounds):
          _save_state(manager, writer.path(results.STATE_DIR), state,
                      round_num)
      progress.update(postfix)
  finally:
    progress.close()
  return state, rows


def _start(config: config_lib.ExperimentConfig,
           algorithm: registry.Algorithm,
           writer: Optional[results.RunWriter]):
  """(state, rounds done, checkpoint manager or None) a run starts from.

  With a writer, the newest readable checkpoint when resuming (the rows and
  states after it are dropped, so those rounds are redone); else, or when
  there is none, the initial state.
  """
  state, start, manager = None, 0, None
  if writer is not None:
    state_dir = writer.path(results.STATE_DIR)
    manager = tff.program.FileProgramStateManager(
        state_dir, keep_total=KEEP_STATES, keep_first=False)
    if config.run.resume:
      state, start = _load_state(manager, algorithm)
    _remove_states_after(state_dir, start)
    writer.truncate(start)
  if state is None:
    state = caches.initial_state(algorithm, config)
  return state, start, manager


def _evaluate(keras_model, process, state, data: caches.ExperimentData
              ) -> dict[str, float]:
  """The row's evaluation columns: eval_seconds, <prefix>/<head>/<metric>."""
  started = time.perf_counter()
  evaluated = evaluation.evaluate(keras_model,
                                  process.get_model_weights(state),
                                  data.evaluation_set)
  columns = {'eval_seconds': time.perf_counter() - started}
  for key, value in evaluated.items():
    columns[f'{data.evaluation_prefix}/{key}'] = float(value)
  return columns


def missing_modality_accuracy(algorithm: registry.Algorithm, state,
                              test: dataset_lib.MultiModalDataset
                              ) -> dict[str, float]:
  """Test fusion accuracy with each modality dropped in turn (≥ 2 of them)."""
  names = [m.name for m in algorithm.federated_data.modalities]
  if len(names) < 2:
    return {}
  keras_model = algorithm.keras_model_fn()
  weights = algorithm.process.get_model_weights(state)
  return {m: float(evaluation.evaluate(keras_model, weights, test,
                                       drop_modality=m)[f'{FUSION}/accuracy'])
          for m in names}
