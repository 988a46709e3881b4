"""What a dataset in a client's value costs TFF (runtimes section).

A federated_map that only counts examples, for three value forms.
"""

from __future__ import annotations

import collections
import time

import tensorflow as tf
import tensorflow_federated as tff

from tff_hgb.benchmarking import harness as harness_lib
from tff_hgb.benchmarking import instruments

_METHOD = (
    'TFF runtime, one federated_map over the round\'s clients of '
    'a computation that counts the elements of each client\'s '
    'datasets: train only; HGB\'s train + one-element held_out '
    'dataset; train + probe and val as datasets of their own '
    '(HGB\'s former form). Per extra dataset = (train_val_probe '
    '- train_only) / (2 x clients); the held-out saving = '
    '(train_val_probe - train_held_out) / clients.')

# Each form from a client's HGB value, built only for its own turn.
_FORMS = collections.OrderedDict(
    train_only=lambda value: value['train'],
    train_held_out=lambda value: value,
    train_val_probe=lambda value: collections.OrderedDict(
        train=value['train'],
        **{part: tf.data.Dataset.from_tensors(batch) for part, batch in
           value['held_out'].get_single_element().items()}))


def _value_types(batch_type):
  """form name → TFF type of one client's value in that form."""
  sequence = tff.SequenceType(batch_type)
  held_out = tff.SequenceType(tff.types.StructWithPythonType(
      [('probe', batch_type), ('val', batch_type)], collections.OrderedDict))
  return collections.OrderedDict(
      train_only=sequence,
      train_held_out=collections.OrderedDict(train=sequence,
                                             held_out=held_out),
      train_val_probe=collections.OrderedDict(train=sequence, val=sequence,
                                              probe=sequence))


def _counting_maps(types):
  """form name → federated computation: the sum over clients of the elements
  of every dataset in a client's value."""

  @tf.function
  def count(dataset):
    total = tf.constant(0, tf.int64)
    for _ in iter(dataset):
      total += 1
    return total

  def mapped(value_type):
    @tff.tensorflow.computation(value_type)
    def count_all(value):
      return tf.add_n([count(d) for d in tf.nest.flatten(value)])

    @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
    def map_clients(values):
      return tff.federated_sum(tff.federated_map(count_all, values))
    return map_clients

  return collections.OrderedDict(
      (name, mapped(value_type)) for name, value_type in types.items())


def measure(bench: harness_lib.Harness, ids, data_fn):
  """What each dataset in a client's value costs the TFF runtime.

  One federated_map over the round's clients of a computation that only
  counts examples, interleaved, for three forms of each client's value:
  its training dataset alone; HGB's client data (train + the one-element
  held-out dataset); and the same held-out sets as two datasets of their
  own (HGB's former train/val/probe form). The differences are the
  runtime's cost of moving and rebuilding a dataset, with almost no
  arithmetic.
  """
  sample = data_fn(ids[0], 0)
  batch_type = tff.types.tensorflow_to_type(sample['train'].element_spec)
  computations = _counting_maps(_value_types(batch_type))
  round_num = iter(range(10**9))

  def timed(name):
    def measure_once():
      data = [_FORMS[name](data_fn(cid, next(round_num))) for cid in ids]
      start = time.perf_counter()
      computations[name](data)
      return time.perf_counter() - start
    return measure_once

  times = instruments.interleave(
      collections.OrderedDict((name, timed(name)) for name in computations),
      repeats=bench.settings.repeats, warmup=bench.settings.warmup)

  def per_dataset(more, fewer, extra_datasets):
    return instruments.summarize(
        [(b - a) / (extra_datasets * len(ids))
         for a, b in zip(times[fewer], times[more])], digits=5)

  return collections.OrderedDict(
      round_s=collections.OrderedDict(
          (name, instruments.summarize(values))
          for name, values in times.items()),
      seconds_per_extra_dataset_per_client=per_dataset(
          'train_val_probe', 'train_only', 2),
      held_out_saving_per_client=per_dataset(
          'train_val_probe', 'train_held_out', 1),
      method=_METHOD)
