"""GraphDef surgery for importing TFF's TensorFlow computations in one process.

Renames a computation's library functions (all imports share one function
library), and imports its graph with flat inputs and uniquified shared names.
"""

from __future__ import annotations

import tensorflow as tf

from tff_hgb.runtime.inprocess import _tff_internals


def rename_functions(graph_def, suffix: str) -> None:
  """Renames (in place) the functions of a graph's library, and their uses.

  All imports share this process's one function library. Two TFF computations
  may each carry a function of the same name (e.g. `__inference_reduce_fn_N`)
  with different bodies, which TensorFlow refuses ("Attempting to add a
  duplicate function ... definitions differ"); the C++ runtime is immune as it
  gives each computation its own session. `suffix` is derived from the
  computation's proto, so imports of the same computation stay identical.
  """
  mapping = {f.signature.name: f'{f.signature.name}_{suffix}'
             for f in graph_def.library.function}
  if not mapping:
    return

  def fix_attr(value):
    if value.HasField('func'):
      fix_name_attr_list(value.func)
    if value.HasField('list'):
      for func in value.list.func:
        fix_name_attr_list(func)

  def fix_name_attr_list(func):
    if func.name in mapping:
      func.name = mapping[func.name]
    for nested in func.attr.values():
      fix_attr(nested)

  def fix_node(node):
    if node.op in mapping:
      node.op = mapping[node.op]
    for value in node.attr.values():
      fix_attr(value)

  for node in graph_def.node:
    fix_node(node)
  for function in graph_def.library.function:
    function.signature.name = mapping[function.signature.name]
    for node in function.node_def:
      fix_node(node)
    for value in function.attr.values():
      fix_attr(value)
  for gradient in graph_def.library.gradient:
    gradient.function_name = mapping.get(gradient.function_name,
                                         gradient.function_name)
    gradient.gradient_func = mapping.get(gradient.gradient_func,
                                         gradient.gradient_func)


def import_graph(tf_proto, graph_def, inputs: list, suffix: str, token):
  """Imports a TFF TensorFlow computation into the current graph.

  What `tensorflow_utils.deserialize_and_call_tf_computation` does, on flat
  inputs (a dataset as its variant tensor), without its check of the outputs'
  static shapes against the declared type: after the compiler's Grappler pass,
  function-call outputs of TFF's own learning computations come back with less
  specific shapes, and that check rejects them (the C++ runtime does not check).

  Args:
    tf_proto: the computation's `pb.TensorFlow`.
    graph_def: its graph (functions renamed); not modified.
    inputs: flat input tensors in the order of the flattened parameter type.
    suffix: appended to the shared names of resources (unique per import).
    token: string tensor fed to the session token placeholder.

  Returns:
    (initializer op or None, flat list of output tensors; variants for
    sequences), in the order of the computation's flattened result type.
  """
  input_map = {}
  if tf_proto.HasField('parameter'):
    names = _tff_internals.extract_tensor_names_from_binding(
        tf_proto.parameter)
    if len(names) != len(inputs):
      raise ValueError(f'Expected {len(names)} inputs, got {len(inputs)}.')
    input_map = _tff_internals.add_control_dep_mappings(
        dict(zip(names, inputs)))
  if tf_proto.session_token_tensor_name:
    input_map[tf_proto.session_token_tensor_name] = token
  output_names = _tff_internals.extract_tensor_names_from_binding(
      tf_proto.result)
  return_elements = list(output_names)
  if tf_proto.initialize_op:
    return_elements.append(tf_proto.initialize_op)
  graph_def = _tff_internals.uniquify_shared_names_with_suffix(
      _copy(graph_def), suffix)
  imported = tf.graph_util.import_graph_def(
      graph_def, input_map, return_elements, name='subcomputation')
  init_op = imported[len(output_names)] if tf_proto.initialize_op else None
  return init_op, list(imported[:len(output_names)])


def _copy(graph_def):
  copy = type(graph_def)()
  copy.CopyFrom(graph_def)
  return copy


def inputs_needed(fetch, inputs: list) -> list[int]:
  """Indices of the `inputs` tensors that op `fetch` depends on."""
  wanted = {tensor.op: index for index, tensor in enumerate(inputs)}
  needed, seen, stack = set(), set(), [fetch]
  while stack:
    op = stack.pop()
    if op in seen:
      continue
    seen.add(op)
    if op in wanted:
      needed.add(wanted[op])
    stack.extend(t.op for t in op.inputs)
    stack.extend(op.control_inputs)
  return sorted(needed)
