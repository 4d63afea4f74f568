"""Trace a user's NumPy ``f(t, u, p)`` into a :class:`pyneuralode._graph.Graph`, once, at definition time.

``f`` is called with symbolic arrays (:class:`Tracer`) that implement NumPy's ``__array_ufunc__`` and
``__array_function__`` protocols: ``np.exp(u)``, ``u[0] * p.alpha``, ``np.stack([...])`` or ``W @ u`` each append
a node instead of computing. Shapes are inferred by running NumPy itself on placeholder arrays, so broadcasting,
``matmul`` and reduction shapes are exactly NumPy's. What cannot be represented raises one ``SpecError`` naming
the operation: Python control flow on a traced value (``if``, ``bool()``, ``float()``; use ``np.where``),
functions outside :data:`SUPPORTED`, ``np.array([...])`` of traced values (use ``np.stack``), data-dependent
indexing.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

import numpy as np

from ._errors import SpecError
from ._graph import BINARY, NUMPY_OPS, UNARY, Graph, Literal, Node

_UFUNCS: dict[Any, str] = {getattr(np, name): name for name in (*UNARY, *BINARY)}  # np.abs is np.absolute
_UFUNC_NAMES = sorted({f"np.{u.__name__}" for u in _UFUNCS} | {"np.square", "np.reciprocal", "np.positive",
                                                                 "np.fabs", "np.matmul", "np.log2", "np.log10",
                                                                 "np.exp2", "np.cbrt", "np.hypot", "np.heaviside",
                                                                 "np.float_power", "np.deg2rad", "np.rad2deg",
                                                                 "np.logical_xor", "np.fmax", "np.fmin"})
_FUNCTION_NAMES = ("np.sum", "np.mean", "np.prod", "np.max", "np.min", "np.amax", "np.amin", "np.var", "np.std",
                   "np.any", "np.all", "np.cumsum", "np.diff", "np.einsum", "np.inner", "np.vdot", "np.stack",
                   "np.concatenate", "np.where", "np.clip", "np.reshape", "np.ravel", "np.transpose",
                   "np.squeeze", "np.expand_dims", "np.broadcast_to", "np.dot", "np.outer", "np.zeros_like",
                   "np.ones_like", "np.full_like", "np.copy", "np.atleast_1d", "np.hstack", "np.vstack",
                   "np.append", "np.column_stack", "np.linalg.norm (vector ord 1, 2, inf, p; matrix 'fro')",
                   "np.linalg.solve", "np.linalg.inv", "np.take", "np.flip",
                   "np.roll", "np.repeat", "np.tile", "np.cross", "np.interp (forcing from data)", "np.shape",
                   "np.ndim", "np.size", "np.array([...]) of traced values")
SUPPORTED = (*_UFUNC_NAMES, *_FUNCTION_NAMES, "+ - * / ** @, unary -, abs()", "comparisons < <= > >= == !=",
             "& | ~ on booleans",
             "indexing and slicing with constants (x[0], x[1:3], x[::-1], x[:, None], x[..., 0], x[[2, 0]], "
             "x[mask] with a constant boolean mask)",
             "x.T, x.reshape, x.sum/mean/prod/max/min/var/std/any/all, x.transpose, x.ravel, x.squeeze, x.clip, "
             "x.dot, x.copy(), x.astype(float), x.shape/ndim/size",
             "p.<net>(x) for the networks in nets=")
"""What a traced field may use (listed in the error for anything else)."""


def _unsupported(what: str) -> SpecError:
    return SpecError(f"{what} is not supported in a pn.dynamics function. Supported: {', '.join(SUPPORTED)}.")


_CONTROL_FLOW = ("cannot be used in Python control flow (if/while/and/or/bool()/float()/int()) inside a "
                 "pn.dynamics function: the function is traced once, so the value is symbolic. Write branches "
                 "as np.where(condition, a, b), use np.minimum/np.maximum/np.clip for limits, and NumPy's "
                 "functions (np.exp, np.sin...) rather than the math module's. (A NumPy function on np.array([...]) of traced "
                 "values compares its elements in Python: build that array with np.stack([...]) instead.)")


_NO_ARRAY = ("A traced value cannot become a concrete numpy array of numbers (np.array(..., dtype=float), "
             "np.asarray(x, float), or a numpy function outside the supported set) inside a pn.dynamics function: "
             "build arrays of traced values with np.stack([...]) or np.concatenate([...]).")


def _foreign(library: str) -> str:
    return (f"{library} functions cannot run on the traced values of a pn.dynamics function: write it with NumPy "
            "(np.sin, np.stack, @, ...), which pyneuralode compiles to JAX, torch and Julia itself.")


def _traced_by_torch(err: BaseException) -> bool:
    """Whether ``err`` is torch refusing a traced value (``sin(): argument 'input' must be Tensor, not Tracer``)."""
    return "must be Tensor, not Tracer" in str(err)


def _raised_in_scipy(err: BaseException) -> bool:
    """Whether ``err`` was raised inside SciPy (an interpolant or special function called on a traced value)."""
    tb = err.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("scipy"):
            return True
        tb = tb.tb_next
    return False


_SCIPY = (_foreign("SciPy") + " For forcing from data use np.interp(t, times, values), or wrap a SciPy spline "
          "(CubicSpline, PchipInterpolator, ...) in pn.Spline(...) and call that.")


_ASSIGNMENT = ("Assigning into an array (du[i] = ...) is not supported in a pn.dynamics function, which must not "
               "mutate: build the derivative from its parts with np.stack([...]) or np.concatenate([...]), and "
               "select with np.where.")


class Tracer(np.lib.mixins.NDArrayOperatorsMixin):
    """A symbolic array standing for one node of the graph being traced (one sample, no batch axis).

    Python operators come from NumPy's ``NDArrayOperatorsMixin``, which routes each one through its ufunc
    (``a + b`` is ``np.add(a, b)``), so operators and functions share one path: :meth:`__array_ufunc__`."""

    __array_priority__ = 1000

    def __init__(self, tape: _Tape, index: int):
        self._tape, self._index = tape, index

    # ------------------------------------------------------------------ array-like attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return self._tape.nodes[self._index].shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self):
        return np.dtype(bool) if self._tape.nodes[self._index].dtype == "bool" else np.dtype(float)

    def __repr__(self):
        return f"Tracer(shape={self.shape}, node=%{self._index})"

    def __len__(self):
        if not self.shape:
            raise SpecError("len() of a 0-d traced value.")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ------------------------------------------------------------------ no concrete values while tracing
    def _no_value(self, *args, **kwargs):
        raise SpecError(f"A traced value {_CONTROL_FLOW}")

    __bool__ = __float__ = __int__ = __index__ = __complex__ = _no_value

    def __array__(self, dtype=None, copy=None):
        """``np.array([a, b])`` of traced values (as ``jnp.array`` in JAX): a NumPy *object* array of traced
        scalars, which becomes one ``stack`` when it meets a traced value, a ufunc or the function's return."""
        if dtype is not None and np.dtype(dtype) != np.dtype(object):
            raise SpecError(_NO_ARRAY)
        out = np.empty(self.shape, dtype=object)
        for index in np.ndindex(self.shape):
            out[index] = self[index] if self.shape else self
        return out

    # ------------------------------------------------------------------ NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # NumPy's own ufuncs by their np. name; another library's (scipy.special.erf) by its own
        name = f"np.{ufunc.__name__}" if getattr(np, ufunc.__name__, None) is ufunc else \
            f"the ufunc {ufunc.__name__} (not NumPy's; scipy.special's ufuncs are not traced)"
        if method != "__call__":
            raise _unsupported(f"{name}.{method}")
        if kwargs:
            raise _unsupported(f"{name}(..., {', '.join(kwargs)}=...)")
        tape = self._tape
        if ufunc is np.matmul:
            return tape.emit("matmul", inputs, what="@ / np.matmul")
        if ufunc is np.positive:
            return inputs[0]
        if ufunc is np.square:
            return tape.emit("integer_power", inputs, (("exponent", 2),), what=name)
        if ufunc is np.reciprocal:
            return tape.emit("divide", (1.0, inputs[0]), what=name)
        if ufunc is np.fabs:
            ufunc = np.absolute
        if ufunc in _BITWISE:  # & | ~ on booleans are the logical ops (NumPy's operators call the bitwise ufuncs)
            if not all(_is_bool(x) for x in inputs):
                raise _unsupported(f"{name} on non-boolean values")
            ufunc = _BITWISE[ufunc]
        if ufunc is np.power and not isinstance(inputs[1], Tracer) and _is_integral_scalar(inputs[1]):
            # x ** n with an integer literal n: exact for negative x on every backend (JAX's float pow is NaN there)
            return tape.emit("integer_power", inputs[:1], (("exponent", int(np.asarray(inputs[1]))),), what=name)
        if ufunc in _LOWERED_UFUNCS:  # NumPy ufuncs written with the graph's ops
            return _LOWERED_UFUNCS[ufunc](tape, *inputs)
        if ufunc not in _UFUNCS:
            raise _unsupported(name)
        return tape.emit(_UFUNCS[ufunc], inputs, what=name)

    def __array_function__(self, func, types, args, kwargs):
        impl = _FUNCTIONS.get(func)
        if impl is None:
            module = "np.linalg." if getattr(func, "__module__", "").endswith("linalg") else "np."
            raise _unsupported(f"{module}{getattr(func, '__name__', func)}")
        return impl(self._tape, *args, **kwargs)

    __hash__ = object.__hash__  # NDArrayOperatorsMixin's __eq__ is elementwise, as NumPy's

    def __setitem__(self, index, value):
        raise SpecError(_ASSIGNMENT)

    def __getitem__(self, index):
        return _getitem(self._tape, self, index)

    # ------------------------------------------------------------------ ndarray-style methods
    @property
    def T(self):
        return _transpose(self._tape, self)

    def reshape(self, *shape):
        return _reshape(self._tape, self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return _transpose(self._tape, self, (axes[0] if len(axes) == 1 else axes) or None)

    def ravel(self):
        return _reshape(self._tape, self, (-1,))

    flatten = ravel

    def squeeze(self, axis=None):
        return _squeeze(self._tape, self, axis)

    def clip(self, min=None, max=None):
        return _clip(self._tape, self, min, max)

    def dot(self, other):
        return _dot(self._tape, self, other)

    def sum(self, axis=None, keepdims=False):
        return _reduce("sum")(self._tape, self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return _reduce("mean")(self._tape, self, axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False):
        return _reduce("prod")(self._tape, self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _reduce("max")(self._tape, self, axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False):
        return _reduce("min")(self._tape, self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, ddof=0, keepdims=False):
        return _var(self._tape, self, axis=axis, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, ddof=0, keepdims=False):
        return _std(self._tape, self, axis=axis, ddof=ddof, keepdims=keepdims)

    def any(self, axis=None, keepdims=False):
        return _any(self._tape, self, axis=axis, keepdims=keepdims)

    def all(self, axis=None, keepdims=False):
        return _all(self._tape, self, axis=axis, keepdims=keepdims)

    def copy(self):
        return self  # traced values are never mutated

    def astype(self, dtype, copy=True):
        if np.dtype(dtype).kind != "f":
            raise _unsupported(f"x.astype({np.dtype(dtype).name}) (a traced value is real; only float types)")
        return self

    def __round__(self, ndigits=None):
        raise _unsupported("round()")

    def __getattr__(self, name):  # any other ndarray attribute: name it and list what is supported
        if name.startswith("__") or name.startswith("_"):
            raise AttributeError(name)
        if name in ("weak_type", "aval"):  # what jax.numpy asks of its arguments
            raise SpecError(_foreign("jax.numpy"))
        raise _unsupported(f"x.{name}")


for _name in (*UNARY, "log2", "log10", "exp2", "cbrt", "deg2rad", "rad2deg"):
    # NumPy's object-dtype loops call the method named after the ufunc on each element: np.exp(np.array([a, b]))
    if _name not in ("negative", "abs", "sign", "logical_not"):
        setattr(Tracer, _name, (lambda ufunc: lambda self: ufunc(self))(getattr(np, _name)))

_BITWISE = {np.bitwise_and: np.logical_and, np.bitwise_or: np.logical_or, np.invert: np.logical_not}


def _is_bool(x) -> bool:
    return x.dtype == np.bool_ if isinstance(x, Tracer) else np.asarray(x).dtype == np.bool_


def _is_integral_scalar(x) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, (numbers.Integral, np.integer)):
        return True
    if isinstance(x, (float, np.floating)) or (isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind == "f"):
        v = float(x)
        return v.is_integer() and abs(v) <= 64
    return False


class _Tape:
    """The nodes recorded so far; ``emit`` appends one with NumPy-inferred shape and dtype."""

    def __init__(self):
        self.nodes: list[Node] = []
        self._seen: dict[Node, int] = {}
        self.nets: dict[str, Any] = {}  # the specs behind ``call`` nodes, by name (pn.grad expands them into ops)

    def add(self, node: Node) -> Tracer:
        """Append ``node``, or reuse an identical earlier one: every op is pure, so ``u[1]`` written three times is
        one node (common-subexpression elimination; XLA does it for JAX, but torch and Julia run the graph as
        recorded — a two-line field went from 12 recorded ops to 10)."""
        index = len(self.nodes)
        try:
            index = self._seen.setdefault(node, index)
        except TypeError:  # an attribute that cannot be hashed: keep the node as it is
            pass
        if index == len(self.nodes):
            self.nodes.append(node)
        return Tracer(self, index)

    def lift(self, x, what: str) -> int:
        """The node index of ``x``: a Tracer of this trace, or a new ``literal`` node for a number/array."""
        if isinstance(x, Tracer):
            if x._tape is not self:
                raise SpecError("A traced value from another pn.dynamics trace leaked into this one.")
            return x._index
        if isinstance(x, (list, tuple)) and any(isinstance(e, Tracer) for e in _flatten(x)):
            # NumPy reads a (nested) list as its elements stacked on a new first axis: np.concatenate([u, [t]])
            items = [Tracer(self, self.lift(e, what)) for e in x]
            if len({e.shape for e in items}) > 1:
                raise SpecError(f"{what} got a Python list of traced values of different shapes "
                                f"{[e.shape for e in items]}: join them with np.concatenate([...]).")
            return self.emit("stack", items, (("axis", 0),), what=what)._index
        if isinstance(x, np.ndarray) and x.dtype == object:  # np.array([a, b]) of traced values (see __array__)
            return self._lift_objects(x, what)
        try:
            array = np.asarray(x)
        except Exception:  # noqa: BLE001 - any non-numeric object
            array = None
        if array is None or array.dtype.kind not in "biuf":
            raise SpecError(f"{what} got {type(x).__name__} {x!r}: a pn.dynamics function may combine traced "
                            "values only with real numbers and numpy arrays.")
        literal = Literal(array)
        return self.add(Node("literal", (), (("value", literal),), literal.array.shape,
                             "bool" if literal.array.dtype == np.bool_ else "float"))._index

    def _lift_objects(self, x: np.ndarray, what: str) -> int:
        if x.size == 0:
            raise SpecError(f"{what} got an empty object array.")
        if x.ndim == 0:
            return self.lift(x[()], what)
        flat = [Tracer(self, self.lift(e, what)) for e in x.reshape(-1)]
        if any(e.shape != () for e in flat):
            raise SpecError(f"{what} got a NumPy object array whose elements are arrays: build arrays of traced "
                            "values with np.stack([...]).")
        if all(e.dtype == flat[0].dtype for e in flat) is False:
            raise SpecError(f"{what} got a NumPy object array mixing booleans and numbers.")
        stacked = self.emit("stack", flat, (("axis", 0),), what="np.array([...])")
        return (stacked if x.ndim == 1 else _reshape(self, stacked, x.shape))._index

    def emit(self, op: str, inputs, attrs=(), *, what: str) -> Tracer:
        """Append ``op(inputs; attrs)``; its shape/dtype come from running NumPy on placeholder inputs."""
        indices = tuple(self.lift(x, what) for x in inputs)
        node = Node(op, indices, tuple(attrs))
        placeholders = [np.ones(self.nodes[i].shape, dtype=bool if self.nodes[i].dtype == "bool" else float)
                        for i in indices]
        try:
            with np.errstate(all="ignore"):
                value = np.asarray(NUMPY_OPS[op](node, *placeholders))
        except (ValueError, IndexError, TypeError) as err:
            shapes = ", ".join(str(self.nodes[i].shape) for i in indices)
            raise SpecError(f"{what} on traced values of shapes {shapes} fails in NumPy: {err}") from None
        dtype = "bool" if value.dtype == np.bool_ else "float"
        return self.add(dataclasses.replace(node, shape=value.shape, dtype=dtype))


def _flatten(x):
    for e in x:
        if isinstance(e, (list, tuple)):
            yield from _flatten(e)
        else:
            yield e


# ---------------------------------------------------------------------- static arguments
def _axis(axis, ndim: int, what: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise SpecError(f"{what}: axis must be an integer constant, got {axis!r}.")
    if not -ndim <= axis < ndim:
        raise SpecError(f"{what}: axis {axis} is out of range for {ndim} dimensions.")
    return int(axis) % ndim


class _Picks:
    """One integer-array (or constant boolean-mask) entry of an index, as the non-negative positions it picks."""

    def __init__(self, positions: np.ndarray):
        self.positions = positions


def _index_entry(e, tracer_shape):
    """``e`` as ints, slices, ``None``, ``...`` or :class:`_Picks`; constant arrays of ints or booleans allowed."""
    if isinstance(e, Tracer):
        raise SpecError("Indexing with a traced value is not supported in a pn.dynamics function: indices must "
                        "be constants (use np.where to select by a condition).")
    if isinstance(e, (list, np.ndarray)):
        array = np.asarray(e)
        if array.ndim == 0 and array.dtype.kind in "iu":
            return int(array)
        if array.ndim == 1 and array.size and array.dtype.kind in "iub":
            return _Picks(array)
        raise SpecError(f"Index {e!r} is not supported in a pn.dynamics function: an array index must be a "
                        "non-empty 1-D array of integers or booleans (a constant mask), e.g. x[[2, 0, 1]].")
    if not (e is None or e is Ellipsis or isinstance(e, slice)
            or (isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)))):
        raise SpecError(f"Index {e!r} is not supported in a pn.dynamics function: use integers, slices with "
                        "constant bounds, None, ... and constant integer arrays or boolean masks.")
    return e


def _getitem(tape, x: Tracer, index) -> Tracer:
    """``x[index]`` with NumPy's semantics: basic indexing is one ``getitem`` node; a negative-step slice, an
    integer array or a constant boolean mask is a full slice there followed by a ``take`` along its axis."""
    entries = [_index_entry(e, x.shape) for e in (index if isinstance(index, tuple) else (index,))]
    if sum(e is Ellipsis for e in entries) > 1:
        raise SpecError("An index can only have a single ellipsis (...).")
    used = sum(e is not None and e is not Ellipsis for e in entries)
    if used > x.ndim:
        raise SpecError(f"Too many indices {index!r} for a traced value of shape {x.shape}.")
    expanded: list = []
    for e in entries:
        expanded.extend([slice(None)] * (x.ndim - used) if e is Ellipsis else [e])
    basic, takes, advanced, axis, out_axis, array_axis = [], [], [], 0, 0, None
    for position, e in enumerate(expanded):
        if e is None:
            basic.append(None)
            out_axis += 1
            continue
        dim = x.shape[axis]
        if isinstance(e, _Picks):
            picks = e.positions
            if picks.dtype == np.bool_:
                if picks.size != dim:
                    raise SpecError(f"Boolean index of length {picks.size} does not match axis {axis} with size "
                                    f"{dim}.")
                picks = np.flatnonzero(picks)
                if not picks.size:
                    raise SpecError("A boolean mask that selects nothing gives an empty array, which a "
                                    "pn.dynamics function cannot use.")
            bad = picks[(picks < -dim) | (picks >= dim)]
            if bad.size:
                raise SpecError(f"Index {int(bad[0])} is out of bounds for axis {axis} with size {dim}.")
            if array_axis is not None:
                raise SpecError("Indexing with more than one integer array or mask at once (x[[0, 1], [2, 0]]) is "
                                "not supported in a pn.dynamics function: index one axis at a time, or select the "
                                "elements with np.stack([x[0, 2], x[1, 0]]).")
            takes.append((out_axis, tuple(int(i) % dim for i in picks)))
            advanced.append(position)
            array_axis = out_axis
            e = slice(None)
        elif isinstance(e, slice) and e.step is not None and e.step < 0:
            picks = tuple(range(*e.indices(dim)))
            if not picks:
                raise SpecError(f"The slice {e} selects nothing from an axis of size {dim}: a pn.dynamics function "
                                "cannot use an empty array.")
            takes.append((out_axis, picks))
            e = slice(None)
        elif not isinstance(e, slice):
            advanced.append(position)  # an int next to an integer array is an advanced index too (NumPy)
        basic.append(e)
        out_axis += isinstance(e, slice)
        axis += 1
    normalised = _normalise_index(tuple(basic), x.shape)
    if not all(isinstance(e, tuple) and e == (0, d, 1) for e, d in zip(normalised, x.shape)) \
            or None in normalised:
        x = tape.emit("getitem", (x,), (("index", normalised),), what="x[...]")
    for at, picks in takes:
        x = _take(tape, x, at, picks)
    if array_axis and advanced != list(range(advanced[0], advanced[-1] + 1)):
        # NumPy puts the axis of an integer array first when a slice separates it from an int (also advanced)
        x = _transpose(tape, x, (array_axis, *(k for k in range(x.ndim) if k != array_axis)))
    return x


def _take(tape, x: Tracer, axis: int, indices: tuple[int, ...]) -> Tracer:
    return tape.emit("take", (x,), (("axis", axis), ("indices", tuple(indices))), what="x[...]")


def _normalise_index(index, shape) -> tuple:
    """A NumPy basic index as ints >= 0, ``None`` and ``(start, stop, step)`` triples (see ``_graph.OTHER``)."""
    entries = index if isinstance(index, tuple) else (index,)
    for e in entries:
        if isinstance(e, Tracer):
            raise SpecError("Indexing with a traced value is not supported in a pn.dynamics function: indices must "
                            "be constants (use np.where to select by a condition).")
        if not (e is None or e is Ellipsis or isinstance(e, slice)
                or (isinstance(e, (int, np.integer)) and not isinstance(e, (bool, np.bool_)))):
            raise SpecError(f"Index {e!r} is not supported in a pn.dynamics function: use integers, slices with "
                            "constant bounds, None and ... (for several elements, np.stack([x[i], x[j]])).")
    if sum(e is Ellipsis for e in entries) > 1:
        raise SpecError("An index can only have a single ellipsis (...).")
    used = sum(e is not None and e is not Ellipsis for e in entries)
    if used > len(shape):
        raise SpecError(f"Too many indices {index!r} for a traced value of shape {shape}.")
    expanded: list = []
    for e in entries:
        expanded.extend([slice(None)] * (len(shape) - used) if e is Ellipsis else [e])
    out, axis = [], 0
    for e in expanded:
        if e is None:
            out.append(None)
            continue
        dim = shape[axis]
        if isinstance(e, slice):
            start, stop, step = e.indices(dim)
            if step < 0:
                raise SpecError(f"Slices with a negative step ({e}) are not supported in a pn.dynamics function: "
                                "select the elements with np.stack([x[i], ...]).")
            out.append((start, max(stop, start), step))
        else:
            if not -dim <= e < dim:
                raise SpecError(f"Index {e} is out of bounds for axis {axis} with size {dim}.")
            out.append(int(e) % dim)
        axis += 1
    return tuple(out)


# ---------------------------------------------------------------------- __array_function__ implementations
def _no_extra(what: str, **kwargs):
    for key, value in kwargs.items():
        if value is not None and value is not False and value is not np._NoValue:
            raise _unsupported(f"{what}(..., {key}=...)")


def _reduce(op: str) -> Callable:
    def impl(tape, a, axis=None, dtype=None, out=None, keepdims=False, **extra):
        what = f"np.{op}"
        _no_extra(what, dtype=dtype, out=out, **extra)
        a = _as_tracer(tape, a, what)
        if axis is not None:
            axes = axis if isinstance(axis, tuple) else (axis,)
            axis = tuple(sorted({_axis(x, a.ndim, what) for x in axes}))
        return tape.emit(op, (a,), (("axis", axis), ("keepdims", bool(keepdims))), what=what)
    return impl


def _as_tracer(tape: _Tape, x, what: str) -> Tracer:
    return x if isinstance(x, Tracer) else Tracer(tape, tape.lift(x, what))


def _sequence(tape, arrays, what):
    if isinstance(arrays, Tracer) or not isinstance(arrays, (list, tuple)) or not arrays:
        raise SpecError(f"{what} takes a non-empty list of arrays, e.g. {what}([a, b]).")
    return [_as_tracer(tape, x, what) for x in arrays]


def _stack(tape, arrays, axis=0, out=None, **extra):
    _no_extra("np.stack", out=out, **extra)
    xs = _sequence(tape, arrays, "np.stack")
    return tape.emit("stack", xs, (("axis", _axis(axis, xs[0].ndim + 1, "np.stack")),), what="np.stack")


def _concatenate(tape, arrays, axis=0, out=None, **extra):
    _no_extra("np.concatenate", out=out, **extra)
    xs = _sequence(tape, arrays, "np.concatenate")
    if axis is None or xs[0].ndim == 0:
        raise SpecError("np.concatenate needs arrays of at least one dimension and an integer axis.")
    return tape.emit("concatenate", xs, (("axis", _axis(axis, xs[0].ndim, "np.concatenate")),),
                     what="np.concatenate")


def _where(tape, condition, x=None, y=None):
    if x is None or y is None:
        raise _unsupported("np.where(condition) with one argument")
    return tape.emit("where", (condition, x, y), what="np.where")


def _clip(tape, a, a_min=None, a_max=None, out=None, **extra):
    _no_extra("np.clip", out=out, **{k: v for k, v in extra.items() if k not in ("min", "max")})
    a_min = extra.get("min", a_min)
    a_max = extra.get("max", a_max)
    if a_min is None and a_max is None:
        raise SpecError("np.clip needs a lower or an upper bound.")
    if a_min is not None:  # clip = min(max(a, lo), hi), NumPy's definition
        a = tape.emit("maximum", (a, a_min), what="np.clip")
    if a_max is not None:
        a = tape.emit("minimum", (a, a_max), what="np.clip")
    return a


def _reshape(tape, a, shape=None, order="C", **extra):
    shape = extra.pop("newshape", shape)
    _no_extra("np.reshape", **extra)
    if order != "C":
        raise _unsupported("np.reshape(..., order='F')")
    a = _as_tracer(tape, a, "np.reshape")
    try:
        target = np.empty(a.shape).reshape(shape).shape
    except (TypeError, ValueError) as err:
        raise SpecError(f"reshape of a traced value of shape {a.shape} to {shape!r}: {err}") from None
    return tape.emit("reshape", (a,), (("shape", tuple(int(s) for s in target)),), what="reshape")


def _ravel(tape, a, order="C"):
    return _reshape(tape, a, (-1,), order)


def _transpose(tape, a, axes=None):
    a = _as_tracer(tape, a, "np.transpose")
    axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(_axis(x, a.ndim, "transpose") for x in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise SpecError(f"transpose axes {axes} are not a permutation of the {a.ndim} axes.")
    return tape.emit("transpose", (a,), (("axes", axes),), what="transpose")


def _squeeze(tape, a, axis=None):
    a = _as_tracer(tape, a, "np.squeeze")
    return _reshape(tape, a, np.squeeze(np.empty(a.shape), axis=axis).shape)


def _expand_dims(tape, a, axis):
    a = _as_tracer(tape, a, "np.expand_dims")
    return _reshape(tape, a, np.expand_dims(np.empty(a.shape), axis).shape)


def _broadcast_to(tape, array, shape, subok=False):
    array = _as_tracer(tape, array, "np.broadcast_to")
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    return tape.emit("broadcast_to", (array,), (("shape", shape),), what="np.broadcast_to")


def _dot(tape, a, b, out=None):
    _no_extra("np.dot", out=out)
    a, b = _as_tracer(tape, a, "np.dot"), _as_tracer(tape, b, "np.dot")
    if a.ndim == 0 or b.ndim == 0:
        return tape.emit("multiply", (a, b), what="np.dot")
    if a.ndim > 2 or b.ndim > 2:
        raise _unsupported("np.dot of arrays with more than 2 dimensions (use np.matmul)")
    return tape.emit("matmul", (a, b), what="np.dot")


def _solve(tape, a, b):
    a, b = _as_tracer(tape, a, "np.linalg.solve"), _as_tracer(tape, b, "np.linalg.solve")
    if a.ndim != 2 or a.shape[0] != a.shape[1] or b.ndim not in (1, 2) or b.shape[0] != a.shape[0]:
        raise SpecError(f"np.linalg.solve(a, b) takes a square matrix a and a vector or matrix b with as many rows, "
                        f"got shapes {a.shape} and {b.shape} (solve stacked systems one by one).")
    # the shape is b's (inferring it on placeholder ones, as emit does, would meet a singular matrix)
    return tape.add(Node("solve", (a._index, b._index), (), b.shape))


def _inv(tape, a):
    a = _as_tracer(tape, a, "np.linalg.inv")
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise SpecError(f"np.linalg.inv takes a square matrix, got shape {a.shape}.")
    return _solve(tape, a, np.eye(a.shape[0]))


def _outer(tape, a, b, out=None):
    _no_extra("np.outer", out=out)
    a, b = _ravel(tape, _as_tracer(tape, a, "np.outer")), _ravel(tape, _as_tracer(tape, b, "np.outer"))
    return tape.emit("multiply", (_reshape(tape, a, (-1, 1)), _reshape(tape, b, (1, -1))), what="np.outer")


def _filled_like(value: float) -> Callable:
    def impl(tape, a, dtype=None, order="K", subok=True, shape=None, **extra):
        _no_extra("np.zeros_like/ones_like", dtype=dtype, shape=shape, **extra)
        return Tracer(tape, tape.lift(np.full(_as_tracer(tape, a, "np.zeros_like").shape, value), "np.zeros_like"))
    return impl


def _norm(tape, x, ord=None, axis=None, keepdims=False):
    x = _as_tracer(tape, x, "np.linalg.norm")
    vector = isinstance(axis, (int, np.integer)) or (axis is None and x.ndim == 1) \
        or (isinstance(axis, tuple) and len(axis) == 1)
    if ord in (None, "fro") or (ord == 2 and vector):  # the 2-norm (Frobenius for matrices): sqrt(sum(x**2))
        if ord == "fro" and vector:
            raise SpecError("np.linalg.norm(..., ord='fro') is for matrices; use ord=2 (or None) for a vector.")
        return tape.emit("sqrt", (_reduce("sum")(tape, x * x, axis=axis, keepdims=keepdims),), what="np.linalg.norm")
    if not vector or isinstance(ord, (bool, str)) or not isinstance(ord, (int, float, np.integer, np.floating)) \
            or ord == 0:
        raise _unsupported(f"np.linalg.norm(..., ord={ord!r})" + (" of a matrix (only the Frobenius norm)"
                                                                  if not vector else ""))
    size = abs(x)
    if math.isinf(ord):
        return _reduce("max" if ord > 0 else "min")(tape, size, axis=axis, keepdims=keepdims)
    if ord == 1:
        return _reduce("sum")(tape, size, axis=axis, keepdims=keepdims)
    return _reduce("sum")(tape, size ** float(ord), axis=axis, keepdims=keepdims) ** (1.0 / float(ord))


def _hstack(tape, tup, **extra):
    xs = [_as_tracer(tape, x, "np.hstack") for x in _sequence(tape, tup, "np.hstack")]
    xs = [x.reshape(1) if x.ndim == 0 else x for x in xs]
    return _concatenate(tape, xs, axis=0 if xs[0].ndim == 1 else 1)


def _append(tape, arr, values, axis=None):  # NumPy's definition: concatenate, both raveled when axis is None
    arr, values = _as_tracer(tape, arr, "np.append"), _as_tracer(tape, values, "np.append")
    if axis is None:
        return _concatenate(tape, [_ravel(tape, arr), _ravel(tape, values)], axis=0)
    return _concatenate(tape, [arr, values], axis=axis)


def _vstack(tape, tup, **extra):
    xs = [_as_tracer(tape, x, "np.vstack") for x in _sequence(tape, tup, "np.vstack")]
    return _concatenate(tape, [x.reshape(1, -1) if x.ndim < 2 else x for x in xs], axis=0)


# ---------------------------------------------------------------------- NumPy written with the graph's ops
def _heaviside(tape, x, h0):
    return tape.emit("where", (tape.emit("less", (x, 0.0), what="np.heaviside"), 0.0,
                               tape.emit("where", (tape.emit("greater", (x, 0.0), what="np.heaviside"), 1.0, h0),
                                         what="np.heaviside")), what="np.heaviside")


def _cbrt(tape, x):  # sign(x) |x|^(1/3): real for negative x
    return tape.emit("multiply", (tape.emit("sign", (x,), what="np.cbrt"),
                                  tape.emit("power", (tape.emit("abs", (x,), what="np.cbrt"), 1.0 / 3.0),
                                            what="np.cbrt")), what="np.cbrt")


def _logical_xor(tape, a, b):
    if not (_is_bool(a) and _is_bool(b)):
        raise _unsupported("np.logical_xor on non-boolean values")
    return tape.emit("not_equal", (a, b), what="np.logical_xor")


def _scaled(op: str, factor: float, what: str) -> Callable:
    return lambda tape, x: tape.emit(op, (tape.emit("log", (x,), what=what) if op == "divide" else x, factor),
                                     what=what)


_LOWERED_UFUNCS: dict[Any, Callable] = {
    np.log2: _scaled("divide", float(np.log(2.0)), "np.log2"),
    np.log10: _scaled("divide", float(np.log(10.0)), "np.log10"),
    np.exp2: lambda tape, x: tape.emit("exp", (tape.emit("multiply", (x, float(np.log(2.0))), what="np.exp2"),),
                                       what="np.exp2"),
    np.cbrt: _cbrt,
    np.hypot: lambda tape, a, b: tape.emit("sqrt", (tape.emit("add", (tape.emit("multiply", (a, a), what="np.hypot"),
                                                                       tape.emit("multiply", (b, b), what="np.hypot")),
                                                              what="np.hypot"),), what="np.hypot"),
    np.heaviside: _heaviside,
    np.float_power: lambda tape, a, b: tape.emit("power", (a, b), what="np.float_power"),
    np.deg2rad: _scaled("multiply", math.pi / 180.0, "np.deg2rad"),
    np.rad2deg: _scaled("multiply", 180.0 / math.pi, "np.rad2deg"),
    np.logical_xor: _logical_xor,
    np.fmax: lambda tape, a, b: tape.emit("maximum", (a, b), what="np.fmax"),  # NaN handling aside, the same
    np.fmin: lambda tape, a, b: tape.emit("minimum", (a, b), what="np.fmin"),
}
"""Ufuncs that are not graph ops, as graphs of ops (values and gradients as NumPy's, away from NaN)."""


def _var(tape, a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **extra):
    _no_extra("np.var", dtype=dtype, out=out, **extra)
    a = _as_tracer(tape, a, "np.var")
    axes = _axes_of(axis, a.ndim, "np.var")
    count = int(np.prod([a.shape[k] for k in axes]))
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or not 0 <= ddof < count:
        raise SpecError(f"np.var/np.std: ddof must be an integer constant in [0, {count}), got {ddof!r}.")
    centred = a - _reduce("mean")(tape, a, axis=axes, keepdims=True)
    return _reduce("sum")(tape, centred * centred, axis=axes, keepdims=keepdims) / float(count - ddof)


def _std(tape, a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **extra):
    _no_extra("np.std", dtype=dtype, out=out, **extra)
    return tape.emit("sqrt", (_var(tape, a, axis=axis, ddof=ddof, keepdims=keepdims),), what="np.std")


def _count_true(tape, a, axis, keepdims, what):
    a = _as_tracer(tape, a, what)
    if not _is_bool(a):
        a = tape.emit("not_equal", (a, 0.0), what=what)
    return _reduce("sum")(tape, tape.emit("where", (a, 1.0, 0.0), what=what), axis=axis, keepdims=keepdims), a


def _any(tape, a, axis=None, out=None, keepdims=False, **extra):
    _no_extra("np.any", out=out, **extra)
    count, _ = _count_true(tape, a, axis, keepdims, "np.any")
    return tape.emit("greater", (count, 0.0), what="np.any")


def _all(tape, a, axis=None, out=None, keepdims=False, **extra):
    _no_extra("np.all", out=out, **extra)
    count, a = _count_true(tape, a, axis, keepdims, "np.all")
    total = int(np.prod([a.shape[k] for k in _axes_of(axis if not isinstance(axis, list) else tuple(axis), a.ndim,
                                                      "np.all")]))
    return tape.emit("equal", (count, float(total)), what="np.all")


def _cumsum(tape, a, axis=None, dtype=None, out=None):
    _no_extra("np.cumsum", dtype=dtype, out=out)
    a = _as_tracer(tape, a, "np.cumsum")
    if axis is None:
        a, axis = _ravel(tape, a), 0
    axis = _axis(axis, a.ndim, "np.cumsum")
    n = a.shape[axis]
    moved = _moveaxis(tape, a, axis, a.ndim - 1)  # (..., n) @ upper-triangular ones: the running sums
    summed = tape.emit("matmul", (moved, np.triu(np.ones((n, n)))), what="np.cumsum")
    return _moveaxis(tape, summed, a.ndim - 1, axis)


def _moveaxis(tape, a, source: int, destination: int):
    if source == destination:
        return a
    order = [k for k in range(a.ndim) if k != source]
    order.insert(destination, source)
    return _transpose(tape, a, tuple(order))


def _diff(tape, a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    _no_extra("np.diff", prepend=prepend, append=append)
    a = _as_tracer(tape, a, "np.diff")
    if a.ndim == 0:
        raise SpecError("np.diff needs an array of at least one dimension.")
    axis = _axis(axis, a.ndim, "np.diff")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n < a.shape[axis]:
        raise SpecError(f"np.diff: n must be an integer constant in [0, {a.shape[axis]}), got {n!r}.")
    before = (slice(None),) * axis
    for _ in range(int(n)):
        a = a[before + (slice(1, None),)] - a[before + (slice(None, -1),)]
    return a


def _einsum(tape, subscripts, *operands, out=None, optimize=False, **extra):
    """``np.einsum`` without ``...`` or a letter repeated in one operand: each operand's axes ordered by letter and
    broadcast against the others, one product, a sum over the letters not in the output."""
    _no_extra("np.einsum", out=out, **extra)
    if not isinstance(subscripts, str):
        raise _unsupported("np.einsum with the operand/sublist form")
    spec = subscripts.replace(" ", "")
    inputs, arrow, output = spec.partition("->")
    terms = inputs.split(",")
    if "." in spec or len(terms) != len(operands) or not all(t.isalpha() or not t for t in terms)             or any(len(set(t)) != len(t) for t in terms):
        raise _unsupported(f"np.einsum({subscripts!r}, ...) (supported: explicit letters, none repeated within "
                           "one operand, no '...')")
    letters = sorted(set("".join(terms)))
    if not arrow:  # implicit output: the letters that appear once, in alphabetical order
        output = "".join(c for c in letters if "".join(terms).count(c) == 1)
    if not output.isalpha() and output or set(output) - set(letters) or len(set(output)) != len(output):
        raise _unsupported(f"np.einsum({subscripts!r}, ...) (its output letters must appear in an input, once)")
    xs = [_as_tracer(tape, x, "np.einsum") for x in operands]
    sizes: dict[str, int] = {}
    for term, x in zip(terms, xs):
        if len(term) != x.ndim:
            raise SpecError(f"np.einsum({subscripts!r}): operand of shape {x.shape} has {x.ndim} axes but "
                            f"{term!r} names {len(term)}.")
        for c, d in zip(term, x.shape):
            if sizes.setdefault(c, d) != d and d != 1 and sizes[c] != 1:
                raise SpecError(f"np.einsum({subscripts!r}): letter {c!r} has sizes {sizes[c]} and {d}.")
            sizes[c] = max(sizes[c], d)
    order = [c for c in output] + [c for c in letters if c not in output]  # output letters first, then summed
    product = None
    for term, x in zip(terms, xs):
        present = [c for c in order if c in term]
        if present != list(term):
            x = _transpose(tape, x, tuple(term.index(c) for c in present))
        x = _reshape(tape, x, tuple(sizes[c] if c in term else 1 for c in order)) if len(present) < len(order) \
            or x.ndim != len(order) else x
        product = x if product is None else product * x
    summed = tuple(range(len(output), len(order)))
    if summed:
        product = _reduce("sum")(tape, product, axis=summed)
    return _broadcast_to(tape, product, tuple(sizes[c] for c in output)) \
        if product.shape != tuple(sizes[c] for c in output) else product


def _inner(tape, a, b):
    a, b = _as_tracer(tape, a, "np.inner"), _as_tracer(tape, b, "np.inner")
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    if a.ndim > 1 or b.ndim > 1:
        raise _unsupported("np.inner of arrays with more than 1 dimension (use np.einsum or @)")
    return tape.emit("matmul", (a, b), what="np.inner")


def _vdot(tape, a, b):
    a, b = _as_tracer(tape, a, "np.vdot"), _as_tracer(tape, b, "np.vdot")
    return tape.emit("matmul", (_ravel(tape, a), _ravel(tape, b)), what="np.vdot")


def _full_like(tape, a, fill_value, dtype=None, order="K", subok=True, shape=None, **extra):
    _no_extra("np.full_like", dtype=dtype, shape=shape, **extra)
    if isinstance(fill_value, Tracer):
        return _broadcast_to(tape, fill_value, _as_tracer(tape, a, "np.full_like").shape)
    return Tracer(tape, tape.lift(np.full(_as_tracer(tape, a, "np.full_like").shape, fill_value, dtype=float),
                                  "np.full_like"))


def _copy(tape, a, order="K", subok=False):
    return _as_tracer(tape, a, "np.copy")


def _atleast_1d(tape, *arys):
    out = [_reshape(tape, x, (1,)) if x.ndim == 0 else x for x in (_as_tracer(tape, a, "np.atleast_1d")
                                                                     for a in arys)]
    return out[0] if len(out) == 1 else out


def _column_stack(tape, tup):
    xs = [_as_tracer(tape, x, "np.column_stack") for x in _sequence(tape, tup, "np.column_stack")]
    return _concatenate(tape, [x.reshape(-1, 1) if x.ndim < 2 else x for x in xs], axis=1)


def _cross(tape, a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    if axis is not None or (axisa, axisb, axisc) != (-1, -1, -1):
        raise _unsupported("np.cross(..., axis=...) (vectors along the last axis are)")
    a, b = _as_tracer(tape, a, "np.cross"), _as_tracer(tape, b, "np.cross")
    if a.ndim == 0 or b.ndim == 0 or a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        raise SpecError(f"np.cross needs vectors of 2 or 3 components along the last axis, got shapes {a.shape} and "
                        f"{b.shape}.")
    ax, ay = a[..., 0], a[..., 1]
    bx, by = b[..., 0], b[..., 1]
    az = a[..., 2] if a.shape[-1] == 3 else 0.0
    bz = b[..., 2] if b.shape[-1] == 3 else 0.0
    z = ax * by - ay * bx
    if a.shape[-1] == 2 and b.shape[-1] == 2:
        return z  # NumPy: the z component only
    return _stack(tape, [ay * bz - az * by, az * bx - ax * bz, z], axis=-1)


def _repeat(tape, a, repeats, axis=None):
    a = _as_tracer(tape, a, "np.repeat")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise SpecError(f"np.repeat needs a constant integer number of repeats >= 1, got {repeats!r}.")
    if axis is None:
        a, axis = _ravel(tape, a), 0
    axis = _axis(axis, a.ndim, "np.repeat")
    return _take(tape, a, axis, tuple(i for i in range(a.shape[axis]) for _ in range(int(repeats))))


def _tile(tape, a, reps):
    a = _as_tracer(tape, a, "np.tile")
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    if any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in reps):
        raise SpecError(f"np.tile needs constant integer repetitions >= 1, got {reps!r}.")
    if len(reps) > a.ndim:
        a = _reshape(tape, a, (1,) * (len(reps) - a.ndim) + a.shape)
    reps = (1,) * (a.ndim - len(reps)) + reps
    for axis, r in enumerate(reps):
        if r > 1:
            a = _take(tape, a, axis, tuple(range(a.shape[axis])) * int(r))
    return a


def _axes_of(axis, ndim: int, what: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(_axis(a, ndim, what) for a in (axis if isinstance(axis, tuple) else (axis,)))


def _np_take(tape, a, indices, axis=None, out=None, mode="raise"):
    _no_extra("np.take", out=out)
    if mode != "raise":
        raise _unsupported(f"np.take(..., mode={mode!r})")
    a = _as_tracer(tape, a, "np.take")
    if axis is None:
        a, axis = _ravel(tape, a), 0
    axis = _axis(axis, a.ndim, "np.take")
    indices = np.asarray(indices)
    if indices.ndim > 1:
        raise _unsupported("np.take with a multi-dimensional array of indices")
    return _getitem(tape, a, (slice(None),) * axis + (indices if indices.ndim else int(indices),))


def _flip(tape, m, axis=None):
    m = _as_tracer(tape, m, "np.flip")
    return _getitem(tape, m, tuple(slice(None, None, -1 if k in _axes_of(axis, m.ndim, "np.flip") else None)
                                   for k in range(m.ndim)))


def _roll(tape, a, shift, axis=None):
    a = _as_tracer(tape, a, "np.roll")
    if axis is None:
        return _reshape(tape, _roll(tape, _ravel(tape, a), shift, 0), a.shape)
    shifts = shift if isinstance(shift, tuple) else (shift,)
    axes = axis if isinstance(axis, tuple) else (axis,)
    if len(shifts) == 1:
        shifts = shifts * len(axes)
    if len(shifts) != len(axes) or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in shifts):
        raise SpecError(f"np.roll needs constant integer shifts, one per axis, got shift={shift!r}, axis={axis!r}.")
    for k, axis_k in zip(shifts, axes):
        axis_k = _axis(axis_k, a.ndim, "np.roll")
        n = a.shape[axis_k]
        if int(k) % n:
            a = _take(tape, a, axis_k, tuple((i - int(k)) % n for i in range(n)))
    return a


def _interp(tape, x, xp, fp, left=None, right=None, period=None):
    """``np.interp`` as a sum of clipped ramps, one per interval of ``xp`` (no op of its own, so every compiler
    runs it): ``fp[0] + sum_k slope_k * clip(x - xp[k], 0, xp[k+1] - xp[k])``. It is NumPy's value everywhere —
    ``fp[0]`` left of the data and ``fp[-1]`` right of it — and differentiable in ``x`` and in ``fp`` (a declared
    parameter makes a learned forcing). It costs ``len(xp)`` operations per evaluation, not ``log len(xp)``."""
    _no_extra("np.interp", period=period)
    x = _as_tracer(tape, x, "np.interp")
    xp_known, fp_known = not isinstance(xp, Tracer), not isinstance(fp, Tracer)
    xp_a = np.asarray(xp, dtype=float) if xp_known else xp
    fp_a = np.asarray(fp, dtype=float) if fp_known else fp
    if xp_a.ndim != 1 or fp_a.ndim != 1 or xp_a.shape != fp_a.shape or xp_a.shape[0] < 1:
        raise SpecError(f"np.interp(x, xp, fp) needs 1-D xp and fp of the same non-zero length, got shapes "
                        f"{np.shape(xp_a)} and {np.shape(fp_a)}; interpolate each channel of a multi-channel "
                        "forcing separately and np.stack the results.")
    if xp_known and not np.all(np.diff(xp_a) > 0):
        raise SpecError("np.interp needs strictly increasing xp (the data times); sort them (with their fp) and "
                        "drop repeated times.")
    n = xp_a.shape[0]
    if n == 1:
        value = fp_a[0] + 0.0 * x
    else:
        start, width = xp_a[:-1], xp_a[1:] - xp_a[:-1]
        slope = (fp_a[1:] - fp_a[:-1]) / width
        ramps = np.minimum(np.maximum(x[..., None] - start, 0.0), width)
        value = fp_a[0] + np.sum(slope * ramps, axis=-1)
    if left is not None:
        value = np.where(x < xp_a[0], left, value)
    if right is not None:
        value = np.where(x > xp_a[-1], right, value)
    return value


_FUNCTIONS: dict[Callable, Callable] = {
    np.sum: _reduce("sum"), np.mean: _reduce("mean"), np.prod: _reduce("prod"), np.max: _reduce("max"),
    np.min: _reduce("min"), np.amax: _reduce("max"), np.amin: _reduce("min"), np.stack: _stack,
    np.concatenate: _concatenate, np.where: _where, np.clip: _clip, np.reshape: _reshape, np.ravel: _ravel,
    np.transpose: _transpose, np.squeeze: _squeeze, np.expand_dims: _expand_dims, np.broadcast_to: _broadcast_to,
    np.dot: _dot, np.outer: _outer, np.zeros_like: _filled_like(0.0), np.ones_like: _filled_like(1.0),
    np.linalg.norm: _norm, np.linalg.solve: _solve, np.linalg.inv: _inv, np.hstack: _hstack, np.vstack: _vstack,
    np.append: _append, np.take: _np_take, np.flip: _flip,
    np.roll: _roll, np.var: _var, np.std: _std, np.any: _any, np.all: _all, np.cumsum: _cumsum, np.diff: _diff,
    np.einsum: _einsum, np.inner: _inner, np.vdot: _vdot, np.full_like: _full_like, np.copy: _copy,
    np.atleast_1d: _atleast_1d, np.column_stack: _column_stack, np.cross: _cross, np.repeat: _repeat,
    np.tile: _tile, np.interp: _interp,
    np.shape: lambda tape, a: _as_tracer(tape, a, "np.shape").shape,
    np.ndim: lambda tape, a: _as_tracer(tape, a, "np.ndim").ndim,
    np.size: lambda tape, a, axis=None: (_as_tracer(tape, a, "np.size").size if axis is None
                                         else a.shape[_axis(axis, a.ndim, "np.size")]),
}


# ---------------------------------------------------------------------- the ``p`` argument and the entry point
class Namespace:
    """The ``p`` argument of a dynamics function: ``p.alpha`` (a parameter), ``p.U(x)`` (a network),
    ``p.g`` (a constant); ``p["alpha"]`` reads the same. While tracing the values are symbolic; for the NumPy reference they are arrays."""

    def __init__(self, values: dict[str, Any], kinds: dict[str, str]):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_kinds", kinds)

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name.startswith("__") or name in values:
            try:
                return values[name]
            except KeyError:
                raise AttributeError(name) from None
        kinds = object.__getattribute__(self, "_kinds")
        declared = "; ".join(f"{kind}: {', '.join(n for n, k in kinds.items() if k == kind)}"
                             for kind in ("params", "nets", "constants") if kind in kinds.values())
        raise SpecError(f"p.{name} is not declared in pn.dynamics (declared {declared or 'nothing'}).")

    def __getitem__(self, name):
        """``p["alpha"]`` is ``p.alpha`` (for code written against a dict of parameters)."""
        if not isinstance(name, str):
            raise SpecError(f"p[{name!r}]: index p by a declared name such as p['alpha'] (or write p.alpha).")
        return self.__getattr__(name)

    def __setattr__(self, name, value):
        raise SpecError("p is read-only inside a pn.dynamics function.")

    def __repr__(self):
        return f"p({', '.join(object.__getattribute__(self, '_values'))})"


def _same_every_time(tracer: Callable) -> Callable:
    """``tracer`` run twice on the user's function, refusing a function whose graph differs between the two runs:
    one that draws random numbers (``np.random``, ``random``) or reads something that changes would otherwise have
    one draw frozen into a constant of the graph, silently (a "noise" term that is the same drift at every step)."""
    def traced(fn, *args, **kwargs):
        graph = tracer(fn, *args, **kwargs)
        if tracer(fn, *args, **kwargs) != graph:
            name = getattr(fn, "__name__", "the function")
            raise SpecError(f"{name} gave a different graph each time it was traced: it draws random numbers "
                            "(np.random, random) or reads something that changes, which tracing would freeze into "
                            "one constant — not noise that varies along the solve (pyneuralode solves ordinary, "
                            "not stochastic, differential equations). Draw fixed values once outside and pass them "
                            "as constants={...}.")
        return graph
    traced.__doc__, traced.__name__, traced.__wrapped__ = tracer.__doc__, tracer.__name__, tracer
    return traced


@_same_every_time
def trace(fn: Callable, *, state: tuple[int, ...], params: dict[str, tuple[tuple[int, ...], bool]],
          constants: dict[str, tuple[int, ...]], nets: dict[str, Any], scalar: bool = False) -> Graph:
    """Trace ``fn(t, u, p)`` for one sample of shape ``state``.

    ``params`` maps each name to ``(shape, positive)``; ``constants`` to its shape; ``nets`` to a layer spec
    (its ``out_shape`` gives the call's shape). Returns the graph; raises ``SpecError`` for anything untraceable
    or a result whose shape is not ``state`` (with ``scalar=True``, not a real scalar or 1-D array: an event
    function).
    """
    tape = _Tape()
    t = tape.add(Node("time", (), (), ()))
    u = tape.add(Node("state", (), (), tuple(state)))
    values: dict[str, Any] = {}
    for name, (shape, positive) in params.items():
        raw = tape.add(Node("param", (), (("name", name),), tuple(shape)))
        values[name] = tape.emit("exp", (raw,), what=f"positive parameter {name}") if positive else raw
    for name, shape in constants.items():
        values[name] = tape.add(Node("constant", (), (("name", name),), tuple(shape)))
    for name, net in nets.items():
        values[name] = _net_caller(tape, name, net)
    kinds = {**{n: "params" for n in params}, **{n: "constants" for n in constants}, **{n: "nets" for n in nets}}
    name = getattr(fn, "__name__", "the dynamics function")
    try:
        result = fn(t, u, Namespace(values, kinds))
    except SpecError:
        raise
    except Exception as err:  # noqa: BLE001 - report any failure of the user's code at definition time
        if _raised_in_scipy(err):
            raise SpecError(_SCIPY) from err
        if isinstance(err, ValueError) and "setting an array element" in str(err):
            raise SpecError(_ASSIGNMENT) from err  # numpy's words for du[i] = <traced value>
        if _traced_by_torch(err):
            raise SpecError(_foreign("torch")) from err
        raise SpecError(f"Tracing {name}(t, u, p) failed: {type(err).__name__}: {err}") from err
    if isinstance(result, (list, tuple)):
        raise SpecError(f"{name} returned a Python {type(result).__name__}: return one array, e.g. "
                        "np.stack([du0, du1]).")
    out = _as_tracer(tape, result, f"the value returned by {name}")
    if scalar:
        if out.ndim > 1:
            raise SpecError(f"{name} must return one real number whose sign change is the event (e.g. u[0] - "
                            f"height), or a 1-D array of such numbers (several conditions), got a "
                            f"{'boolean ' * (out.dtype == np.bool_)}value of shape {out.shape}.")
        if out.dtype == np.bool_:  # a condition that becomes true: +1 while false, -1 once true (BOOLEAN_EVENT)
            flag = tape.add(Node("literal", (), (("value", Literal(np.array(1.0))), (BOOLEAN_EVENT, True)), ()))
            out = tape.emit("where", (out, -1.0, flag), what="a boolean event condition")
        return _prune(Graph(tuple(tape.nodes), out._index))
    if out.shape == () and math.prod(state) == 1:  # one component: a number is its derivative (-k * u[0])
        out = _reshape(tape, out, tuple(state))
    if out.shape != tuple(state):
        raise SpecError(f"{name} returned a derivative of shape {out.shape}, but the state has shape "
                        f"{tuple(state)}: du/dt must have the state's shape.")
    if out.dtype == np.bool_:
        raise SpecError(f"{name} returned a boolean array: du/dt must be real.")
    return _prune(Graph(tuple(tape.nodes), out._index))


BOOLEAN_EVENT = "boolean_event"
"""The attribute that marks an event function written as a boolean condition (``u[0] < 0``, ``t > 10``): its
traced value is ``where(condition, -1, +1)`` with this flag on the ``+1`` literal, so it changes sign where the
condition becomes true (located by bisection; it has no derivative)."""


def is_boolean_event(graph: Graph) -> bool:
    """Whether ``graph`` (an event function's) was written as a boolean condition (see :data:`BOOLEAN_EVENT`)."""
    out = graph.nodes[graph.output]
    return out.op == "where" and bool(graph.nodes[out.inputs[2]].attr(BOOLEAN_EVENT, False))


@_same_every_time
def trace_arrays(fn: Callable, inputs: dict[str, tuple[tuple[int, ...], str]], *, what: str) -> Graph:
    """Trace ``fn(*inputs)`` on whole arrays (a loss): each input is a ``constant`` leaf named after its argument,
    ``inputs`` maps the names, in ``fn``'s order, to ``(shape, dtype)`` with dtype ``"float"`` or ``"bool"``. The
    result must be a real scalar. Errors are those of :func:`trace`, worded for ``what`` (e.g. ``"pn.loss"``)."""
    tape = _Tape()
    args = [tape.add(Node("constant", (), (("name", name),), tuple(shape), dtype))
            for name, (shape, dtype) in inputs.items()]
    name = getattr(fn, "__name__", "the function")
    try:
        try:
            result = fn(*args)
        except SpecError:
            raise
        except Exception as err:  # noqa: BLE001 - report any failure of the user's code when it is traced
            if _traced_by_torch(err):
                raise SpecError(_foreign("torch")) from err
            raise SpecError(f"Tracing {name}({', '.join(inputs)}) failed: {type(err).__name__}: {err}") from err
        if isinstance(result, (list, tuple)):
            raise SpecError(f"{name} returned a Python {type(result).__name__}: return one scalar.")
        out = _as_tracer(tape, result, f"the value returned by {name}")
    except SpecError as err:
        raise SpecError(str(err).replace("a pn.dynamics function", f"a {what} function")) from None
    if out.shape != () or out.dtype == np.bool_:
        raise SpecError(f"{name} must return a real scalar (the loss), got a {'boolean ' * (out.dtype == np.bool_)}"
                        f"value of shape {out.shape}: reduce it, e.g. with np.mean.")
    return Graph(tuple(tape.nodes), out._index)


def _net_caller(tape: _Tape, name: str, net) -> Callable:
    tape.nets[name] = net

    def call(x):
        x = _as_tracer(tape, x, f"p.{name}")
        try:
            shape = tuple(net.out_shape(x.shape))
        except SpecError as err:
            raise SpecError(f"p.{name} was called on a value of shape {x.shape}: {err}") from None
        return tape.add(Node("call", (x._index,), (("net", name),), shape))
    return call


def _prune(graph: Graph) -> Graph:
    """Drop nodes the output does not depend on and renumber (``time``/``state`` stay first as 0 and 1)."""
    needed = {0, 1, graph.output}
    for i in range(len(graph.nodes) - 1, -1, -1):
        if i in needed:
            needed.update(graph.nodes[i].inputs)
    order = sorted(needed)
    new = {old: k for k, old in enumerate(order)}
    nodes = tuple(dataclasses.replace(graph.nodes[i], inputs=tuple(new[j] for j in graph.nodes[i].inputs))
                  for i in order)
    return Graph(nodes, new[graph.output])
