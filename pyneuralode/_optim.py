"""Optimisers described neutrally; each backend runs them natively (optax on JAX, ``torch.optim`` on torch).

The definitions follow PyTorch's documented update rules, which optax's ``adam``/``rmsprop``/``sgd`` reproduce
with the arguments chosen in each ``to_optax`` (RMSprop: optax's ``eps`` sits inside the square root unless
``eps_in_sqrt=False``, so it is set to match torch).
"""

from __future__ import annotations

import abc
import dataclasses
import math

from ._errors import SpecError


def _positive(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


class AbstractOptimizer(abc.ABC):
    """A gradient-descent rule. Subclasses are final frozen dataclasses with keyword-only options."""

    @abc.abstractmethod
    def to_optax(self):
        """The optax ``GradientTransformation`` with the same update rule."""

    @abc.abstractmethod
    def to_torch(self, params):
        """The ``torch.optim.Optimizer`` over ``params`` with the same update rule."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Adam(AbstractOptimizer):
    """Adam (Kingma & Ba 2015) with PyTorch's defaults."""

    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        _positive(self.lr, "Adam lr")

    def to_optax(self):
        import optax
        return optax.adam(self.lr, b1=self.b1, b2=self.b2, eps=self.eps)

    def to_torch(self, params):
        import torch
        return torch.optim.Adam(params, lr=self.lr, betas=(self.b1, self.b2), eps=self.eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RMSprop(AbstractOptimizer):
    """RMSprop as ``torch.optim.RMSprop`` (the paper's spiral demo uses lr=1e-3)."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8

    def __post_init__(self):
        _positive(self.lr, "RMSprop lr")

    def to_optax(self):
        import optax
        return optax.rmsprop(self.lr, decay=self.alpha, eps=self.eps, eps_in_sqrt=False)

    def to_torch(self, params):
        import torch
        return torch.optim.RMSprop(params, lr=self.lr, alpha=self.alpha, eps=self.eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SGD(AbstractOptimizer):
    """SGD with (heavy-ball) momentum as ``torch.optim.SGD`` and an optional piecewise-constant schedule.

    ``boundaries`` are step counts where the learning rate is multiplied by the matching ``factors`` entry
    (the MNIST ODE-Net schedule is ``boundaries=(60·n, 100·n, 140·n)``, ``factors=(0.1, 0.1, 0.1)``).
    """

    lr: float = 0.1
    momentum: float = 0.9
    boundaries: tuple[int, ...] = ()
    factors: tuple[float, ...] = ()

    def __post_init__(self):
        _positive(self.lr, "SGD lr")
        if len(self.boundaries) != len(self.factors):
            raise SpecError("SGD boundaries and factors must have the same length.")

    def learning_rate(self, step: int) -> float:
        """The scheduled learning rate at optimisation step ``step``."""
        lr = self.lr
        for boundary, factor in zip(self.boundaries, self.factors):
            if step >= boundary:
                lr *= factor
        return lr

    def to_optax(self):
        import optax
        schedule = optax.piecewise_constant_schedule(
            self.lr, dict(zip(self.boundaries, self.factors))) if self.boundaries else self.lr
        return optax.sgd(schedule, momentum=self.momentum or None)

    def to_torch(self, params):
        import torch
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
