"""Values of the in-process interpreter, by TFF type: flatten, pack, convert.

Federated: the value (SERVER) or a list (CLIENTS); structs: `structure.Struct`;
sequences: `tf.data.Dataset`. `ingest`/`export` convert at the context's edge.
"""

from __future__ import annotations

import collections
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_hgb.runtime.inprocess import _tff_internals
from tff_hgb.runtime.inprocess._tff_internals import computation_types
from tff_hgb.runtime.inprocess._tff_internals import placements
from tff_hgb.runtime.inprocess._tff_internals import structure

_TensorType = computation_types.TensorType
_SequenceType = computation_types.SequenceType
_StructType = computation_types.StructType
_FederatedType = computation_types.FederatedType


class UnsupportedComputationError(NotImplementedError):
  """The computation uses a construct this context does not interpret."""


def tf_dtype(tensor_type: computation_types.TensorType) -> tf.DType:
  if np.dtype(tensor_type.dtype).type in (np.str_, np.bytes_, np.object_):
    return tf.string
  return tf.as_dtype(tensor_type.dtype)


def leaf_types(type_spec) -> list[computation_types.Type]:
  if type_spec is None:
    return []
  if isinstance(type_spec, _StructType):
    return [leaf for _, t in structure.iter_elements(type_spec)
            for leaf in leaf_types(t)]
  if isinstance(type_spec, (_TensorType, _SequenceType)):
    return [type_spec]
  raise UnsupportedComputationError(
      f'A TensorFlow computation with a value of type {type_spec}.')


def element_at(value, index: int, name: Optional[str]):
  if isinstance(value, structure.Struct):
    return value[index]
  if isinstance(value, collections.abc.Mapping):
    return value[name] if name is not None else list(value.values())[index]
  if isinstance(value, (list, tuple)):
    return value[index]
  return structure.from_container(value)[index]


def flatten(type_spec, value) -> list[object]:
  if isinstance(type_spec, _StructType):
    out = []
    for index, (name, element_type) in enumerate(
        structure.iter_elements(type_spec)):
      out.extend(flatten(element_type, element_at(value, index, name)))
    return out
  return [value]


def pack(type_spec, leaves: collections.abc.Iterator, leaf_fn=None):
  if isinstance(type_spec, _StructType):
    return structure.Struct([(name, pack(t, leaves, leaf_fn))
                             for name, t in structure.iter_elements(type_spec)])
  leaf = next(leaves)
  return leaf_fn(type_spec, leaf) if leaf_fn else leaf


def struct_of(type_spec: computation_types.StructType,
              values) -> structure.Struct:
  names = [name for name, _ in structure.iter_elements(type_spec)]
  return structure.Struct(list(zip(names, values)))


def dataset_from_variant(variant, element_type):
  with tf.device('/device:CPU:0'):
    return tf.data.experimental.from_variant(
        variant, structure=_tff_internals.type_to_tf_structure(element_type))


def _to_tf_structure(value, type_spec):
  """An internal value → the nested Python structure tf.data expects."""
  if isinstance(type_spec, _StructType):
    elements = [(name, _to_tf_structure(element_at(value, i, name), t))
                for i, (name, t) in enumerate(structure.iter_elements(type_spec))]
    container = getattr(type_spec, 'python_container', None)
    if all(name for name, _ in elements) and elements:
      as_dict = collections.OrderedDict(elements)
      if container is not None and container is not collections.OrderedDict:
        try:
          return container(**as_dict)
        except TypeError:
          pass
      return as_dict
    return tuple(v for _, v in elements)
  return value


def from_tf_structure(value, type_spec):
  """A dataset element (nested dicts/tuples) → an internal Struct."""
  if isinstance(type_spec, _StructType):
    return structure.Struct([
        (name, from_tf_structure(element_at(value, i, name), t))
        for i, (name, t) in enumerate(structure.iter_elements(type_spec))])
  return value


def dataset_from_elements(elements: list, element_type) -> tf.data.Dataset:
  if not elements:
    return _tff_internals.make_data_set_from_elements(None, [], element_type)
  signature = tf.nest.map_structure(
      lambda s: tf.TensorSpec(s.shape, s.dtype),
      _tff_internals.type_to_tf_structure(element_type))
  materialised = [_to_tf_structure(e, element_type) for e in elements]
  return tf.data.Dataset.from_generator(lambda: iter(materialised),
                                        output_signature=signature)


def leafwise(fn, *values):
  first = values[0]
  if isinstance(first, structure.Struct):
    return structure.Struct([
        (name, leafwise(fn, *[v[i] for v in values]))
        for i, (name, _) in enumerate(structure.iter_elements(first))])
  return fn(*values)


def zeros(type_spec, num_clients: int):
  if isinstance(type_spec, _TensorType):
    if not type_spec.is_fully_defined():
      raise UnsupportedComputationError(
          f'Cannot make a zero of the not fully defined type {type_spec}.')
    return np.zeros(type_spec.shape, type_spec.dtype)
  if isinstance(type_spec, _StructType):
    return struct_of(type_spec, [zeros(t, num_clients)
                                 for _, t in structure.iter_elements(type_spec)])
  if isinstance(type_spec, _FederatedType):
    member = zeros(type_spec.member, num_clients)
    if type_spec.placement is placements.CLIENTS:
      return [member] * num_clients
    return member
  raise UnsupportedComputationError(f'Cannot make a zero of type {type_spec}.')


def add(a, b):
  return leafwise(tf.add, a, b)


def _to_numpy(value):
  if isinstance(value, structure.Struct):
    return structure.Struct([(n, _to_numpy(v))
                             for n, v in structure.iter_elements(value)])
  if isinstance(value, list):
    return [_to_numpy(v) for v in value]
  if isinstance(value, tf.data.Dataset):
    return value
  if isinstance(value, (tf.Tensor, tf.Variable)):
    return value.numpy()
  return value


def ingest(value, type_spec, num_clients: int):
  """A Python argument → the internal representation of `type_spec`."""
  if isinstance(type_spec, _FederatedType):
    if type_spec.all_equal:
      member = ingest(value, type_spec.member, num_clients)
      if type_spec.placement is placements.CLIENTS:
        return [member] * num_clients
      return member
    if not isinstance(value, (list, tuple)):
      raise TypeError(f'Expected a list of client values for {type_spec}, got '
                      f'{type(value).__name__}.')
    return [ingest(v, type_spec.member, num_clients) for v in value]
  if isinstance(type_spec, _StructType):
    elements = structure.to_elements(structure.from_container(value))
    type_elements = structure.to_elements(type_spec)
    if len(elements) != len(type_elements):
      raise TypeError(f'A value with {len(elements)} elements cannot be a '
                      f'{type_spec}.')
    return structure.Struct([
        (name, ingest(v, t, num_clients))
        for (_, v), (name, t) in zip(elements, type_elements)])
  if isinstance(type_spec, _SequenceType):
    if isinstance(value, tf.data.Dataset):
      return value
    if isinstance(value, (list, tuple)):
      return _tff_internals.make_data_set_from_elements(
          None, list(value), type_spec.element)
    raise TypeError(f'Expected a tf.data.Dataset for {type_spec}, got '
                    f'{type(value).__name__}.')
  if isinstance(type_spec, _TensorType):
    if isinstance(value, tf.Variable):
      value = value.read_value()
    if isinstance(value, tf.Tensor):
      return tf.cast(value, tf_dtype(type_spec))
    if tf_dtype(type_spec) == tf.string:
      return tf.constant(value, tf.string)
    return np.asarray(value, type_spec.dtype)
  raise UnsupportedComputationError(
      f'The in-process context cannot take an argument of type {type_spec}.')


def export(value, type_spec):
  """An internal result → numpy / Struct / list, as TFF's runtime returns."""
  if isinstance(type_spec, _FederatedType):
    if type_spec.placement is placements.CLIENTS:
      if type_spec.all_equal:
        return export(value[0], type_spec.member) if value else None
      return [export(v, type_spec.member) for v in value]
    return export(value, type_spec.member)
  if isinstance(type_spec, _StructType):
    return structure.Struct([
        (name, export(element_at(value, i, name), t))
        for i, (name, t) in enumerate(structure.iter_elements(type_spec))])
  return _to_numpy(value)
