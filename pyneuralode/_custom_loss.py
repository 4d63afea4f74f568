"""``pn.loss``: a loss of your own, written once in NumPy on the solution ``ys``, run natively by every backend.

An example is in :func:`loss`'s docstring.

The function takes ``ys`` (shape ``(len(ts), *y0.shape)``, as the caller's ``y0`` is batched or not), then the
target and any further named arrays, and returns a scalar. It is traced with symbolic arrays into the same neutral
expression graph as :func:`pyneuralode.dynamics` (same supported NumPy, same errors) — once per combination of
input shapes — and each backend runs the graph with its own op table inside its compiled step (JAX, torch) or
compiles it to generated Julia source differentiated by Zygote (Julia): one graph, one op compiler per backend, no
second pipeline. Calling the bound loss on a NumPy ``ys`` evaluates the same graph in
NumPy (the reference). Boolean arrays stay boolean (``np.where`` conditions); real arrays take the model's dtype.
"""

from __future__ import annotations

import functools
import inspect

import numpy as np

from ._errors import NotSupportedError, SpecError
from ._graph import evaluate, namespace_ops_for
from ._losses import AbstractLoss
from ._trace import trace_arrays


def _kind(array: np.ndarray) -> str:
    return "bool" if array.dtype == np.bool_ else "float"


class LossFunction:
    """A NumPy loss ``fn(ys, target, *arrays)`` made with :func:`pyneuralode.loss`.

    Call it with the target and the further arrays (by name or position) to get a loss for
    ``model.value_and_grad``; pass it itself as ``pn.Trainer(loss=...)``, whose steps supply the arrays.
    """

    def __init__(self, fn):
        if not callable(fn):
            raise SpecError(f"pn.loss needs a function fn(ys, target, ...) returning a scalar, got {fn!r}.")
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            raise SpecError(f"pn.loss cannot read the arguments of {fn!r}: pass a Python function.") from None
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if len(parameters) < 2 or any(p.kind not in plain or p.default is not p.empty for p in parameters):
            raise SpecError(f"A pn.loss function takes ys, then target, then any further arrays, each a plain "
                            f"argument without a default; {getattr(fn, '__name__', fn)} has "
                            f"({', '.join(str(p) for p in parameters)}).")
        self.fn = fn
        self.names = tuple(p.name for p in parameters)
        self.__name__ = getattr(fn, "__name__", "loss")
        self.__doc__ = getattr(fn, "__doc__", None)
        self._graphs: dict = {}

    def __call__(self, target, *arrays, **named) -> CustomLoss:
        """The loss with its data bound: ``target`` and the further arrays of the function (all of them)."""
        extra = self.names[2:]
        if len(arrays) > len(extra):
            raise SpecError(f"{self.__name__} takes {len(extra)} array(s) after the target ({', '.join(extra)}), "
                            f"got {len(arrays)}.")
        given = dict(zip(extra, arrays))
        for name, value in named.items():
            if name not in extra or name in given:
                raise SpecError(f"{self.__name__} got an unexpected or repeated array {name!r}; it takes "
                                f"{', '.join(extra) or 'none'} after the target.")
            given[name] = value
        missing = [n for n in extra if n not in given]
        if missing:
            raise SpecError(f"{self.__name__} needs the array(s) {', '.join(missing)} besides the target.")
        return CustomLoss(self, target, {n: given[n] for n in extra})

    def graph(self, shapes: tuple):
        """The traced graph for ``shapes``: ``((name, shape, kind), ...)`` of every argument (cached)."""
        if shapes not in self._graphs:
            self._graphs[shapes] = trace_arrays(self.fn, {n: (s, k) for n, s, k in shapes}, what="pn.loss")
        return self._graphs[shapes]

    def evaluate(self, xp, ys, data):
        """The loss of ``ys`` given the bound arrays ``data``, in the array namespace ``xp`` (the kernel every
        backend compiles into its step; this bound method is the same object for every batch)."""
        inputs = {self.names[0]: ys, self.names[1]: data["target"],
                  **{n: data[n] for n in self.names[2:]}}
        shapes = tuple((n, tuple(v.shape), "bool" if str(v.dtype).endswith("bool") else "float")
                       for n, v in inputs.items())
        ops, literal = namespace_ops_for(xp)

        def leaf(node, _args):
            if node.op == "constant":
                return inputs[node.attr("name")]
            return literal(node.attr("value").array, ys)

        return evaluate(self.graph(shapes), leaf, ops)

    def __repr__(self):
        return f"pn.loss({self.__name__}({', '.join(self.names)}))"


def bound_loss_mistake(value) -> str:
    """What is wrong with a value passed as ``loss=`` where a loss with its target is needed, and the fix."""
    if isinstance(value, type) and issubclass(value, AbstractLoss):
        name = f"pn.{value.__name__}"
        return (f"got the class {name}: give it the target, loss={name}(target) (it is pn.Trainer that takes "
                f"the class, loss={name}, and each trainer.step passes the target).")
    if isinstance(value, LossFunction):
        rest = ", ".join(value.names[1:])
        return (f"got {value.__name__}, a pn.loss function without its arrays: call it with them, "
                f"loss={value.__name__}({rest}).")
    return f"got {type(value).__name__}."


def loss_family_mistake(value) -> str:
    """What is wrong with a value passed as ``pn.Trainer(loss=...)``, and the fix."""
    if isinstance(value, AbstractLoss):
        kind = value.function.__name__ if isinstance(value, CustomLoss) else f"pn.{type(value).__name__}"
        return (f"got {value!r}, a loss with its data bound: pass {kind} itself, and the target (with mask=/"
                "weights= or your loss's arrays) to each trainer.step(y0, ts, target, ...).")
    return f"got {value!r}."


def loss(fn):
    """Make a loss from a NumPy function ``fn(ys, target, *arrays) -> scalar`` (usable as a decorator).

    ```python
    @pn.loss
    def relative_mse(ys, target, mask):
        r = np.where(mask, (ys - target) / (np.abs(target) + 0.1), 0.0)
        return np.sum(r * r) / np.sum(mask)

    model.value_and_grad(params, y0, ts, loss=relative_mse(target, mask=observed))
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=relative_mse)
    trainer.step(y0, ts, target, mask=observed)
    ```

    ``fn`` takes ``ys`` (the solution, shape ``(len(ts), *y0.shape)``), then the target, then any further arrays,
    each a plain argument without a default, and returns a real scalar. Inside it may use what
    :func:`pyneuralode.dynamics` supports (``np.mean``, ``np.sum``, ``np.where``, ``np.abs``, ``**``,
    indexing...), but no Python ``if`` on values (use ``np.where``). Boolean arrays stay boolean (``np.where``
    conditions); real ones take the model's dtype and must be finite: ``np.where`` keeps a NaN out of the value but
    not out of the gradient, so mark unobserved entries with a mask argument instead of NaN. The function is traced
    when it first meets arrays of given shapes (each backend then runs the traced graph inside its compiled step);
    anything untraceable raises one ``SpecError`` naming it. A pn.loss cannot take per-sample times (``ts`` of
    shape ``(batch, T)``); ``pn.MSE`` and ``pn.L1`` can.
    """
    return functools.update_wrapper(LossFunction(fn), fn, updated=())


class CustomLoss(AbstractLoss):
    """A :class:`LossFunction` with its target and arrays bound (what ``model.value_and_grad`` takes)."""

    _shape_hint = (" A pn.loss function is traced with ys shaped like its target, so the target must have the "
                   "solution's shape; to fit a final state or a part of the solution, pass a target of the "
                   "solution's shape (e.g. zeros) and the data as an extra array argument of your function, which "
                   "may have any shape (def final(ys, target, data): return np.mean((ys[-1] - data) ** 2)).")

    def __init__(self, function: LossFunction, target, arrays: dict):
        target = np.asarray(target)
        if target.dtype.kind not in "iuf":
            raise SpecError(f"{function.__name__} target must be a real array, got dtype {target.dtype}.")
        self.function, self.target, self.weights = function, target, None
        self.arrays = {}
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise SpecError(f"{function.__name__} array {name!r} must be real or boolean, got dtype "
                                f"{array.dtype}.")
            self.arrays[name] = array if array.dtype == np.bool_ else array.astype(np.float64)
        for name, array in {"target": target, **self.arrays}.items():
            if array.dtype != np.bool_ and not np.all(np.isfinite(array)):
                # np.where(mask, f(target), 0) keeps a NaN out of the value but not out of the gradient (its
                # unselected branch is differentiated too), so such a fit would stop on a NaN gradient blamed on
                # the dynamics.
                raise SpecError(f"{function.__name__} {'target' if name == 'target' else f'array {name!r}'} "
                                "contains NaN or infinite values: a pn.loss function sees every entry, and "
                                "np.where does not keep a NaN out of the gradient. Replace them with finite "
                                "values (e.g. np.nan_to_num(...)) and leave those entries out with a mask "
                                "argument of your loss.")
        # Traced now, on the caller's shapes, so an untraceable function fails here and not inside a backend.
        self.function.graph(tuple((n, tuple(v.shape), _kind(v)) for n, v in
                                  {function.names[0]: target, function.names[1]: target, **self.arrays}.items()))

    def data(self) -> dict[str, np.ndarray]:
        return {"target": self.target, **self.arrays}

    def kernel(self):
        return self.function.evaluate

    def on_union(self, index, size):
        """Refused: a function of your own need not be a mean over entries, so it cannot be moved to the union
        of per-sample times by weighting."""
        raise NotSupportedError(f"{self.function.__name__}: a pn.loss of your own cannot take per-sample times (ts "
                                "of shape (batch, T)). Solve at the union of the times yourself and pass a mask "
                                "array to your loss, or use pn.MSE/pn.L1, which take per-sample times.")

    @staticmethod
    def pointwise(xp, diff):  # pragma: no cover - a custom loss is not a pointwise penalty
        raise NotImplementedError

    def evaluate(self, xp, ys, data):  # type: ignore[override]
        return self.function.evaluate(xp, ys, data)

    def __call__(self, ys) -> float:
        """The loss evaluated in NumPy through the traced graph (the reference)."""
        return float(self.function.evaluate(np, np.asarray(ys, dtype=np.float64),
                                            {k: (v if v.dtype == np.bool_ else v.astype(np.float64))
                                             for k, v in self.data().items()}))

    def __repr__(self):
        return f"{self.function.__name__}(target shape {tuple(self.target.shape)})"
