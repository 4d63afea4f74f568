"""The Julia compiler of the neutral expression graph: a :class:`pyneuralode.Dynamics` as generated Julia source.

:func:`julia_source` writes ONE out-of-place Julia function of one sample, ``function (u, p, t, nets, c) ... end``:
straight-line code, one assignment per graph node, no mutation, only Base functions (broadcasts, ``sum``/``prod``/
``maximum``/``minimum`` with ``dims``, ``dropdims``, ``reshape``, ``permutedims``, ``cat``/``vcat``, ``ifelse``,
indexing, ``*`` and ``transpose``), all of which Zygote (through ChainRules), ReverseDiff and ForwardDiff
differentiate. ``p`` is the canonical flat parameter vector (each declared parameter is read as its slice), ``nets``
a tuple of callables ``(x, p, t) -> y`` (PyNeuralODEJL's network nodes, the same Lux layers as a ``pn.Network``, each
reading its own slice of ``p``), ``c`` a tuple of the constant and literal arrays. PyNeuralODEJL's
``DynamicsField`` (``julia/src/dynamics.jl``) evaluates the source once and maps the function over the batch.

Layout: a value of NumPy per-sample shape ``s`` is a Julia array of shape ``reverse(s)`` over the same memory
(NumPy's row-major order is Julia's column-major order of the reversed shape); shape ``()`` is a Julia number. Under
this map NumPy's broadcasting (align trailing axes, pad leading ones) is Julia's (align leading axes, pad trailing
ones), NumPy axis ``k`` of a rank-``r`` value is Julia dimension ``r - k``, and a row-major reshape is a
column-major reshape to the reversed shape. The small ``julia_*`` functions below hold each of these index maps;
tests restate them on NumPy transposes (``x.T`` is exactly the Julia view of ``x``).

:func:`loss_source` compiles the graph of a :func:`pyneuralode.loss` the same way (same op texts, same layout map)
to ``function (a1, a2, ..., c) ... end`` over whole arrays: ``a1`` is ``ys``, ``a2`` the target, then the further
arrays in the function's order; PyNeuralODEJL's ``GraphLoss`` (``julia/src/loss.jl``) takes its value and Zygote
gradient with respect to ``ys``.
"""

from __future__ import annotations

import math

import numpy as np

from ..._errors import NotSupportedError
from ..._graph import BINARY, OPS, REDUCTIONS, UNARY, Graph, Literal, Node
from ..._params import param_layout

UNARY_JULIA: dict[str, str] = {
    "negative": "-", "exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1", "sin": "sin", "cos": "cos",
    "tan": "tan", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh",
    "tanh": "tanh", "arcsinh": "asinh", "arccosh": "acosh", "arctanh": "atanh", "sqrt": "sqrt", "abs": "abs", "sign": "sign", "logical_not": "!",
}
"""NumPy unary op -> the Julia scalar function broadcast over the value (``f.(x)``)."""

BINARY_JULIA: dict[str, str] = {
    "add": "{a} .+ {b}", "subtract": "{a} .- {b}", "multiply": "{a} .* {b}", "divide": "{a} ./ {b}",
    "power": "{a} .^ {b}", "maximum": "max.({a}, {b})", "minimum": "min.({a}, {b})", "arctan2": "atan.({a}, {b})",
    # log(exp(a) + exp(b)) without overflow, as NumPy computes it
    "logaddexp": "max.({a}, {b}) .+ log1p.(exp.(.-abs.({a} .- {b})))",
    "less": "{a} .< {b}", "less_equal": "{a} .<= {b}", "greater": "{a} .> {b}", "greater_equal": "{a} .>= {b}",
    "equal": "{a} .== {b}", "not_equal": "{a} .!= {b}", "logical_and": "{a} .& {b}", "logical_or": "{a} .| {b}",
}
"""NumPy binary op -> its Julia broadcast expression (NumPy broadcasting is Julia's under the layout map)."""

ACTIVATION_JULIA: dict[str, str] = {
    "tanh": "tanh.({x})", "relu": "max.({x}, 0)", "softplus": "(max.({x}, 0) .+ log1p.(exp.(.-abs.({x}))))",
    "sigmoid": "(1 ./ (1 .+ exp.(.-{x})))", "elu": "ifelse.({x} .> 0, {x}, expm1.(min.({x}, 0)))",
    "silu": "({x} ./ (1 .+ exp.(.-{x})))", "cube": "({x} .^ 3)", "rbf": "exp.(.-({x} .* {x}))", "identity": "{x}",
}
"""The ``activation`` op by name -> its Julia broadcast expression (each the NumPy definition of the name)."""

REDUCTION_JULIA: dict[str, str] = {"sum": "sum", "mean": "sum", "prod": "prod", "max": "maximum", "min": "minimum"}
"""NumPy reduction -> the Julia reduction (``mean`` is ``sum`` divided by the count, known statically)."""

ARGS = ("u", "p", "t", "nets", "c")
"""The generated function's arguments: one sample, the flat parameters, the time, the networks, the constants."""


# ------------------------------------------------------------------------------------------------ index maps
def julia_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The Julia shape of a value of NumPy shape ``shape``: reversed."""
    return tuple(reversed(shape))


def julia_dims(axes: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """Julia's (1-based) dimensions for NumPy's (0-based, non-negative) ``axes`` of a rank-``rank`` value."""
    return tuple(sorted(rank - k for k in axes))


def julia_permutation(axes: tuple[int, ...]) -> tuple[int, ...]:
    """``permutedims`` order for ``np.transpose(x, axes)``: result dim ``j`` is NumPy result axis ``r - j``, which is
    input axis ``axes[r - j]``, i.e. Julia input dim ``r - axes[r - j]``."""
    r = len(axes)
    return tuple(r - axes[r - j] for j in range(1, r + 1))


def julia_stack_dim(axis: int, rank: int) -> int:
    """The Julia dimension of the new axis of ``np.stack(xs, axis)`` for inputs of rank ``rank``."""
    return rank - axis + 1


def julia_index(index: tuple, rank: int) -> list:
    """Julia indices, one per input dimension in Julia order, for a ``getitem`` index: an int ``i`` -> ``i + 1``, a
    slice ``(start, stop, step)`` -> the range ``start + 1 : step : stop``, an axis not indexed -> ``Colon``.
    ``None`` entries insert axes and consume none (the caller reshapes)."""
    numpy_axes: list = []
    for entry in index:
        if entry is None:
            continue
        numpy_axes.append(entry + 1 if isinstance(entry, int) else range(entry[0] + 1, entry[1] + 1, entry[2]))
    numpy_axes += [slice(None)] * (rank - len(numpy_axes))
    return list(reversed(numpy_axes))


def julia_take_index(axis: int, indices: tuple[int, ...], rank: int) -> list:
    """Julia indices, one per input dimension in Julia order, for ``np.take(x, indices, axis)``: the 1-based
    positions as a vector at Julia dimension ``rank - axis``, ``Colon`` elsewhere."""
    entries: list = [slice(None)] * rank
    entries[rank - 1 - axis] = [i + 1 for i in indices]
    return entries


def _index_text(entry) -> str:
    if isinstance(entry, list):
        return f"[{', '.join(map(str, entry))}]"
    if isinstance(entry, int):
        return str(entry)
    if isinstance(entry, slice):
        return ":"
    start, stop, step = entry.start, entry.stop - 1, entry.step
    return f"{start}:{stop}" if step == 1 else f"{start}:{step}:{stop}"


# ------------------------------------------------------------------------------------------------ emission
def _float(value: float, dtype: str) -> str:
    if math.isnan(value):
        text = "NaN"
    elif math.isinf(value):
        text = "Inf" if value > 0 else "-Inf"
    else:
        text = repr(float(value))
    if dtype == "float32":
        text = f"Float32({text})"
    return f"({text})" if text.startswith("-") else text


def _dims_text(dims: tuple[int, ...]) -> str:
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(map(str, dims))})"


def _shape_args(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, julia_shape(shape)))


class _Emitter:
    """Julia source of one graph; ``constants`` collects the arrays passed in ``c`` (flat, row-major, with their
    NumPy shapes)."""

    values = "per-sample values"  # what the graph's values are, for error messages

    def __init__(self, dyn, dtype: str):
        self.dyn, self.dtype = dyn, dtype
        self.slots = {slot.name: slot for slot in param_layout(dyn)}
        self.nets = {name: k for k, (name, _) in enumerate(dyn.nets, start=1)}
        self.constants: list[np.ndarray] = []
        self._constant_index: dict[object, int] = {}

    def _constant(self, key, array: np.ndarray) -> str:
        if key not in self._constant_index:
            self.constants.append(np.ascontiguousarray(array))
            self._constant_index[key] = len(self.constants)
        return f"c[{self._constant_index[key]}]"

    def leaf(self, node: Node, args: list[str]) -> str:
        op = node.op
        if op in ("time", "state"):
            return "t" if op == "time" else "u"
        if op == "param":
            slot = self.slots[node.attr("name")]
            first, last = slot.offset + 1, slot.stop
            if slot.shape == ():
                return f"p[{first}]"
            if len(slot.shape) == 1:
                return f"p[{first}:{last}]"
            return f"reshape(p[{first}:{last}], {_shape_args(slot.shape)})"
        if op == "call":
            return f"nets[{self.nets[node.attr('net')]}]({args[0]}, p, t)"
        if op == "constant":
            array = dict(self.dyn.constants)[node.attr("name")].array
            ref = self._constant(("constant", node.attr("name")), array)
            return f"{ref}[1]" if array.shape == () else ref  # a 0-d array's value is a number
        value: Literal = node.attr("value")
        array = value.array
        if array.shape == ():
            return ("true" if array else "false") if array.dtype == np.bool_ else _float(float(array), self.dtype)
        return self._constant(("literal", value), array)

    def op(self, node: Node, args: list[str], shapes: list[tuple[int, ...]]) -> str:
        op, rank = node.op, len(shapes[0]) if shapes else 0
        if op in UNARY:
            return f"-({args[0]})" if op == "negative" else f"({UNARY_JULIA[op]}).({args[0]})"
        if op in BINARY:
            return "(" + BINARY_JULIA[op].format(a=args[0], b=args[1]) + ")"
        if op in REDUCTIONS:
            return self.reduction(node, args[0], shapes[0])
        if op == "integer_power":
            return f"({args[0]} .^ {node.attr('exponent')})"
        if op == "where":
            return f"ifelse.({args[0]}, {args[1]}, {args[2]})"
        if op == "solve":  # NumPy's a is the Julia view aᵀ, a NumPy matrix b is bᵀ (the layout map)
            return f"(transpose({args[0]}) \\ {args[1]})" if len(shapes[1]) == 1 else f"({args[1]} / {args[0]})"
        if op == "matmul":
            return self.matmul(args, shapes)
        if op == "linear" and rank == 1:  # a network pn.grad wrote out: NumPy's W @ x is transpose(W_jl) * x
            return f"(transpose({args[1]}) * {args[0]}{f' .+ {args[2]}' if len(args) == 3 else ''})"
        if op == "activation":
            return ACTIVATION_JULIA[node.attr("name")].format(x=args[0])
        if op == "stack":
            return self.stack(node, args, shapes[0])
        if op == "concatenate":
            return f"cat({', '.join(args)}; dims = {rank - node.attr('axis')})"
        if op == "getitem":
            return self.getitem(node, args[0], shapes[0])
        if op == "take":  # a vector index: Zygote's getindex rule accumulates repeated positions
            entries = julia_take_index(node.attr("axis"), node.attr("indices"), rank)
            return f"{args[0]}[{', '.join(_index_text(e) for e in entries)}]"
        if op == "reshape":
            target = node.attr("shape")
            if rank == 0:
                return f"fill({args[0]}, {_shape_args(target)})" if target else args[0]
            return f"{args[0]}[1]" if target == () else f"reshape({args[0]}, {_shape_args(target)})"
        if op == "transpose":
            if rank <= 1:
                return args[0]
            return f"permutedims({args[0]}, {_dims_text(julia_permutation(node.attr('axes')))})"
        if op == "broadcast_to":
            target = node.attr("shape")
            if rank == 0:
                return f"fill({args[0]}, {_shape_args(target)})" if target else args[0]
            return f"({args[0]} .* trues({_shape_args(target)}))"
        raise NotSupportedError(f"The graph op {op!r} has no Julia translation.")

    def reduction(self, node: Node, x: str, shape: tuple[int, ...]) -> str:
        fn, rank = REDUCTION_JULIA[node.op], len(shape)
        axes = node.attr("axis")
        axes = tuple(range(rank)) if axes is None else tuple(axes)
        count = int(np.prod([shape[k] for k in axes])) if axes else 1
        scale = f" ./ {count}" if node.op == "mean" else ""
        if not axes:
            return x  # a number, or no axis reduced
        if len(axes) == rank:  # every axis: a number, or an all-ones array of it with keepdims
            whole = f"{fn}({x}){scale}"
            return f"fill({whole}, {', '.join('1' * rank)})" if node.attr("keepdims") else f"({whole})"
        dims = _dims_text(julia_dims(axes, rank))
        reduced = f"({fn}({x}; dims = {dims}){scale})"
        return reduced if node.attr("keepdims") else f"dropdims({reduced}; dims = {dims})"

    def matmul(self, args: list[str], shapes: list[tuple[int, ...]]) -> str:
        a, b = args
        ranks = (len(shapes[0]), len(shapes[1]))
        if ranks == (1, 1):
            return f"sum({a} .* {b})"  # the dot product: a number
        if ranks == (2, 1):
            return f"(transpose({a}) * {b})"  # Julia holds A as (k, m): A @ b = transpose(A_jl) * b
        if ranks in ((1, 2), (2, 2)):
            return f"({b} * {a})"  # (A @ B) reversed is B_jl * A_jl
        raise NotSupportedError(f"matmul of {len(shapes[0])}-D by {len(shapes[1])}-D {self.values} is not "
                                "available on backend 'julia' yet (1-D and 2-D operands are): use backend='jax' or "
                                "'torch', or write it with np.sum over a broadcast product.")

    @staticmethod
    def stack(node: Node, args: list[str], shape: tuple[int, ...]) -> str:
        rank = len(shape)
        if rank == 0:
            return f"vcat({', '.join(args)})"  # numbers -> a vector
        dim = julia_stack_dim(node.attr("axis"), rank)
        if dim != rank + 1:  # not Julia's trailing dimension: insert the singleton dimension first
            jshape = list(julia_shape(shape))
            jshape.insert(dim - 1, 1)
            args = [f"reshape({a}, {', '.join(map(str, jshape))})" for a in args]
        return f"cat({', '.join(args)}; dims = {dim})"

    @staticmethod
    def getitem(node: Node, x: str, shape: tuple[int, ...]) -> str:
        picked = f"{x}[{', '.join(_index_text(e) for e in julia_index(node.attr('index'), len(shape)))}]"
        if node.shape == () or _getitem_kept_shape(node.attr("index"), shape) == node.shape:
            return picked
        return f"reshape({picked}, {_shape_args(node.shape)})"  # `None` entries insert axes


def _live(graph: Graph) -> list[int]:
    live, stack = set(), [graph.output]
    while stack:
        i = stack.pop()
        if i not in live:
            live.add(i)
            stack.extend(graph.nodes[i].inputs)
    return sorted(live)


def emit_expression(emitter: _Emitter, graph: Graph, i: int, names: dict[int, str]) -> str:
    """The Julia expression of node ``i`` (its inputs already named in ``names``)."""
    node = graph.nodes[i]
    args = [names[j] for j in node.inputs]
    if node.op in ("time", "state", "param", "call", "constant", "literal"):
        return emitter.leaf(node, args)
    return emitter.op(node, args, [graph.nodes[j].shape for j in node.inputs])


def _getitem_kept_shape(index: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The NumPy shape of ``x[index]`` without the axes that ``None`` entries insert."""
    kept, axis = [], 0
    for entry in index:
        if entry is None:
            continue
        if isinstance(entry, tuple):
            kept.append(len(range(*entry)))
        axis += 1
    return tuple(kept) + tuple(shape[axis:])


def _function_source(graph: Graph, emitter: _Emitter, arguments: tuple[str, ...], dtype: str) -> str:
    """The anonymous Julia function of ``arguments`` that computes ``graph``: one assignment per live node."""
    if dtype not in ("float32", "float64"):
        raise NotSupportedError(f"dtype {dtype!r} is not available on backend 'julia'.")
    unknown = {node.op for node in graph.nodes} - set(OPS)
    if unknown:
        raise NotSupportedError(f"The graph ops {sorted(unknown)} have no Julia translation.")
    names: dict[int, str] = {}
    body = []
    for i in _live(graph):
        expr = emit_expression(emitter, graph, i, names)
        names[i] = f"v{i}"
        body.append(f"    v{i} = {expr}")
    return "\n".join([f"function ({', '.join(arguments)})", *body, f"    return v{graph.output}", "end", ""])


def julia_source(dyn, dtype: str = "float64") -> tuple[str, list[np.ndarray]]:
    """``(source, constants)``: the generated Julia function of ``dyn`` (see the module docstring) and the arrays
    (row-major, NumPy shapes) that the function reads as ``c[1], c[2], ...``."""
    emitter = _Emitter(dyn, dtype)
    return _function_source(dyn.graph, emitter, ARGS, dtype), emitter.constants


class _LossEmitter(_Emitter):
    """Julia source of a :func:`pyneuralode.loss` graph: its ``constant`` leaves are the function's arguments, read
    by position (``a1`` is ``ys``), its literal arrays go to ``c``. Every other op is emitted as for dynamics."""

    values = "arrays in a pn.loss"

    def __init__(self, names: tuple[str, ...], dtype: str):  # noqa: D107 - no dynamics: no parameters or networks
        self.dtype = dtype
        self.arguments = {name: f"a{k}" for k, name in enumerate(names, start=1)}
        self.constants: list[np.ndarray] = []
        self._constant_index: dict[object, int] = {}

    def leaf(self, node: Node, args: list[str]) -> str:
        if node.op == "constant":
            ref = self.arguments[node.attr("name")]
            return f"{ref}[1]" if node.shape == () else ref  # a 0-d array's value is a number
        if node.op == "literal":
            return super().leaf(node, args)
        raise NotSupportedError(f"A pn.loss graph cannot hold the op {node.op!r} (it is a function of its arrays "
                                "only).")


def loss_source(graph: Graph, names: tuple[str, ...], dtype: str = "float64") -> tuple[str, list[np.ndarray]]:
    """``(source, constants)`` for the traced graph of a :func:`pyneuralode.loss` function whose arguments are
    ``names`` (``ys``, the target, then the further arrays): ``function (a1, ..., an, c) ... end`` returning the
    scalar loss, and the literal arrays (row-major, NumPy shapes) it reads as ``c[1], c[2], ...``."""
    emitter = _LossEmitter(names, dtype)
    arguments = (*emitter.arguments.values(), "c")
    return _function_source(graph, emitter, arguments, dtype), emitter.constants


def dynamics_arguments(dyn, dtype: str) -> tuple:
    """The positional arguments of PyNeuralODEJL's ``build_dynamics`` for ``dyn``: the source, the Julia shape of a
    sample, the parameter count, ``(description, offset, count)`` per network, the constant arrays (flat,
    row-major) and their Julia shapes. Tuples throughout: juliacall converts a tuple's elements (a list would
    arrive as a ``PyList`` of unconverted objects)."""
    from ..._params import num_params
    from ._network import describe_network

    if len(dyn.state) != 1:
        raise NotSupportedError(f"pn.dynamics with a {len(dyn.state)}-D state {dyn.state} is not available on "
                                "backend 'julia' yet (it takes states of shape (D,)): use backend='jax' or 'torch'.")
    source, constants = julia_source(dyn, dtype)
    offset = sum(v.array.size for _, v in dyn.params)
    nets = []
    for _, net in dyn.nets:
        count = num_params(net)
        nets.append((describe_network(net), offset, count))
        offset += count
    flat = tuple(np.ravel(c).astype(np.bool_ if c.dtype == np.bool_ else dtype) for c in constants)
    return (source, julia_shape(dyn.state), num_params(dyn), tuple(nets), flat,
            tuple(julia_shape(c.shape) for c in constants))
