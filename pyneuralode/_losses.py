"""Losses on a solution ``ys`` of shape ``(len(ts), *y0.shape)``, described neutrally and run by each backend.

A loss is a scalar function of ``ys`` and named data arrays (``loss.data()``: the ``target`` and, when given, the
observation ``weights``). Backends evaluate ``loss.kernel()(xp, ys, data)`` inside their compiled step, where
``xp`` is their array namespace (``jax.numpy``, ``torch``); the kernel is the same object for every batch of a
given loss type, so compiled steps are cached on it and the data arrays are ordinary (traced) inputs.

**Partial observations.** ``mask=`` (booleans, ``True`` where observed) and ``weights=`` (non-negative) broadcast
to the target's shape; the loss becomes the weighted mean ``Σ w·ℓ(ys − target) / Σ w`` over the entries, so a
mask of ones gives the plain mean. The target may hold NaN where the weight is zero — the union-of-times recipe:
solve at the union of every series' observation times and mask what each series did not observe —
``pn.MSE(target, mask=np.isfinite(target))``.
"""

from __future__ import annotations

import abc
import copy

import numpy as np

from ._errors import SpecError
from ._options import CheckedOptions


def observation_weights(target: np.ndarray, mask, weights, owner: str) -> np.ndarray | None:
    """``mask`` and ``weights`` (either may be ``None``) validated and combined into one float array of the
    target's shape, or ``None`` when neither is given."""
    if mask is None and weights is None:
        return None
    combined = np.ones(target.shape)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise SpecError(f"{owner} mask must be a boolean array (True where observed), got dtype {mask.dtype}; "
                            "for real-valued importance use weights=.")
        combined = combined * _broadcast(mask, target.shape, owner, "mask")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise SpecError(f"{owner} weights must be finite and >= 0.")
        combined = combined * _broadcast(weights, target.shape, owner, "weights")
    if not np.any(combined > 0):
        raise SpecError(f"{owner} mask/weights select no observation: at least one weight must be > 0.")
    return combined


def _broadcast(array, shape, owner, name):
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        raise SpecError(f"{owner} {name} has shape {array.shape}, which does not broadcast to the target's shape "
                        f"{shape} (len(ts), *y0.shape).") from None


def cast_arrays(data: dict, dtype) -> dict[str, np.ndarray]:
    """A loss's arrays for a backend: real arrays in the model's ``dtype``, boolean ones (masks) kept boolean."""
    return {k: np.array(v, dtype=np.bool_ if v.dtype == np.bool_ else dtype) for k, v in data.items()}


class AbstractLoss(metaclass=CheckedOptions):
    """A scalar function of the saved states and named data arrays, evaluated by each backend natively.

    Built-in subclasses define the pointwise penalty :meth:`pointwise`; :func:`pyneuralode.loss` makes losses from
    a NumPy function of your own.
    """

    def __init__(self, target, *, mask=None, weights=None):
        owner = type(self).__name__
        target = np.asarray(target)
        if target.dtype.kind not in "fiu":
            raise SpecError(f"{owner} target must be a real array, got dtype {target.dtype}.")
        weights = observation_weights(target, mask, weights, owner)
        finite = np.isfinite(target)
        if weights is None and not finite.all():
            raise SpecError(f"{owner} target contains NaN or infinite values; if they mark unobserved entries, "
                            f"pass mask=np.isfinite(target) to leave them out of the loss.")
        if weights is not None:
            if np.any(~finite & (weights > 0)):
                raise SpecError(f"{owner} target contains NaN or infinite values at observed entries (mask/weights "
                                "> 0): mask them out or fix the data.")
            target = np.where(finite, target, 0.0)  # unobserved entries: any finite value, its weight is 0
        self.target = target
        self.weights = weights

    def check_shape(self, ys_shape: tuple[int, ...]) -> None:
        """Raise a SpecError if the target cannot be compared with a solution of shape ``ys_shape``."""
        if tuple(self.target.shape) != tuple(ys_shape):
            raise SpecError(f"{type(self).__name__} target has shape {tuple(self.target.shape)} but the solution "
                            f"has shape {tuple(ys_shape)} (len(ts), *y0.shape).{self._shape_hint}")

    _shape_hint = ""
    """What a target-shape error adds for this kind of loss."""

    def data(self) -> dict[str, np.ndarray]:
        """The named arrays the kernel reads besides ``ys`` (each of shape ``(len(ts), *y0.shape)``)."""
        return {"target": self.target} if self.weights is None else {"target": self.target, "weights": self.weights}

    def kernel(self):
        """``kernel(xp, ys, data) -> scalar``: a static, hashable function (the same for every instance of a
        built-in loss type), so compiled backends cache on it and pass ``data`` as inputs."""
        return type(self).evaluate

    @staticmethod
    @abc.abstractmethod
    def pointwise(xp, diff):
        """The elementwise penalty of ``diff = ys - target`` in the array namespace ``xp``."""

    @classmethod
    def evaluate(cls, xp, ys, data):
        """The loss of ``ys`` given ``data``: the mean of :meth:`pointwise`, weighted when ``data`` has weights."""
        penalty = cls.pointwise(xp, ys - data["target"])
        if "weights" not in data:
            return xp.mean(penalty)
        weights = data["weights"]
        return xp.sum(weights * penalty) / xp.sum(weights)

    def on_union(self, index: np.ndarray, size: int) -> AbstractLoss:
        """This loss for a solve saved at the union of per-sample times (``ODEModel.value_and_grad`` with ``ts`` of
        shape ``(batch, T)``): ``index[b, j]`` is where sample ``b``'s ``j``-th time stands among the ``size`` union
        times. The target moves to shape ``(size, batch, *state)`` and every entry a sample did not observe gets
        weight 0, so the weighted mean ``Σ w·ℓ / Σ w`` is exactly this loss on the per-sample states."""
        rows, columns = index.T, np.arange(index.shape[0])  # (T, batch) union rows, one column per sample
        target = np.zeros((size, *self.target.shape[1:]), self.target.dtype)
        weights = np.zeros((size, *self.target.shape[1:]))
        target[rows, columns] = self.target
        weights[rows, columns] = 1.0 if self.weights is None else self.weights
        spread = copy.copy(self)
        spread.target, spread.weights = target, weights
        return spread

    def __call__(self, ys) -> float:
        """The loss evaluated in numpy (reference implementation used by tests and reports)."""
        return float(self.evaluate(np, np.asarray(ys, dtype=np.float64), self.data()))

    def __repr__(self):
        observed = "" if self.weights is None else f", {int(np.sum(self.weights > 0))} weighted entries"
        return f"{type(self).__name__}(target shape {tuple(self.target.shape)}{observed})"


class L1(AbstractLoss):
    """Mean absolute error ``mean(|ys - target|)`` — the paper's spiral loss; optional ``mask=``/``weights=``.

    Written as ``diff * sign(diff)`` so that every backend takes the same subgradient, 0, where a residual is
    exactly zero (``jnp.abs`` and ``torch.abs`` disagree there, and the spiral's first target point always
    equals ``y0``)."""

    @staticmethod
    def pointwise(xp, diff):
        return diff * xp.sign(diff)


class MSE(AbstractLoss):
    """Mean squared error ``mean((ys - target)**2)``; optional ``mask=``/``weights=``."""

    @staticmethod
    def pointwise(xp, diff):
        return diff * diff
