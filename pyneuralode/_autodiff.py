"""Derivatives inside a traced function: :func:`grad` and :func:`jacobian`, by reverse mode on the expression graph.

A Hamiltonian network's field is ``(∂H/∂p, −∂H/∂q)`` of a learned ``H``; a gradient flow is ``−∇V(u)``; a
Lagrangian network needs a Hessian. ``pn.grad(fn)(x)`` inside a ``pn.dynamics`` function records ``fn(x)`` and then
its reverse-mode derivative as ordinary graph ops (a vector-Jacobian product rule per op, below), so every backend
compiles the result with the compiler it already has — JAX, torch and Julia's generated source alike — and the
model's own gradient differentiates through it (second-order derivatives, as a Hamiltonian network's training needs).

Networks are differentiated through their layers: a ``p.net(x)`` call inside ``fn`` is expanded into the graph's
own ops (``linear``, ``activation``: the lowering every backend compiles networks from) with the weights as
``param`` leaves named by their slot in the canonical layout (``"H.0.weight"``), so a network built from ``Linear``
or ``ConcatSquash`` layers, activations and ``Sequential`` (:func:`pyneuralode.MLP`), with ``Residual`` and
``Augment``, is differentiable wherever it appears. Called with real NumPy arrays (the reference
:meth:`pyneuralode.Dynamics.evaluate`), ``grad`` traces ``fn`` on the spot and evaluates the derivative with NumPy.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from ._errors import NotSupportedError, SpecError
from ._graph import NUMPY_OPS, Graph, Node, evaluate
from ._numpy_layers import numpy_layer
from ._params import param_layout
from ._trace import Tracer, _Tape

def grad(fn: Callable) -> Callable:
    """``grad(fn)(x, *args)`` is the gradient of the real scalar ``fn(x, *args)`` with respect to ``x`` (an array of
    ``x``'s shape), like ``jax.grad``. Use it inside a ``pn.dynamics`` function:

    ```python
    @pn.dynamics(state=2, nets={"H": pn.MLP([2, 64, 64, 1], activation="tanh")})
    def hamiltonian_nn(t, u, p):                      # u = (q, p): Greydanus et al. 2019
        dH = pn.grad(lambda x: p.H(x)[0])(u)
        return np.stack([dH[1], -dH[0]])
    ```

    Nest it for second derivatives (``pn.jacobian(pn.grad(V))`` is the Hessian). ``fn`` may use everything a
    dynamics function may, including the field's parameters and networks (MLPs; see the module docstring)."""
    @functools.wraps(fn)
    def gradient(x, *args, **kwargs):
        return _differentiate(fn, x, args, kwargs, scalar=True)
    return gradient


def jacobian(fn: Callable) -> Callable:
    """``jacobian(fn)(x, *args)`` is the Jacobian of ``fn(x, *args)`` with respect to ``x``: an array of shape
    ``fn(x).shape + x.shape`` (one reverse pass per output element), like ``jax.jacrev``."""
    @functools.wraps(fn)
    def jac(x, *args, **kwargs):
        return _differentiate(fn, x, args, kwargs, scalar=False)
    return jac


def _differentiate(fn, x, args, kwargs, *, scalar: bool):
    what = f"pn.{'grad' if scalar else 'jacobian'}({getattr(fn, '__name__', 'fn')})"
    if isinstance(x, Tracer):
        tape = x._tape
        if x.dtype == np.bool_:
            raise SpecError(f"{what} was called on a boolean value: differentiate with respect to real numbers.")
        # a fresh node standing for the argument, so that fn's other uses of x's ancestors stay constants; its
        # mark is the tape's length, unique on this tape and the same each time the function is traced (a global
        # counter made every trace differ, and tracing is checked to give the same graph twice)
        fresh = tape.add(Node("reshape", (x._index,), (("shape", x.shape), ("argument", len(tape.nodes))),
                              x.shape))
        return _derivative(tape, fn, fresh, args, kwargs, what, scalar)
    array = np.asarray(x, dtype=np.float64)  # the NumPy reference: trace fn here, evaluate the derivative
    tape = _Tape()
    leaf = tape.add(Node("state", (), (), array.shape))
    out = _derivative(tape, fn, leaf, args, kwargs, what, scalar)
    graph = Graph(tuple(tape.nodes), out._index)
    return evaluate(graph, lambda node, inputs: array if node.op == "state" else node.attr("value").array,
                    NUMPY_OPS)


def _derivative(tape: _Tape, fn, x: Tracer, args, kwargs, what: str, scalar: bool) -> Tracer:
    try:
        y = fn(x, *args, **kwargs)
    except SpecError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's function, traced
        raise SpecError(f"Tracing {what} failed: {type(err).__name__}: {err}") from err
    if isinstance(y, (list, tuple)):
        raise SpecError(f"{what}: the function returned a Python {type(y).__name__}; return one array.")
    y = y if isinstance(y, Tracer) else Tracer(tape, tape.lift(y, what))
    if y.dtype == np.bool_:
        raise SpecError(f"{what}: the function returned a boolean value, which has no derivative.")
    if scalar:
        if y.shape != ():
            raise SpecError(f"{what}: the function must return one real number, got shape {y.shape} (reduce it, "
                            "e.g. p.H(x)[0] or np.sum(...); pn.jacobian differentiates arrays).")
        return _vjp(tape, y, x, Tracer(tape, tape.lift(1.0, what)))
    rows = []
    for k in range(max(y.size, 1)):
        seed = np.zeros(y.size)
        seed[k] = 1.0
        rows.append(_vjp(tape, y, x, Tracer(tape, tape.lift(seed.reshape(y.shape), what))))
    return np.reshape(np.stack(rows), (*y.shape, *x.shape))


# ---------------------------------------------------------------------- the reverse pass
def _vjp(tape: _Tape, y: Tracer, x: Tracer, cotangent: Tracer) -> Tracer:
    """``cotangent · ∂y/∂x`` as new nodes of ``tape`` (zeros when ``y`` does not depend on ``x``)."""
    depends = {x._index}
    for i in range(x._index + 1, y._index + 1):
        if any(j in depends for j in tape.nodes[i].inputs):
            depends.add(i)
    cotangents: dict[int, Tracer] = {y._index: cotangent} if y._index in depends else {}
    for i in range(y._index, x._index, -1):
        g = cotangents.pop(i, None)
        node = tape.nodes[i]
        if g is None or node.dtype == "bool":
            continue
        inputs = [Tracer(tape, j) for j in node.inputs]
        for position, j in enumerate(node.inputs):
            if j not in depends or tape.nodes[j].dtype == "bool":
                continue
            part = _rule(tape, node, position, inputs, Tracer(tape, i), g)
            if part is not None:
                cotangents[j] = part if j not in cotangents else cotangents[j] + part
    found = cotangents.get(x._index)
    return found if found is not None else np.broadcast_to(Tracer(tape, tape.lift(0.0, "pn.grad")), x.shape)


def _unbroadcast(g: Tracer, shape: tuple[int, ...]) -> Tracer:
    """Sum ``g`` over the axes NumPy broadcasting added or stretched to reach ``g``'s shape from ``shape``."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(shape) if d == 1 and g.shape[lead + k] != 1)
    return np.reshape(np.sum(g, axis=axes) if axes else g, shape)


def _swap_last(x: Tracer) -> Tracer:
    swap = (*range(x.ndim - 2), x.ndim - 1, x.ndim - 2)
    node = x._tape.nodes[x._index]
    if node.op == "transpose" and tuple(node.attr("axes")) == swap:  # (Wᵀ)ᵀ is W: a network's x @ W.T
        return Tracer(x._tape, node.inputs[0])
    return np.transpose(x, swap)


def _zeros(tape: _Tape, shape) -> Tracer:
    return np.broadcast_to(Tracer(tape, tape.lift(0.0, "pn.grad")), tuple(shape))


def _scatter(tape: _Tape, g: Tracer, axis: int, positions, size: int) -> Tracer:
    """The transpose of picking ``positions`` along ``axis`` (of length ``size``): ``g`` placed at those positions,
    zeros elsewhere (repeated positions add). A contiguous run is padded with zero blocks; anything else is a
    product with a constant 0/1 selection matrix."""
    positions = list(positions)
    if len(positions) == size and positions == list(range(size)):
        return g
    start = positions[0]
    if positions == list(range(start, start + len(positions))):
        def block(n):
            return _zeros(tape, g.shape[:axis] + (n,) + g.shape[axis + 1:])
        parts = ([block(start)] if start else []) + [g] + \
            ([block(size - start - len(positions))] if start + len(positions) < size else [])
        return np.concatenate(parts, axis=axis)
    select = np.zeros((len(positions), size))
    np.add.at(select, (np.arange(len(positions)), positions), 1.0)
    moved = np.moveaxis(g, axis, -1) if g.ndim > 1 else g
    out = moved @ select
    return np.moveaxis(out, -1, axis) if g.ndim > 1 else out


def _getitem_rule(tape, node: Node, x: Tracer, g: Tracer) -> Tracer:
    shape, plan, axis = [], [], 0
    for entry in node.attr("index"):
        if entry is None:  # a new axis of length 1: dropped by the reshape below
            continue
        positions = [entry] if isinstance(entry, int) else list(range(*entry))
        shape.append(len(positions))
        plan.append((axis, positions))
        axis += 1
    g = np.reshape(g, (*shape, *x.shape[axis:]))
    for axis, positions in plan:
        g = _scatter(tape, g, axis, positions, x.shape[axis])
    return g


def _matmul_rule(position: int, a: Tracer, b: Tracer, g: Tracer) -> Tracer:
    if a.ndim == 1 and b.ndim == 1:
        return g * (b if position == 0 else a)
    a2 = a if a.ndim > 1 else np.reshape(a, (1, a.shape[0]))
    b2 = b if b.ndim > 1 else np.reshape(b, (b.shape[0], 1))
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    g2 = np.reshape(g, (*batch, a2.shape[-2], b2.shape[-1]))
    if position == 0:
        return np.reshape(_unbroadcast(g2 @ _swap_last(b2), a2.shape), a.shape)
    return np.reshape(_unbroadcast(_swap_last(a2) @ g2, b2.shape), b.shape)


def _reduction_rule(node: Node, x: Tracer, y: Tracer, g: Tracer) -> Tracer:
    axes = tuple(range(x.ndim)) if node.attr("axis") is None else node.attr("axis")
    if not axes:
        return g
    kept = tuple(1 if k in axes else d for k, d in enumerate(x.shape))
    gk = g if node.attr("keepdims") else np.reshape(g, kept)
    if node.op == "sum":
        return np.broadcast_to(gk, x.shape)
    if node.op == "mean":
        return np.broadcast_to(gk, x.shape) / float(np.prod([x.shape[k] for k in axes]))
    yk = y if node.attr("keepdims") else np.reshape(y, kept)
    if node.op == "prod":  # ∂(∏x)/∂x_k = ∏x / x_k (not defined by this rule where a factor is exactly 0)
        return gk * yk / x
    hits = np.where(x == yk, 1.0, 0.0)  # max/min: shared equally between tied elements, as JAX does
    return gk * hits / np.sum(hits, axis=axes, keepdims=True)


_UNARY_RULES: dict[str, Callable] = {  # (x, y, g) -> cotangent of x
    "negative": lambda x, y, g: -g,
    "exp": lambda x, y, g: g * y,
    "log": lambda x, y, g: g / x,
    "log1p": lambda x, y, g: g / (1.0 + x),
    "expm1": lambda x, y, g: g * (y + 1.0),
    "sin": lambda x, y, g: g * np.cos(x),
    "cos": lambda x, y, g: -g * np.sin(x),
    "tan": lambda x, y, g: g * (1.0 + y * y),
    "arcsin": lambda x, y, g: g / np.sqrt(1.0 - x * x),
    "arccos": lambda x, y, g: -g / np.sqrt(1.0 - x * x),
    "arctan": lambda x, y, g: g / (1.0 + x * x),
    "sinh": lambda x, y, g: g * np.cosh(x),
    "cosh": lambda x, y, g: g * np.sinh(x),
    "tanh": lambda x, y, g: g * (1.0 - y * y),
    "arcsinh": lambda x, y, g: g / np.sqrt(x * x + 1.0),
    "arccosh": lambda x, y, g: g / np.sqrt(x * x - 1.0),
    "arctanh": lambda x, y, g: g / (1.0 - x * x),
    "sqrt": lambda x, y, g: g * 0.5 / y,
    "abs": lambda x, y, g: g * np.sign(x),
    "sign": lambda x, y, g: None,
}

_BINARY_RULES: dict[str, Callable] = {  # (position, a, b, y, g) -> cotangent of input `position`, before unbroadcast
    "add": lambda k, a, b, y, g: g,
    "subtract": lambda k, a, b, y, g: g if k == 0 else -g,
    "multiply": lambda k, a, b, y, g: g * (b if k == 0 else a),
    "divide": lambda k, a, b, y, g: g / b if k == 0 else -g * y / b,
    # d(a^b)/db = a^b log a, taken as 0 where a <= 0 (JAX's convention at a = 0)
    "power": lambda k, a, b, y, g: (g * b * np.power(a, b - 1.0) if k == 0
                                    else g * y * np.log(np.where(a > 0, a, 1.0))),
    # ties split the cotangent equally between the two inputs, as JAX does
    "maximum": lambda k, a, b, y, g: g * _tie_weight(a > b, a == b, k),
    "minimum": lambda k, a, b, y, g: g * _tie_weight(a < b, a == b, k),
    "arctan2": lambda k, a, b, y, g: g * (b if k == 0 else -a) / (a * a + b * b),
    "logaddexp": lambda k, a, b, y, g: g * np.exp((a if k == 0 else b) - y),
}


_DIFFERENTIABLE_NETWORKS = ("pn.grad differentiates through networks of Linear and ConcatSquash layers, activations, "
                            "Sequential (pn.MLP), Residual and Augment")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_ACTIVATION_RULES: dict[str, Callable] = {  # the activation op, by name: (x, y, g) -> cotangent of x
    "tanh": lambda x, y, g: g * (1.0 - y * y),
    "relu": lambda x, y, g: np.where(x > 0, g, 0.0),  # 0 at x = 0, as JAX and torch
    "softplus": lambda x, y, g: g * _sigmoid(x),
    "sigmoid": lambda x, y, g: g * y * (1.0 - y),
    "elu": lambda x, y, g: np.where(x > 0, g, g * (y + 1.0)),  # y = expm1(x) below 0
    "silu": lambda x, y, g: g * _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))),
    "cube": lambda x, y, g: g * 3.0 * x * x,
    "rbf": lambda x, y, g: g * -2.0 * x * y,
    "identity": lambda x, y, g: g,
}


def _linear_rule(position: int, inputs: list[Tracer], g: Tracer) -> Tracer:
    """``y = x @ W.T + b`` over the last axis: x̄ = ȳ W, W̄ = ȳᵀ x and b̄ = ȳ, summed over any leading axes."""
    x, weight = inputs[0], inputs[1]
    if position == 0:
        return g @ weight
    rows = np.reshape(g, (-1, weight.shape[0]))
    if position == 2:
        return np.sum(rows, axis=0)
    return np.transpose(rows) @ np.reshape(x, (-1, weight.shape[1]))


def _tie_weight(first_wins, tied, position: int):
    weight = np.where(first_wins, 1.0, np.where(tied, 0.5, 0.0))
    return weight if position == 0 else 1.0 - weight


def _rule(tape: _Tape, node: Node, position: int, inputs: list[Tracer], y: Tracer, g: Tracer) -> Tracer | None:
    """The cotangent of input ``position`` of ``node`` (value ``y``) given the cotangent ``g`` of its value."""
    op, x = node.op, inputs[position]
    if op in _UNARY_RULES:
        return _UNARY_RULES[op](x, y, g)
    if op in _BINARY_RULES:
        return _unbroadcast(_BINARY_RULES[op](position, inputs[0], inputs[1], y, g), x.shape)
    if op == "integer_power":
        n = node.attr("exponent")
        return g * float(n) * x ** (n - 1) if n != 1 else g
    if op == "where":
        return None if position == 0 else _unbroadcast(
            np.where(inputs[0], g, 0.0) if position == 1 else np.where(inputs[0], 0.0, g), x.shape)
    if op == "matmul":
        return _matmul_rule(position, inputs[0], inputs[1], g)
    if op == "linear":
        return _linear_rule(position, inputs, g)
    if op == "activation":
        return _ACTIVATION_RULES[node.attr("name")](x, y, g)
    if op in ("conv2d", "group_norm"):
        raise SpecError(f"{_DIFFERENTIABLE_NETWORKS}, not through Conv2d or GroupNorm.")
    if op == "solve":  # y = a⁻¹ b: b̄ = a⁻ᵀ ȳ, ā = −b̄ yᵀ
        a = inputs[0]
        g_b = np.linalg.solve(np.transpose(a), g)
        if position == 1:
            return g_b
        return -(np.outer(g_b, y) if y.ndim == 1 else g_b @ np.transpose(y))
    if op in ("sum", "mean", "prod", "max", "min"):
        return _reduction_rule(node, x, y, g)
    if op == "stack":
        return g[(slice(None),) * node.attr("axis") + (position,)]
    if op == "concatenate":
        axis = node.attr("axis")
        start = sum(inputs[k].shape[axis] for k in range(position))
        return g[(slice(None),) * axis + (slice(start, start + x.shape[axis]),)]
    if op == "getitem":
        return _getitem_rule(tape, node, x, g)
    if op == "take":
        return _scatter(tape, g, node.attr("axis"), node.attr("indices"), x.shape[node.attr("axis")])
    if op == "reshape":
        return np.reshape(g, x.shape)
    if op == "transpose":
        return np.transpose(g, tuple(int(k) for k in np.argsort(node.attr("axes"))))
    if op == "broadcast_to":
        return _unbroadcast(g, x.shape)
    if op == "call":
        return _vjp(tape, _lowered_call(tape, node, x), x, g)
    raise SpecError(f"pn.grad cannot differentiate through the op {op!r}.")  # every float op has a rule above


# ---------------------------------------------------------------------- networks as ops
def _lowered_call(tape: _Tape, node: Node, x: Tracer) -> Tracer:
    """The network of a ``call`` node applied to ``x`` again, written in the graph's own ops."""
    name = node.attr("net")
    net = tape.nets[name]
    try:
        apply = numpy_layer(net)
    except NotSupportedError:
        raise SpecError(f"{_DIFFERENTIABLE_NETWORKS}; p.{name} is a {type(net).__name__} with other "
                        "layers.") from None
    weights = {slot.name: tape.add(Node("param", (), (("name", f"{name}.{slot.name}"),), slot.shape))
               for slot in param_layout(net)}
    time = Tracer(tape, 0)  # a dynamics trace records t first
    return apply(weights.__getitem__, time, x)
