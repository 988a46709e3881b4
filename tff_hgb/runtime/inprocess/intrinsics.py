"""The federated intrinsics of TFF 0.87 on the interpreter's values.

Each implementation maps (invocation, intrinsic type, argument) to a value;
`IMPLEMENTATIONS` covers every intrinsic TFF defines (`SUPPORTED_INTRINSICS`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from tff_hgb.runtime.inprocess import tf_functions
from tff_hgb.runtime.inprocess import value_utils
from tff_hgb.runtime.inprocess._tff_internals import computation_types
from tff_hgb.runtime.inprocess._tff_internals import intrinsic_defs
from tff_hgb.runtime.inprocess._tff_internals import placements
from tff_hgb.runtime.inprocess._tff_internals import structure

_StructType = computation_types.StructType
_FederatedType = computation_types.FederatedType


SUPPORTED_INTRINSICS = frozenset(
    d.uri for d in vars(intrinsic_defs).values()
    if isinstance(d, intrinsic_defs.IntrinsicDef))


class BoundIntrinsic:
  """An intrinsic's implementation bound to its type and invocation."""

  __slots__ = ('_implementation', '_type', '_invocation')
  inline = False

  def __init__(self, implementation, type_signature, invocation):
    self._implementation = implementation
    self._type = type_signature
    self._invocation = invocation

  def __call__(self, arg=None):
    return self._implementation(self._invocation, self._type, arg)


# Intrinsic implementations: (invocation, intrinsic type, argument) -> value.


def _federated_map(inv, type_signature, arg):
  del type_signature
  return inv.context._map_clients(arg[0], list(arg[1]))  # pylint: disable=protected-access


def _federated_apply(inv, type_signature, arg):
  del inv, type_signature
  return arg[0](arg[1])


def _federated_broadcast(inv, type_signature, arg):
  del type_signature
  return [arg] * inv.num_clients


def _federated_value(inv, type_signature, arg):
  if type_signature.result.placement is placements.CLIENTS:
    return [arg] * inv.num_clients
  return arg


def _federated_eval(inv, type_signature, arg):
  if type_signature.result.placement is placements.CLIENTS:
    return inv.context._map_clients(lambda _: arg(), [None] * inv.num_clients)  # pylint: disable=protected-access
  return arg()


def _zip(value, type_spec, client: Optional[int]):
  if isinstance(type_spec, _FederatedType):
    if client is not None and type_spec.placement is placements.CLIENTS:
      return value[client]
    return value
  if isinstance(type_spec, _StructType):
    return value_utils.struct_of(type_spec, [
        _zip(value_utils.element_at(value, i, name), t, client)
        for i, (name, t) in enumerate(structure.iter_elements(type_spec))])
  return value


def _federated_zip_at_clients(inv, type_signature, arg):
  return [_zip(arg, type_signature.parameter, i)
          for i in range(inv.num_clients)]


def _federated_zip_at_server(inv, type_signature, arg):
  del inv
  return _zip(arg, type_signature.parameter, None)


def _federated_aggregate(inv, type_signature, arg):
  del inv
  values, accumulator, accumulate, _, report = (arg[i] for i in range(5))
  values = list(values)
  if isinstance(accumulate, tf_functions.BoundTensorFlow):
    folded = accumulate.fold(accumulator, values)
    if folded is not None:
      return report(folded)
  pair_type = type_signature.parameter[2].parameter
  for value in values:
    accumulator = accumulate(
        value_utils.struct_of(pair_type, [accumulator, value]))
  return report(accumulator)


def _sum_of(values, member_type, num_clients):
  if not values:
    return value_utils.zeros(member_type, num_clients)
  total = values[0]
  for value in values[1:]:
    total = value_utils.add(total, value)
  return total


def _federated_sum(inv, type_signature, arg):
  return _sum_of(list(arg), type_signature.result.member, inv.num_clients)


def _federated_secure_sum(inv, type_signature, arg):
  return _sum_of(list(arg[0]), type_signature.result.member, inv.num_clients)


def _federated_mean(inv, type_signature, arg):
  del inv, type_signature
  count = len(arg)
  total = _sum_of(list(arg), None, 0)
  return value_utils.leafwise(
      lambda t: tf.math.divide(t, tf.cast(count, t.dtype)), total)


def _federated_weighted_mean(inv, type_signature, arg):
  del inv, type_signature
  values, weights = list(arg[0]), list(arg[1])
  weighted = [
      value_utils.leafwise(
          lambda v, w=w: tf.multiply(v, tf.cast(w, v.dtype)), v)
      for v, w in zip(values, weights)]
  total = _sum_of(weighted, None, 0)
  weight = tf.add_n([tf.convert_to_tensor(w) for w in weights])
  return value_utils.leafwise(
      lambda t: tf.math.divide_no_nan(t, tf.cast(weight, t.dtype)), total)


def _extremum(op):
  def fn(inv, type_signature, arg):
    del inv, type_signature
    values = list(arg)
    result = values[0]
    for value in values[1:]:
      result = value_utils.leafwise(op, result, value)
    return result
  return fn


def _federated_select(inv, type_signature, arg):
  keys, _, server_value, select_fn = (arg[i] for i in range(4))
  pair_type = type_signature.parameter[3].parameter
  element_type = type_signature.result.member.element

  def client(client_keys):
    elements = [select_fn(value_utils.struct_of(pair_type, [server_value, key]))
                for key in np.asarray(client_keys).reshape(-1)]
    return value_utils.dataset_from_elements(elements, element_type)

  return inv.context._map_clients(client, list(keys))  # pylint: disable=protected-access


def _sequence_reduce(inv, type_signature, arg):
  del inv
  dataset, accumulator, op = arg[0], arg[1], arg[2]
  element_type = type_signature.parameter[0].element
  pair_type = type_signature.parameter[2].parameter
  for element in dataset:
    accumulator = op(value_utils.struct_of(
        pair_type,
        [accumulator, value_utils.from_tf_structure(element, element_type)]))
  return accumulator


def _sequence_sum(inv, type_signature, arg):
  element_type = type_signature.parameter.element
  total = value_utils.zeros(element_type, inv.num_clients)
  for element in arg:
    total = value_utils.add(
        total, value_utils.from_tf_structure(element, element_type))
  return total


def _sequence_map(inv, type_signature, arg):
  del inv
  fn, dataset = arg[0], arg[1]
  element_type = type_signature.parameter[1].element
  results = [fn(value_utils.from_tf_structure(e, element_type))
             for e in dataset]
  return value_utils.dataset_from_elements(results,
                                           type_signature.result.element)


def _generic(op):
  def fn(inv, type_signature, arg):
    del inv, type_signature
    return value_utils.leafwise(op, arg[0], arg[1])
  return fn


IMPLEMENTATIONS = {
    intrinsic_defs.FEDERATED_AGGREGATE.uri: _federated_aggregate,
    intrinsic_defs.FEDERATED_APPLY.uri: _federated_apply,
    intrinsic_defs.FEDERATED_BROADCAST.uri: _federated_broadcast,
    intrinsic_defs.FEDERATED_EVAL_AT_CLIENTS.uri: _federated_eval,
    intrinsic_defs.FEDERATED_EVAL_AT_SERVER.uri: _federated_eval,
    intrinsic_defs.FEDERATED_MAP.uri: _federated_map,
    intrinsic_defs.FEDERATED_MAP_ALL_EQUAL.uri: _federated_map,
    intrinsic_defs.FEDERATED_MAX.uri: _extremum(tf.maximum),
    intrinsic_defs.FEDERATED_MEAN.uri: _federated_mean,
    intrinsic_defs.FEDERATED_MIN.uri: _extremum(tf.minimum),
    intrinsic_defs.FEDERATED_SECURE_SELECT.uri: _federated_select,
    intrinsic_defs.FEDERATED_SECURE_SUM.uri: _federated_secure_sum,
    intrinsic_defs.FEDERATED_SECURE_SUM_BITWIDTH.uri: _federated_secure_sum,
    intrinsic_defs.FEDERATED_SELECT.uri: _federated_select,
    intrinsic_defs.FEDERATED_SUM.uri: _federated_sum,
    intrinsic_defs.FEDERATED_VALUE_AT_CLIENTS.uri: _federated_value,
    intrinsic_defs.FEDERATED_VALUE_AT_SERVER.uri: _federated_value,
    intrinsic_defs.FEDERATED_WEIGHTED_MEAN.uri: _federated_weighted_mean,
    intrinsic_defs.FEDERATED_ZIP_AT_CLIENTS.uri: _federated_zip_at_clients,
    intrinsic_defs.FEDERATED_ZIP_AT_SERVER.uri: _federated_zip_at_server,
    intrinsic_defs.GENERIC_DIVIDE.uri: _generic(tf.math.divide),
    intrinsic_defs.GENERIC_MULTIPLY.uri: _generic(tf.multiply),
    intrinsic_defs.GENERIC_PLUS.uri: _generic(tf.add),
    # A value, not a function: see interpreter.Program._compile.
    intrinsic_defs.GENERIC_ZERO.uri: None,
    intrinsic_defs.SEQUENCE_MAP.uri: _sequence_map,
    intrinsic_defs.SEQUENCE_REDUCE.uri: _sequence_reduce,
    intrinsic_defs.SEQUENCE_SUM.uri: _sequence_sum,
}
assert set(IMPLEMENTATIONS) == SUPPORTED_INTRINSICS, (
    sorted(SUPPORTED_INTRINSICS ^ set(IMPLEMENTATIONS)))
