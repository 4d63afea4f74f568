"""The JAX compiler of the neutral expression graph: a :class:`pyneuralode.Dynamics` as one more layer.

:func:`compile_dynamics` is registered with the field compiler (:mod:`._field`), so a ``Dynamics`` field goes
through the same ``JaxProgram`` as an MLP. Ops run through :data:`JAX_OPS`, which is the graph's NumPy definition
with ``jax.numpy`` in place of ``numpy`` (the graph's semantics are NumPy's, and ``jax.numpy`` implements them);
a ``call`` node runs its network through :func:`._field.compile_tensors`, the ordinary layer compiler. The graph
describes one sample; ``jax.vmap`` maps it over the batch axis the program always adds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..._dynamics import Dynamics
from ..._graph import evaluate, namespace_ops, register_namespace
from ..._params import param_layout
from ._field import compile_tensors, register_layer, tensor_plan

JAX_OPS = namespace_ops(jnp)
"""``op -> fn(node, *values)`` for every non-leaf graph op."""

register_namespace(jnp, JAX_OPS, lambda array, like: jnp.asarray(
    array, dtype=like.dtype if array.dtype.kind == "f" else bool))  # losses (pn.loss) run on these ops too


def compile_dynamics(layer: Dynamics):
    """``apply(tensors, t, y)`` with ``y`` of shape ``(batch, *state)``; ``tensors`` are the declared parameters
    packed in one flat vector (when there are any; the layer is registered ``packed``), then each network's
    tensors (the canonical order). Each parameter is a static slice of the packed vector, which fuses into the
    elementwise maths that reads it."""
    own, offset = {}, 0
    for name, value in layer.params:
        own[name] = (offset, offset + value.array.size, value.array.shape)
        offset += value.array.size
    nets, weights, start = {}, {}, 1 if layer.params else 0
    for name, net in layer.nets:
        count = len(tensor_plan(net)[0])
        nets[name] = (compile_tensors(net), start, start + count)
        weights.update((f"{name}.{slot.name}", start + k) for k, slot in enumerate(param_layout(net)))
        start += count
    constants = dict(layer.constants)

    def one_sample(tensors, t, u):
        def leaf(node, args):
            op = node.op
            if op == "time":
                return t
            if op == "state":
                return u
            if op == "param":
                if node.attr("name") in weights:  # a network's weight (pn.grad expands networks into ops)
                    return tensors[weights[node.attr("name")]]
                a, b, shape = own[node.attr("name")]
                return tensors[0][a:b].reshape(shape)
            if op == "call":
                apply, a, b = nets[node.attr("net")]
                return apply(tensors[a:b], t, args[0][None])[0]  # the layer compilers take a batch axis
            value = (constants[node.attr("name")] if op == "constant" else node.attr("value")).array
            return jnp.asarray(value, dtype=u.dtype if value.dtype.kind == "f" else bool)

        return evaluate(layer.graph, leaf, JAX_OPS)

    def apply(tensors, t, y):
        t = jnp.asarray(t, dtype=y.dtype)
        return jax.vmap(one_sample, in_axes=(None, None, 0))(tensors, t, y)

    return apply


register_layer(Dynamics, compile_dynamics, packed=True)
