"""The interpreter: a compiled building block turned once into nested closures.

`Program` evaluates references, selections, structs, calls, lambdas, blocks,
literals, intrinsics and TensorFlow computations in scopes of Python values.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tff_hgb.runtime.inprocess import intrinsics
from tff_hgb.runtime.inprocess import tf_functions
from tff_hgb.runtime.inprocess import value_utils
from tff_hgb.runtime.inprocess._tff_internals import building_blocks
from tff_hgb.runtime.inprocess._tff_internals import computation_types
from tff_hgb.runtime.inprocess._tff_internals import intrinsic_defs
from tff_hgb.runtime.inprocess._tff_internals import structure


class Invocation:
  """One call of a program: the context running it, its CLIENTS cardinality."""

  __slots__ = ('context', 'num_clients')

  def __init__(self, context, num_clients: int):
    self.context = context
    self.num_clients = num_clients


class _Scope:
  __slots__ = ('_names', '_parent')

  def __init__(self, parent: Optional['_Scope'] = None):
    self._names = {}
    self._parent = parent

  def bind(self, name, value):
    self._names[name] = value

  def lookup(self, name):
    scope = self
    while scope is not None:
      if name in scope._names:  # pylint: disable=protected-access
        return scope._names[name]  # pylint: disable=protected-access
      scope = scope._parent  # pylint: disable=protected-access
    raise value_utils.UnsupportedComputationError(
        f'Unbound reference {name!r}.')


class _Closure:
  """A building-block lambda bound to its scope."""

  __slots__ = ('_body', '_parameter', '_scope', '_invocation', 'inline')

  def __init__(self, body, parameter, scope, invocation, inline):
    self._body = body
    self._parameter = parameter
    self._scope = scope
    self._invocation = invocation
    # Structural only (no call): cheaper to run than to hand to a thread.
    self.inline = inline

  def __call__(self, arg=None):
    scope = _Scope(self._scope)
    if self._parameter is not None:
      scope.bind(self._parameter, arg)
    return self._body(scope, self._invocation)


def _eta_reduced(lam) -> Optional[building_blocks.CompiledComputation]:
  """The computation c if `lam` is (x -> c(x)) or (x -> let y=c(x) in y)."""
  bb = building_blocks
  body = lam.result
  if isinstance(body, bb.Block) and len(body.locals) == 1:
    (name, value), result = body.locals[0], body.result
    if not (isinstance(result, bb.Reference) and result.name == name):
      return None
    body = value
  if (isinstance(body, bb.Call) and
      isinstance(body.function, bb.CompiledComputation) and
      isinstance(body.argument, bb.Reference) and
      body.argument.name == lam.parameter_name):
    return body.function
  return None


def _contains_call(comp) -> bool:
  if isinstance(comp, (building_blocks.Call, building_blocks.CompiledComputation,
                       building_blocks.Intrinsic)):
    return True
  return any(_contains_call(c) for c in comp.children())


class Program:
  """A compiled building block as nested closures."""

  def __init__(self, comp: building_blocks.ComputationBuildingBlock):
    self.type_signature = comp.type_signature
    self._fn = self._compile(comp)

  def __call__(self, invocation: Invocation, arg):
    value = self._fn(_Scope(), invocation)
    if not isinstance(self.type_signature, computation_types.FunctionType):
      return value
    return value(arg)

  def _compile(self, comp):  # pylint: disable=too-many-return-statements
    bb = building_blocks
    if isinstance(comp, bb.Reference):
      name = comp.name
      return lambda scope, inv: scope.lookup(name)
    if isinstance(comp, bb.Selection):
      source, index = self._compile(comp.source), comp.as_index()
      return lambda scope, inv: value_utils.element_at(
          source(scope, inv), index, None)
    if isinstance(comp, bb.Struct):
      names = [name for name, _ in structure.iter_elements(comp)]
      elements = [self._compile(e) for _, e in structure.iter_elements(comp)]
      return lambda scope, inv: structure.Struct(
          list(zip(names, [e(scope, inv) for e in elements])))
    if isinstance(comp, bb.Call):
      function = self._compile(comp.function)
      if comp.argument is None:
        return lambda scope, inv: function(scope, inv)()
      argument = self._compile(comp.argument)
      return lambda scope, inv: function(scope, inv)(argument(scope, inv))
    if isinstance(comp, bb.Lambda):
      wrapped = _eta_reduced(comp)
      if wrapped is not None:
        # (x -> comp(x)) is comp itself; as such, `federated_aggregate` can
        # fold its clients in one call (`tf_functions.BoundTensorFlow.fold`).
        return self._compile(wrapped)
      body, parameter = self._compile(comp.result), comp.parameter_name
      inline = not _contains_call(comp.result)
      return lambda scope, inv: _Closure(body, parameter, scope, inv, inline)
    if isinstance(comp, bb.Block):
      bindings = [(name, self._compile(value)) for name, value in comp.locals]
      result = self._compile(comp.result)

      def block(scope, inv):
        inner = _Scope(scope)
        for name, value in bindings:
          inner.bind(name, value(inner, inv))
        return result(inner, inv)

      return block
    if isinstance(comp, bb.Intrinsic):
      if comp.uri not in intrinsics.IMPLEMENTATIONS:
        raise value_utils.UnsupportedComputationError(
            f'Intrinsic {comp.uri!r} is not supported by the in-process '
            'context.')
      implementation = intrinsics.IMPLEMENTATIONS[comp.uri]
      type_signature = comp.type_signature
      if comp.uri == intrinsic_defs.GENERIC_ZERO.uri:
        return lambda scope, inv: value_utils.zeros(type_signature,
                                                    inv.num_clients)
      return lambda scope, inv: intrinsics.BoundIntrinsic(
          implementation, type_signature, inv)
    if isinstance(comp, bb.CompiledComputation):
      function = tf_functions.tensorflow_function(comp)
      return lambda scope, inv: tf_functions.BoundTensorFlow(
          function, inv.context)
    if isinstance(comp, bb.Literal):
      value = np.asarray(comp.value, comp.type_signature.dtype)
      return lambda scope, inv: value
    if isinstance(comp, bb.Placement):
      return lambda scope, inv: comp
    raise value_utils.UnsupportedComputationError(
        f'The in-process context cannot evaluate a {type(comp).__name__} '
        f'building block ({comp.compact_representation()[:200]}).')
