"""Losses on a solution ``ys`` of shape ``(len(ts), *y0.shape)``, described neutrally and run by each backend."""

from __future__ import annotations

import abc

import numpy as np

from ._errors import SpecError


class AbstractLoss(abc.ABC):
    """A scalar function of the saved states. Backends implement ``reduce`` with their own array library."""

    def __init__(self, target):
        target = np.asarray(target)
        if not np.issubdtype(target.dtype, np.floating) and not np.issubdtype(target.dtype, np.integer):
            raise SpecError(f"{type(self).__name__} target must be a real array, got dtype {target.dtype}.")
        if not np.all(np.isfinite(target)):
            raise SpecError(f"{type(self).__name__} target contains NaN or infinite values.")
        self.target = target

    def check_shape(self, ys_shape: tuple[int, ...]) -> None:
        """Raise a SpecError if the target cannot be compared with a solution of shape ``ys_shape``."""
        if tuple(self.target.shape) != tuple(ys_shape):
            raise SpecError(f"{type(self).__name__} target has shape {tuple(self.target.shape)} but the solution "
                            f"has shape {tuple(ys_shape)} (len(ts), *y0.shape).")

    @staticmethod
    @abc.abstractmethod
    def reduce(xp, diff):
        """The loss of ``diff = ys - target`` using the array namespace ``xp`` (numpy, jax.numpy, torch).

        A static method, so compiled backends can key their caches on the loss *type*, not the instance."""

    def __call__(self, ys) -> float:
        """The loss evaluated in numpy (reference implementation used by tests and reports)."""
        return float(self.reduce(np, np.asarray(ys) - self.target))

    def __repr__(self):
        return f"{type(self).__name__}(target shape {tuple(self.target.shape)})"


class L1(AbstractLoss):
    """Mean absolute error ``mean(|ys - target|)`` — the paper's spiral loss.

    Written as ``diff * sign(diff)`` so that every backend takes the same subgradient, 0, where a residual is
    exactly zero (``jnp.abs`` and ``torch.abs`` disagree there, and the spiral's first target point always
    equals ``y0``)."""

    @staticmethod
    def reduce(xp, diff):
        return xp.mean(diff * xp.sign(diff))


class MSE(AbstractLoss):
    """Mean squared error ``mean((ys - target)**2)``."""

    @staticmethod
    def reduce(xp, diff):
        return xp.mean(diff * diff)
