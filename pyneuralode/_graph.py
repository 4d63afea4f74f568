"""The neutral expression graph of a user vector field: numbered nodes, each an op with inputs and static attributes.

A :class:`Graph` is what :func:`pyneuralode.dynamics` traces the user's ``f(t, u, p)`` into (see
:mod:`pyneuralode._trace`) and what every backend compiles: JAX to a pure ``jnp`` function, torch to a module,
Julia to generated source. It describes ONE sample; backends vectorise over the batch.

Structure (read this to write a compiler):

- ``graph.nodes`` is a tuple of :class:`Node` in topological order: a node's ``inputs`` are indices of earlier
  nodes. ``graph.output`` is the index of the node whose value is ``du/dt``.
- ``node.op`` is a name from :data:`OPS`; ``node.attrs`` a tuple of ``(key, value)`` pairs of static, hashable
  Python values (ints, tuples, strings, :class:`Literal`); ``node.shape`` the per-sample shape of its value;
  ``node.dtype`` ``"float"`` or ``"bool"`` (comparisons).
- Semantics are NumPy's (broadcasting, ``matmul``, reductions), for one sample. :data:`NUMPY_OPS` is the
  executable definition: :func:`evaluate` runs a graph with it, and it is the reference every backend is tested
  against.

Leaf ops: ``time`` (``t``, shape ``()``), ``state`` (``u``), ``param`` (attr ``name``: a slot of the canonical
parameter vector — a declared trainable parameter, its *stored* value (parameters declared ``positive`` are stored
as their logarithm and followed by an ``exp`` node), or a network's weight such as ``"H.0.weight"``, where
:func:`pyneuralode.grad` has written that network out in ops), ``constant`` (attr ``name``: a fixed array given in ``constants=``) and ``literal`` (attr
``value``: a number or array written in the user's code). ``call`` (attr ``net``) applies the named network spec
to one sample ``x`` at the field's time ``t`` (inputs: ``(x,)``); backends compile it with their ordinary layer
compiler, so a network call is one node of the graph.

Losses (:func:`pyneuralode.loss`) are graphs of the same ops over whole arrays (no per-sample vectorisation):
their inputs are ``constant`` leaves named after the function's arguments, supplied by the caller. JAX and torch
evaluate them with the op table they registered (:func:`register_namespace`) for their array namespace; Julia
compiles them to generated source with its dynamics compiler (``loss_source``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Literal:
    """A hashable, immutable numeric array (float64, or bool) used as a static attribute."""

    array: np.ndarray

    def __post_init__(self):
        array = np.array(self.array, dtype=np.bool_ if np.asarray(self.array).dtype == np.bool_ else np.float64)
        array.setflags(write=False)
        object.__setattr__(self, "array", array)

    def __eq__(self, other):
        return (isinstance(other, Literal) and other.array.shape == self.array.shape
                and other.array.dtype == self.array.dtype
                and bool(np.array_equal(other.array, self.array, equal_nan=self.array.dtype != np.bool_)))

    def __hash__(self):
        return hash((self.array.shape, self.array.dtype.str, self.array.tobytes()))

    def __repr__(self):
        return f"Literal({self.array.tolist()!r})"


@dataclasses.dataclass(frozen=True)
class Node:
    """One operation: ``op`` applied to the values of ``inputs`` (earlier node indices) with static ``attrs``."""

    op: str
    inputs: tuple[int, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()
    shape: tuple[int, ...] = ()
    dtype: str = "float"

    def attr(self, key: str, default=None):
        """The static attribute ``key`` (``default`` when absent)."""
        for k, v in self.attrs:
            if k == key:
                return v
        return default


@dataclasses.dataclass(frozen=True)
class Graph:
    """A traced vector field: ``nodes`` in topological order and the index of the ``output`` node."""

    nodes: tuple[Node, ...]
    output: int

    def uses(self, op: str) -> bool:
        """Whether any node is ``op`` (e.g. ``"time"``: the field depends on ``t``)."""
        return any(node.op == op for node in self.nodes)

    def __str__(self):
        lines = []
        for i, n in enumerate(self.nodes):
            attrs = ", ".join(f"{k}={v!r}" for k, v in n.attrs)
            args = ", ".join(f"%{j}" for j in n.inputs)
            lines.append(f"%{i} = {n.op}({args}{'; ' + attrs if attrs else ''})  # {n.dtype}{list(n.shape)}")
        lines.append(f"return %{self.output}")
        return "\n".join(lines)


UNARY = ("negative", "exp", "log", "log1p", "expm1", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh",
         "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "sqrt", "abs", "sign", "logical_not")
"""Elementwise one-input ops (NumPy's functions of the same names; ``abs`` is ``np.absolute``)."""

BINARY = ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "arctan2", "logaddexp", "less",
          "less_equal", "greater", "greater_equal", "equal", "not_equal", "logical_and", "logical_or")
"""Elementwise two-input ops with NumPy broadcasting (comparisons and logical ops give ``bool``)."""

REDUCTIONS = ("sum", "mean", "prod", "max", "min")
"""Reductions with attrs ``axis`` (a sorted tuple of non-negative ints, or ``None`` for all) and ``keepdims``."""

OTHER = ("integer_power", "where", "matmul", "solve", "stack", "concatenate", "getitem", "take", "reshape",
         "transpose", "broadcast_to")
"""Structural ops. Attributes: ``integer_power`` ``exponent`` (int; ``x ** n`` is exact for negative ``x``);
``where`` ``(condition, a, b)``; ``matmul`` NumPy's ``@``; ``solve`` ``np.linalg.solve(a, b)`` with ``a`` a square
matrix and ``b`` a vector or a matrix (no stacked systems); ``stack``/``concatenate`` ``axis`` (non-negative);
``getitem`` ``index`` (a tuple, one entry per indexed axis or new axis: an int ``i >= 0`` drops the axis,
``None`` inserts one, ``(start, stop, step)`` with ``0 <= start <= stop`` and ``step > 0`` is the slice
``start:stop:step``; axes after the last entry are kept whole); ``take`` ``axis`` (non-negative) and ``indices``
(a non-empty tuple of ints ``>= 0``, repeats allowed): ``np.take(x, indices, axis)``, the elements of one axis in
any order (``x[::-1]``, ``x[[2, 0, 1]]``, ``x[mask]`` with a constant mask, ``np.flip``, ``np.roll``); ``reshape`` ``shape`` (no ``-1``; row-major);
``transpose`` ``axes`` (a full permutation); ``broadcast_to`` ``shape``."""

LAYERS = ("linear", "activation", "conv2d", "group_norm")
"""The layer catalogue's primitives, one op each, so that a network spec and a user's field are one graph (see
:mod:`pyneuralode._numpy_layers`, which writes every layer spec in these ops and the ops above) and each backend
runs its best kernel for them (``addmm``, cuDNN-style convolutions, a fused group norm). Per sample:
``linear`` ``(x, weight[, bias])`` is ``x @ weight.T (+ bias)`` over the last axis, PyTorch's ``(out, in)`` weight;
``activation`` (attr ``name``, one of :data:`ACTIVATIONS`) is elementwise; ``conv2d`` ``(x, weight[, bias])``
is ``torch.nn.functional.conv2d`` of one ``(C, H, W)`` sample with an ``(O, C, kh, kw)`` weight (attrs ``stride``
and ``padding``, ``(h, w)`` pairs; zero padding); ``group_norm`` ``(x, weight, bias)`` is
``torch.nn.functional.group_norm`` of one sample whose axis 0 holds the channels (attrs ``groups`` and ``eps``;
biased variance)."""

LEAVES = ("time", "state", "param", "constant", "literal", "call")
"""Ops whose value comes from the environment, not from a NumPy function (``call`` is a network)."""

OPS: tuple[str, ...] = (*LEAVES, *UNARY, *BINARY, *REDUCTIONS, *OTHER, *LAYERS)
"""Every op a graph may contain; each backend's compiler implements all of them."""


def index_of(node: Node) -> tuple:
    """The NumPy index of a ``getitem`` node: ints, ``None`` (new axis) and slices."""
    return tuple(slice(*e) if isinstance(e, tuple) else e for e in node.attr("index"))


ACTIVATIONS: dict[str, Callable] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "cube": lambda x: x * x * x,
    "rbf": lambda x: np.exp(-(x * x)),
    "identity": lambda x: x,
}
"""The ``activation`` op's definition by name, in NumPy functions (so a traced argument writes them as ops)."""


def _conv2d(node: Node, x, weight, bias=None):
    """One ``(C, H, W)`` sample (or a stack of them: leading axes are kept) cross-correlated with ``weight``."""
    (sh, sw), (ph, pw) = node.attr("stride"), node.attr("padding")
    kh, kw = weight.shape[2:]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(-2, -1))[..., ::sh, ::sw, :, :]
    out = np.einsum("...chwij,ocij->...ohw", windows, weight)
    return out if bias is None else out + bias[:, None, None]


def _group_norm(node: Node, x, weight, bias):
    groups, eps = node.attr("groups"), node.attr("eps")
    g = x.reshape(groups, -1)
    centred = g - g.mean(axis=1, keepdims=True)
    normal = (centred / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + eps)).reshape(x.shape)
    extra = (None,) * (x.ndim - 1)
    return normal * weight[(slice(None), *extra)] + bias[(slice(None), *extra)]


def namespace_ops(xp) -> dict[str, Callable]:
    """``op -> fn(node, *input_values)`` for every non-leaf op, from a NumPy-compatible array namespace
    (``numpy`` itself, ``jax.numpy``): the functions of the op names, with the node's attributes."""
    table: dict[str, Callable] = {}
    for op in UNARY:
        table[op] = (lambda fn: lambda node, x: fn(x))(getattr(xp, op))
    for op in BINARY:
        table[op] = (lambda fn: lambda node, a, b: fn(a, b))(getattr(xp, op))
    for op in REDUCTIONS:
        table[op] = (lambda fn: lambda node, x: fn(x, axis=node.attr("axis"), keepdims=node.attr("keepdims")))(
            getattr(xp, op))
    table.update({
        "integer_power": lambda node, x: x ** node.attr("exponent"),
        "where": lambda node, c, a, b: xp.where(c, a, b),
        "matmul": lambda node, a, b: xp.matmul(a, b),
        "solve": lambda node, a, b: xp.linalg.solve(a, b),
        "stack": lambda node, *xs: xp.stack(xs, axis=node.attr("axis")),
        "concatenate": lambda node, *xs: xp.concatenate(xs, axis=node.attr("axis")),
        "getitem": lambda node, x: x[index_of(node)],
        "take": lambda node, x: x[(slice(None),) * node.attr("axis") + (np.asarray(node.attr("indices")),)],
        "reshape": lambda node, x: xp.reshape(x, node.attr("shape")),
        "transpose": lambda node, x: xp.transpose(x, node.attr("axes")),
        "broadcast_to": lambda node, x: xp.broadcast_to(x, node.attr("shape")),
    })
    return table


NUMPY_OPS: dict[str, Callable] = {
    **namespace_ops(np),
    "linear": lambda node, x, weight, bias=None: x @ weight.T if bias is None else x @ weight.T + bias,
    "activation": lambda node, x: ACTIVATIONS[node.attr("name")](x),
    "conv2d": _conv2d,
    "group_norm": _group_norm,
}
"""``op -> fn(node, *input_values)``: the executable NumPy definition of every non-leaf op."""


_NAMESPACES: dict[int, tuple[dict[str, Callable], Callable]] = {}


def register_namespace(xp, ops: dict[str, Callable], literal: Callable) -> None:
    """Make the array namespace ``xp`` (a backend's ``jax.numpy``, ``torch``) able to run graphs: ``ops`` is its op
    table, ``literal(array, like)`` turns a NumPy literal into an array of ``like``'s dtype and device."""
    _NAMESPACES[id(xp)] = (ops, literal)


def namespace_ops_for(xp) -> tuple[dict[str, Callable], Callable]:
    """``(ops, literal)`` registered for the array namespace ``xp`` (see :func:`register_namespace`)."""
    try:
        return _NAMESPACES[id(xp)]
    except KeyError:
        raise KeyError(f"no graph ops registered for the array namespace {getattr(xp, '__name__', xp)!r}") from None


register_namespace(np, NUMPY_OPS, lambda array, like: np.asarray(
    array, dtype=np.asarray(like).dtype if array.dtype.kind == "f" else bool))


def evaluate(graph: Graph, leaves: Callable[[Node, list], Any], ops: dict[str, Callable] = NUMPY_OPS):
    """Run ``graph``: ``leaves(node, inputs)`` gives the value of a leaf node (``inputs`` the values of its inputs,
    for ``call``), ``ops[node.op](node, *inputs)`` every other node. Backends pass their own ``ops`` table."""
    values: list = []
    for node in graph.nodes:
        args = [values[i] for i in node.inputs]
        values.append(leaves(node, args) if node.op in LEAVES else ops[node.op](node, *args))
    return values[graph.output]
