"""Every layer spec written in the ops of the neutral graph: one representation for networks and user fields.

:func:`numpy_layer` gives ``apply(tensor, t, x)`` for any spec of the catalogue (``Linear``, activations,
``Sequential``, ``Residual``, ``Augment``, ``ConcatSquash``, ``Conv2d``/``ConcatConv2d``, ``GroupNorm``,
``GlobalAvgPool2d``, ``Flatten``, and a :class:`pyneuralode.Dynamics`, whose graph is inlined with its networks).
It is written with NumPy functions and the graph's layer ops (:data:`pyneuralode._graph.LAYERS`) only, so the same
code

- evaluates the network on arrays (the NumPy reference :meth:`pyneuralode.Dynamics.evaluate` uses),
- writes it into a graph on traced values (:func:`layer_graph`: the one graph every backend compiles a field, a
  network layer or an event condition from), and
- writes a network into a user's graph where :func:`pyneuralode.grad` must differentiate it.

Each backend therefore has one compiler, of graphs, that grows by ops: a new layer is a lowering here (plus an op in
:mod:`pyneuralode._graph` when it is a new primitive), not a compiler in every backend folder.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np

from ._augment import Augment
from ._blocks import Residual, compose_layers
from ._concat_squash import ConcatSquash
from ._conv_layers import Conv2d, Flatten, GlobalAvgPool2d, GroupNorm
from ._errors import NotSupportedError
from ._graph import NUMPY_OPS, Graph, Node, evaluate
from ._layers import AbstractLayer, Activation, Linear, Sequential
from ._params import _named_walk, param_layout
from ._trace import Tracer, _as_tracer, _prune, _Tape

FIELD_LAYERS = ("Linear", "Activation", "Sequential", "Residual", "Augment", "ConcatSquash", "Conv2d",
                "ConcatConv2d", "GroupNorm", "GlobalAvgPool2d", "Flatten", "Dynamics")
"""The layers :func:`numpy_layer` lowers (and so every backend compiles)."""

Tensor = Callable[[str], object]
"""``tensor(name)``: a parameter by its canonical slot name in ``param_layout(spec)`` (``"0.weight"``)."""


def layer_op(op: str, *inputs, **attrs):
    """The graph op ``op`` on ``inputs``: a new node when any input is traced, else NumPy's definition."""
    node = Node(op, attrs=tuple(attrs.items()))
    tracer = next((x for x in inputs if isinstance(x, Tracer)), None)
    if tracer is None:
        return NUMPY_OPS[op](node, *inputs)
    return tracer._tape.emit(op, inputs, node.attrs, what=f"the {op} op")


def _time_features(t, shape):
    """``t`` broadcast to ``shape`` (the time as input features or an input channel)."""
    return np.broadcast_to(t, shape) if isinstance(t, Tracer) else np.full(shape, t, dtype=np.float64)


def _linear(layer: Linear, weights: list[str]):
    def apply(tensor, t, x):
        if layer.time_input:  # t is the last input feature (the paper's ConcatLinear)
            x = np.concatenate([x, _time_features(t, (*x.shape[:-1], 1))], axis=-1)
        return layer_op("linear", x, *(tensor(name) for name in weights))
    return apply


def _concat_squash(layer: ConcatSquash, weights: list[str]):
    def apply(tensor, t, x):  # (W x + b) * sigmoid(W_g t + b_g) + W_h t, FFJORD's ConcatSquashLinear
        weight, bias, gate_weight, gate_bias, hyper = (tensor(name) for name in weights)
        gate = layer_op("activation", t * gate_weight[:, 0] + gate_bias, name="sigmoid")
        return layer_op("linear", x, weight, bias) * gate + t * hyper[:, 0]
    return apply


def _conv(layer: Conv2d, weights: list[str]):
    def apply(tensor, t, x):
        if layer.time_channel:  # t is an extra input channel placed FIRST (torchdiffeq's ConcatConv2d)
            x = np.concatenate([_time_features(t, (1, *x.shape[1:])), x], axis=0)
        return layer_op("conv2d", x, *(tensor(name) for name in weights), stride=layer.stride,
                        padding=layer.padding)
    return apply


def _dynamics(layer, prefix: str):
    """A :class:`pyneuralode.Dynamics` inlined: its graph evaluated on ``(t, x)`` with the field's parameters (by
    their names under ``prefix``), its constants as literals and each network call lowered in place."""
    nets = {name: numpy_layer(net) for name, net in layer.nets}
    constants = dict(layer.constants)

    def apply(tensor, t, x):
        tape = next((v._tape for v in (x, t) if isinstance(v, Tracer)), None)

        def leaf(node: Node, args):
            op = node.op
            if op == "time":
                return t
            if op == "state":
                return x
            if op == "param":
                return tensor(prefix + node.attr("name"))
            if op == "call":
                name = node.attr("net")
                return nets[name](lambda slot: tensor(f"{prefix}{name}.{slot}"), t, args[0])
            if op == "literal" and tape is not None:
                return tape.add(node)  # as recorded, with its attributes (a boolean event's flag)
            return (constants[node.attr("name")] if op == "constant" else node.attr("value")).array

        def retraced(node: Node, *args):  # the node as traced (its shape and dtype are known), on this trace
            return tape.add(dataclasses.replace(node, inputs=tuple(tape.lift(a, f"the {node.op} op") for a in args)))

        return evaluate(layer.graph, leaf, NUMPY_OPS if tape is None else dict.fromkeys(NUMPY_OPS, retraced))
    return apply


def numpy_layer(spec: AbstractLayer) -> Callable:
    """``apply(tensor, t, x)``: ``spec`` applied to ONE sample ``x`` at time ``t``, ``tensor(name)`` giving each
    parameter by its canonical slot name (see :data:`Tensor`). Raises ``NotSupportedError`` for a layer that is
    not a function of one sample (an ``ODEBlock``: networks solve those themselves)."""
    from ._dynamics import Dynamics  # the Dynamics layer is built on the tracer this module also uses

    root = spec.expand()
    prefixes = [prefix for prefix, _ in _named_walk(root, "")]
    own: dict[int, list[str]] = {}
    for slot in param_layout(root):
        own.setdefault(slot.layer_index, []).append(slot.name)

    def leaf(layer: AbstractLayer, subtree: range) -> Callable:
        weights = own.get(subtree[0], [])
        if isinstance(layer, Augment):  # zeros appended on the first sample axis (features, or channels)
            return lambda tensor, t, x: np.concatenate([x, np.zeros((layer.dims, *x.shape[1:]))], axis=0)
        if isinstance(layer, Activation):
            return lambda tensor, t, x: layer_op("activation", x, name=layer.name)
        if isinstance(layer, Linear):
            return _linear(layer, weights)
        if isinstance(layer, ConcatSquash):
            return _concat_squash(layer, weights)
        if isinstance(layer, Conv2d):
            return _conv(layer, weights)
        if isinstance(layer, GroupNorm):
            return lambda tensor, t, x: layer_op("group_norm", x, tensor(weights[0]), tensor(weights[1]),
                                                 groups=layer.num_groups, eps=layer.eps)
        if isinstance(layer, GlobalAvgPool2d):
            return lambda tensor, t, x: np.mean(x, axis=(1, 2), keepdims=True)
        if isinstance(layer, Flatten):
            return lambda tensor, t, x: np.reshape(x, (-1,))
        if isinstance(layer, Dynamics):
            return _dynamics(layer, prefixes[subtree[0]])
        raise NotSupportedError(f"{type(layer).__name__} layers are not available inside a vector field: a field "
                                f"is built from {', '.join(FIELD_LAYERS)} (and composites of them such as pn.MLP).")

    return compose_layers(root, leaf)


def sample_rank(spec: AbstractLayer) -> int | None:
    """The rank of one input sample of ``spec`` where its layers fix it (an MLP's 1, a convolution's 3), else
    ``None``: how a backend tells one sample from a batch."""
    layer = spec.expand()
    if layer.in_shape is not None:
        return len(layer.in_shape)
    if isinstance(layer, (Conv2d, GlobalAvgPool2d)):
        return 3
    if isinstance(layer, Residual):
        return sample_rank(layer.layer)
    if isinstance(layer, Sequential):
        for child in layer.layers:
            rank = sample_rank(child)
            if rank is not None or not isinstance(child, (Activation, Augment, GroupNorm, Residual)):
                return rank  # known, or hidden behind a layer that changes the rank (Flatten)
    return None


@functools.lru_cache(maxsize=512)
def layer_graph(spec: AbstractLayer, sample_shape: tuple[int, ...]) -> Graph:
    """The graph of ``spec`` applied to one sample of ``sample_shape`` at time ``t``: leaves ``time``, ``state``
    and a ``param`` per parameter tensor, named by its canonical slot (``"0.weight"``). Every backend compiles a
    layer spec through this graph."""
    tape = _Tape()
    t = tape.add(Node("time", (), (), ()))
    u = tape.add(Node("state", (), (), tuple(sample_shape)))
    shapes = {slot.name: slot.shape for slot in param_layout(spec)}

    def tensor(name: str):
        return tape.add(Node("param", (), (("name", name),), tuple(shapes[name])))

    out = _as_tracer(tape, numpy_layer(spec)(tensor, t, u), f"the output of {type(spec).__name__}")
    return _prune(Graph(tuple(tape.nodes), out._index))
