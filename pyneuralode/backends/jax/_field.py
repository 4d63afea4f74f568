"""The JAX compiler of the neutral graph: any spec (an MLP, a conv net, a CNF's field, a ``pn.dynamics`` field, an
event condition) to a pure function ``field(params_flat, t, y) -> dy/dt``.

A spec is compiled through its graph (:func:`pyneuralode._numpy_layers.layer_graph`, one sample), which is made
when the function is first traced, for the sample shape it meets. The graph's ops run as :data:`JAX_OPS`, the
graph's NumPy definition with ``jax.numpy`` in place of ``numpy``; the batch is added op by op: an op whose
inputs carry the batch axis is ``jax.vmap``-ed over it (which writes the same XLA program as mapping the whole
graph), except the layer ops, which run their batched kernels directly — a ``vmap``-ed convolution would become a
grouped one (see ``_conv.py``), and a batched ``linear`` is one ``dot`` already. Parameters are sliced from the
canonical flat vector with static offsets, so the compiled function takes the same vector every backend takes.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..._dynamics import Dynamics
from ..._graph import evaluate, namespace_ops, register_namespace
from ..._layers import AbstractLayer
from ..._numpy_layers import layer_graph, numpy_layer, sample_rank
from ..._params import param_layout
from ._conv import conv2d
from ._group_norm import group_norm

_ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "cube": lambda x: x * x * x,
    "rbf": lambda x: jnp.exp(-(x * x)),
    "identity": lambda x: x,
}


def _linear(node, x, weight, bias=None):
    out = x @ weight.T
    return out if bias is None else out + bias


def _conv2d_batched(node, x, weight, bias=None):
    out = conv2d(x, weight, stride=node.attr("stride"), padding=node.attr("padding"))
    return out if bias is None else out + bias[:, None, None]


def _group_norm_batched(node, x, weight, bias):
    return group_norm(x, weight, bias, groups=node.attr("groups"), eps=node.attr("eps"))


JAX_OPS = {**namespace_ops(jnp),
           "linear": _linear,
           "activation": lambda node, x: _ACTIVATIONS[node.attr("name")](x),
           "conv2d": lambda node, x, *w: _conv2d_batched(node, x[None], *w)[0],
           "group_norm": lambda node, x, *w: _group_norm_batched(node, x[None], *w)[0]}
"""``op -> fn(node, *values)`` for every non-leaf graph op, on one sample."""

_BATCHED = {"linear": _linear, "activation": JAX_OPS["activation"], "conv2d": _conv2d_batched,
            "group_norm": _group_norm_batched}
"""The layer ops on a batched first input and unbatched parameters: their kernels take the batch axis as it is."""

register_namespace(jnp, JAX_OPS, lambda array, like: jnp.asarray(
    array, dtype=like.dtype if array.dtype.kind == "f" else bool))  # losses (pn.loss) run on these ops too

LayerFn = Callable[[list, jax.Array, jax.Array], jax.Array]  # (tensors, t, y) -> y


def tensor_plan(root: AbstractLayer) -> tuple[list[tuple[int, int, tuple | None]], list[int]]:
    """``(tensors, slot_tensor)``: the tensors :func:`compile_split` cuts from the flat vector, each ``(start,
    stop, shape)``, and the tensor each parameter slot of ``param_layout(root)`` lives in.

    A :class:`pyneuralode.Dynamics`'s declared parameters are ONE flat vector (``shape`` None): they are many
    small tensors read elementwise, each separate tensor costs the gradient its own kernels, and a slice feeding
    elementwise maths fuses for free."""
    tensors: list[tuple[int, int, tuple | None]] = []
    slot_tensor: list[int] = []
    previous = None
    for s in param_layout(root):
        packed = isinstance(s.layer, Dynamics)
        if packed and previous is not None and previous.layer_index == s.layer_index:
            tensors[-1] = (tensors[-1][0], s.stop, None)  # the packed layer's next parameter: extend its vector
        else:
            tensors.append((s.offset, s.stop, None if packed else s.shape))
        slot_tensor.append(len(tensors) - 1)
        previous = s
    return tensors, slot_tensor


def compile_field(spec: AbstractLayer) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``field(params_flat, t, y)`` for the whole spec, with static slices into the flat vector."""
    split, apply = compile_split(spec)
    return lambda params, t, y: apply(split(params), t, y)


def compile_split(spec: AbstractLayer):
    """``(split, apply)``: ``split(params_flat)`` gives the spec's tensors, ``apply(tensors, t, y)`` the field.

    A solver loop should split once, outside the loop, and pass the tensors as its arguments: slicing the flat
    vector inside every evaluation costs a dozen small ops per call, which XLA does not hoist out of a while loop
    whose arguments are not constants (a third of a small UDE's forward solve)."""
    tensors, _ = tensor_plan(spec.expand())

    def split(params):
        return [params[a:b] if shape is None else params[a:b].reshape(shape) for a, b, shape in tensors]
    return split, compile_tensors(spec)


def compile_tensors(spec: AbstractLayer) -> LayerFn:
    """``apply(tensors, t, y)`` for the whole spec, ``tensors`` its parameter tensors as :func:`tensor_plan` cuts
    them, ``y`` of shape ``(batch, *sample)`` (any number of leading axes where the spec fixes its sample shape)."""
    root = spec.expand()
    numpy_layer(root)  # a layer with no lowering is refused here, not when the function is first traced
    tensors, slot_tensor = tensor_plan(root)
    reads: dict[str, Callable] = {}
    for slot, k in zip(param_layout(root), slot_tensor):
        if tensors[k][2] is None:  # a slice of a packed vector
            a, b, shape = slot.offset - tensors[k][0], slot.stop - tensors[k][0], slot.shape
            reads[slot.name] = (lambda k, a, b, shape: lambda ts: ts[k][a:b].reshape(shape))(k, a, b, shape)
        else:
            reads[slot.name] = (lambda k: lambda ts: ts[k])(k)
    rank = sample_rank(root)

    def apply(ts, t, y):
        lead = y.shape[:y.ndim - rank] if rank is not None else y.shape[:1]
        sample = y.shape[len(lead):]
        flat_y = y.reshape((-1, *sample)) if len(lead) != 1 else y
        out = _run(layer_graph(root, tuple(sample)), reads, ts, jnp.asarray(t, dtype=y.dtype), flat_y)
        return out.reshape((*lead, *out.shape[1:])) if len(lead) != 1 else out
    return apply


def _run(graph, reads, ts, t, y):
    """The graph on a batch ``y``; each value is ``(array, batched)``: it carries the batch axis only when it
    depends on ``y``."""
    def leaf(node, args):
        if node.op in ("time", "state"):
            return (t, False) if node.op == "time" else (y, True)
        if node.op == "param":
            return reads[node.attr("name")](ts), False
        array = node.attr("value").array  # a literal (layer graphs hold constants as literals)
        return jnp.asarray(array, dtype=y.dtype if array.dtype.kind == "f" else bool), False

    def op(node, *pairs):
        args, flags = [a for a, _ in pairs], [f for _, f in pairs]
        if not any(flags):
            return JAX_OPS[node.op](node, *args), False
        if node.op in _BATCHED and flags[0] and not any(flags[1:]):
            return _BATCHED[node.op](node, *args), True
        return jax.vmap(lambda *xs: JAX_OPS[node.op](node, *xs), in_axes=tuple(0 if f else None for f in flags))(
            *args), True

    out, batched = evaluate(graph, leaf, dict.fromkeys(JAX_OPS, op))
    return out if batched else jnp.broadcast_to(out, (y.shape[0], *out.shape))
