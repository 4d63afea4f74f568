"""Losses on backend "julia": the value of a loss on the saved states ``ys`` and its derivative with respect to them
(the cotangent that PyNeuralODEJL's ``vjp_backward`` pulls back to the parameters and ``y0``).

- ``pn.L1``/``pn.MSE`` (and their masks/weights): in NumPy on the host, from their closed-form derivatives.
- A :func:`pyneuralode.loss` of your own: its traced graph compiled to Julia source by the same compiler as
  ``pn.dynamics`` (:func:`._graph.loss_source`), evaluated and differentiated by Zygote in Julia
  (``loss_value_and_grad`` in julia/src/loss.jl). One compilation per graph (the function traces once per
  combination of input shapes) and dtype; each step then passes ``ys`` and its arrays.

Arrays cross as flat row-major vectors with their Julia shapes (NumPy's reversed), the convention of
``build_dynamics``'s constants, so a row-major reshape recovers the gradient in ``ys``'s NumPy shape.
"""

from __future__ import annotations

import numpy as np

from ..._custom_loss import CustomLoss
from ..._errors import NotSupportedError, non_finite_error
from ..._losses import L1, MSE, cast_arrays
from ._graph import julia_shape, loss_source


def host_loss_value_and_cotangent(loss, ys: np.ndarray) -> tuple[float, np.ndarray]:
    """The loss of ``ys`` and its derivative with respect to ``ys`` (numpy; L1 and MSE, with their weights)."""
    diff = ys - loss.target
    value = loss(ys)
    weights = np.ones(diff.shape) if loss.weights is None else loss.weights
    if type(loss) is L1:
        cot = weights * np.sign(diff) / np.sum(weights)
    elif type(loss) is MSE:
        cot = 2.0 * weights * diff / np.sum(weights)
    else:
        raise NotSupportedError(f"{type(loss).__name__} is not available on backend 'julia': it differentiates "
                                "pn.L1, pn.MSE and losses made with pn.loss.")
    return value, np.asarray(cot, dtype=ys.dtype)


def _kind(array: np.ndarray) -> str:
    return "bool" if array.dtype == np.bool_ else "float"


class JuliaLosses:
    """The losses of one Julia program: ``value_and_cotangent(loss, ys)`` for any loss the backend takes, with the
    compiled ``GraphLoss`` of each :func:`pyneuralode.loss` graph cached. ``call`` wraps a Julia call (it turns a
    Julia exception into pyneuralode's)."""

    def __init__(self, module, dtype: str, call):
        self._module, self._dtype, self._call = module, dtype, call
        self._compiled: dict = {}

    def compiled(self, graph, names: tuple[str, ...]):
        """The Julia ``GraphLoss`` of ``graph`` (a :func:`pyneuralode.loss` graph with argument ``names``)."""
        if graph not in self._compiled:
            source, constants = loss_source(graph, names, self._dtype)
            flat = tuple(np.ravel(c).astype(np.bool_ if c.dtype == np.bool_ else self._dtype) for c in constants)
            shapes = tuple(julia_shape(c.shape) for c in constants)
            self._compiled[graph] = self._call(self._module.build_loss, source, flat, shapes, dtype=self._dtype)
        return self._compiled[graph]

    def value_and_cotangent(self, loss, ys: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss of ``ys`` (the solution, ``(len(ts), *y0.shape)``) and its derivative with respect to ``ys``."""
        if not isinstance(loss, CustomLoss):
            return host_loss_value_and_cotangent(loss, ys)
        function = loss.function
        data = cast_arrays(loss.data(), self._dtype)
        arrays = (np.asarray(ys, dtype=self._dtype), data["target"], *(data[n] for n in function.names[2:]))
        # The same shapes key as the function's NumPy evaluation: one trace (and one Julia compilation) per shape.
        graph = function.graph(tuple((n, tuple(a.shape), _kind(a)) for n, a in zip(function.names, arrays)))
        compiled = self.compiled(graph, function.names)  # refuses an op Julia cannot take before any Julia call
        value, grad = self._call(self._module.loss_value_and_grad, compiled, tuple(np.ravel(a) for a in arrays),
                                 tuple(julia_shape(a.shape) for a in arrays))
        value = float(value)
        cot = np.asarray(grad.to_numpy(), dtype=self._dtype).reshape(ys.shape)  # Julia's vec = NumPy's row-major
        if not (np.isfinite(value) and np.all(np.isfinite(cot))):
            raise non_finite_error("loss or its gradient")
        return value, cot
