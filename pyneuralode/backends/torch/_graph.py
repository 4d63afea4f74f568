"""The torch ops of the neutral expression graph: :data:`TORCH_OPS`, the graph's NumPy semantics written with torch
functions, which :class:`._compile.VectorField` runs for every spec (an MLP, a conv net, a ``pn.dynamics`` field).

The graph describes one sample. A batch runs the same ops batch-aware rather than through ``torch.func.vmap``
(vmap's per-op dispatch made a batch-64 UDE field ~4x slower than the same field written by hand): each value
carries its leading batch axis only when it depends on ``u``, and each op builder adapts to which inputs do —
elementwise ops align a batched operand's sample axes to the output's rank, axis arguments shift by one,
``matmul`` promotes vectors explicitly, ``stack``/``concatenate`` expand unbatched inputs. Both plans (one sample,
a batch) are built once, as lists of closures, so a call does no graph interpretation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

import torch.nn.functional as F

from ..._graph import BINARY, REDUCTIONS, UNARY, index_of, register_namespace

_UNARY = {"negative": torch.negative, "exp": torch.exp, "log": torch.log, "log1p": torch.log1p,
          "expm1": torch.expm1, "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "arcsin": torch.arcsin,
          "arccos": torch.arccos, "arctan": torch.arctan, "sinh": torch.sinh, "cosh": torch.cosh,
          "tanh": torch.tanh, "arcsinh": torch.asinh, "arccosh": torch.acosh, "arctanh": torch.atanh,
          "sqrt": torch.sqrt, "abs": torch.abs, "sign": torch.sign,
          "logical_not": torch.logical_not}
_BINARY = {"add": torch.add, "subtract": torch.sub, "multiply": torch.mul, "divide": torch.div,
           "power": torch.pow, "maximum": torch.maximum, "minimum": torch.minimum, "arctan2": torch.atan2,
           "logaddexp": torch.logaddexp, "less": torch.lt, "less_equal": torch.le, "greater": torch.gt,
           "greater_equal": torch.ge, "equal": torch.eq, "not_equal": torch.ne, "logical_and": torch.logical_and,
           "logical_or": torch.logical_or}


def _prod(x, dim, keepdim):
    for axis in sorted(dim, reverse=True):  # torch.prod takes one dim at a time
        x = torch.prod(x, dim=axis, keepdim=keepdim)
    return x


_REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "prod": _prod, "max": torch.amax, "min": torch.amin}

Builder = Callable[..., Callable]
"""``build(node, batched, ranks) -> fn(*values)``: ``batched[i]`` says whether input ``i`` carries a leading batch
axis, ``ranks[i]`` is its per-sample rank (``len(shape)``)."""


def _pad(batched: bool, rank: int, target: int):
    """An index that inserts unit axes after the batch axis of a batched value of sample rank ``rank`` so that it
    broadcasts like a sample of rank ``target`` (``None`` when nothing is needed)."""
    if not batched or rank >= target:
        return None
    return (slice(None),) + (None,) * (target - rank)


def _aligned(fn, node, batched, ranks):
    pads = [_pad(b, r, len(node.shape)) for b, r in zip(batched, ranks)]
    if not any(p is not None for p in pads):
        return fn
    return lambda *xs: fn(*(x if p is None else x[p] for x, p in zip(xs, pads)))


def _elementwise(table):
    return lambda node, batched, ranks: _aligned(table[node.op], node, batched, ranks)


def _reduction(node, batched, ranks):
    fn, keepdims, shift = _REDUCTIONS[node.op], node.attr("keepdims"), int(batched[0])
    axes = node.attr("axis")
    axes = tuple(range(ranks[0])) if axes is None else axes
    if not axes:  # NumPy: reducing over no axes changes nothing (torch would reduce over all)
        return lambda x: x
    dim = tuple(a + shift for a in axes)
    return lambda x: fn(x, dim=dim, keepdim=keepdims)


def _joined(torch_fn):
    def build(node, batched, ranks):
        axis = node.attr("axis") + int(any(batched))
        if not any(batched) or all(batched):
            return lambda *xs: torch_fn(xs, dim=axis)
        first = batched.index(True)

        def apply(*xs):
            n = xs[first].shape[0]
            return torch_fn([x if b else x.expand(n, *x.shape) for x, b in zip(xs, batched)], dim=axis)
        return apply
    return build


def _matmul(node, batched, ranks):
    if not any(batched):
        return torch.matmul  # NumPy's matmul semantics, including 1-D operands
    (ba, bb), (ra, rb) = batched, ranks
    if ba and bb and ra == 1 and rb == 1:
        return lambda a, b: (a * b).sum(-1)
    # promote vectors to matrices explicitly, align the batched operand's sample axes, multiply, squeeze back
    target = max(ra, 2, rb)
    pad_a, pad_b = _pad(ba, max(ra, 2), target), _pad(bb, max(rb, 2), target)

    def apply(a, b):
        if ra == 1:
            a = a.unsqueeze(-2)
        if rb == 1:
            b = b.unsqueeze(-1)
        out = torch.matmul(a if pad_a is None else a[pad_a], b if pad_b is None else b[pad_b])
        if rb == 1:
            out = out.squeeze(-1)
        if ra == 1:
            out = out.squeeze(-1 if rb == 1 else -2)
        return out
    return apply


def _solve(node, batched, ranks):
    """``np.linalg.solve(a, b)`` for a square ``a`` and a vector or matrix ``b``; a batched operand is met by
    expanding the other (torch reads a ``b`` with one axis fewer than ``a`` as a batch of vectors)."""
    ba, bb = batched
    if ba == bb:
        return torch.linalg.solve
    if bb:
        return lambda a, b: torch.linalg.solve(a.expand(b.shape[0], *a.shape), b)
    return lambda a, b: torch.linalg.solve(a, b.expand(a.shape[0], *b.shape))


def _getitem(node, batched, ranks):
    index = ((slice(None),) if batched[0] else ()) + index_of(node)
    return lambda x: x[index]


def _take(node, batched, ranks):
    dim, indices, on_device = node.attr("axis") + int(batched[0]), node.attr("indices"), {}

    def apply(x):  # the index tensor is made once per device, not per call
        index = on_device.get(x.device)
        if index is None:
            index = on_device[x.device] = torch.tensor(indices, dtype=torch.long, device=x.device)
        return x.index_select(dim, index)
    return apply


def _reshape(node, batched, ranks):
    shape = tuple(node.attr("shape"))
    return (lambda x: x.reshape((x.shape[0],) + shape)) if batched[0] else (lambda x: x.reshape(shape))


def _transpose(node, batched, ranks):
    axes = tuple(node.attr("axes"))
    dims = (0, *(a + 1 for a in axes)) if batched[0] else axes
    return lambda x: x.permute(dims)


def _broadcast_to(node, batched, ranks):
    shape = tuple(node.attr("shape"))
    if not batched[0]:
        return lambda x: torch.broadcast_to(x, shape)
    pad = _pad(True, ranks[0], len(shape))
    return lambda x: torch.broadcast_to(x if pad is None else x[pad], (x.shape[0],) + shape)


def _integer_power(node, batched, ranks):
    n = node.attr("exponent")
    return lambda x: x ** n


def _softplus(x):
    # jax.nn.softplus is logaddexp(x, 0); torch's F.softplus switches to x above threshold=20, which differs in
    # the 9th digit. Use the exact form so float64 backends agree.
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "softplus": _softplus, "sigmoid": torch.sigmoid,
                "elu": F.elu, "silu": F.silu, "cube": lambda x: x * x * x, "rbf": lambda x: torch.exp(-(x * x)),
                "identity": lambda x: x}


def _sample_kernel(kernel):
    """A kernel on a batch (``N`` first) run on one sample too: torch's ``group_norm`` needs the batch axis."""
    def build(node, batched, ranks):
        fn = kernel(node)
        return fn if batched[0] else lambda x, *w: fn(x[None], *w)[0]
    return build


def _conv2d(node):
    stride, padding = node.attr("stride"), node.attr("padding")
    return lambda x, weight, bias=None: F.conv2d(x, weight, bias, stride, padding)


def _group_norm(node):
    groups, eps = node.attr("groups"), node.attr("eps")
    return lambda x, weight, bias: F.group_norm(x, groups, weight, bias, eps)


TORCH_OPS: dict[str, Builder] = {
    "linear": lambda node, batched, ranks: F.linear,  # any leading axes, one addmm
    "activation": lambda node, batched, ranks: _ACTIVATIONS[node.attr("name")],
    "conv2d": _sample_kernel(_conv2d),
    "group_norm": _sample_kernel(_group_norm),
    **{op: _elementwise(_UNARY) for op in UNARY},
    **{op: _elementwise(_BINARY) for op in BINARY},
    **{op: _reduction for op in REDUCTIONS},
    "integer_power": _integer_power,
    "where": lambda node, batched, ranks: _aligned(torch.where, node, batched, ranks),
    "matmul": _matmul,
    "solve": _solve,
    "stack": _joined(torch.stack),
    "concatenate": _joined(torch.cat),
    "getitem": _getitem,
    "take": _take,
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
}
"""``op -> build(node, batched, ranks) -> fn(*values)`` for every non-leaf graph op, with NumPy's semantics."""

# Losses (pn.loss) run the same builders on whole arrays: no batch axis, so NumPy's semantics as they are.
register_namespace(torch, {op: (lambda build: lambda node, *xs: build(node, [False] * len(xs),
                                                                       [x.dim() for x in xs])(*xs))(build)
                           for op, build in TORCH_OPS.items()},
                   lambda array, like: torch.as_tensor(np.array(array), device=like.device,
                                                       dtype=like.dtype if array.dtype.kind == "f" else torch.bool))
