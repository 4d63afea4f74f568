"""Learning-rate schedules described neutrally; each backend runs its library's own schedule.

A schedule maps the optimisation step ``k = 0, 1, 2, ...`` (the number of updates already applied) to the learning
rate of update ``k + 1``. On JAX it becomes an optax schedule (optax evaluates it at the optimiser's update count);
on torch a ``torch.optim.lr_scheduler`` stepped once after every ``optimizer.step()``. Calling the schedule object
with an integer evaluates the same definition in numpy: the reference both backends are tested against (they
agree with it to a few ulp: torch's schedulers update the rate recursively, optax's evaluate it in closed form).

Pass one wherever an optimiser takes ``lr``: ``pn.Adam(lr=pn.ExponentialDecay(init_value=1e-2, decay_rate=0.5,
transition_steps=1000))``.
"""

from __future__ import annotations

import abc
import dataclasses
import math

from ._errors import SpecError
from ._options import CheckedOptions


def _finite_positive(value, name) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def _positive_int(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(f"{name} must be a positive integer, got {value!r}.")
    return value


class AbstractSchedule(metaclass=CheckedOptions):
    """A learning rate as a function of the step. Subclasses are final frozen dataclasses (keyword-only)."""

    init_value: float

    @abc.abstractmethod
    def __call__(self, step: int) -> float:
        """The learning rate of the update that follows ``step`` completed updates (numpy reference)."""

    @abc.abstractmethod
    def to_optax(self):
        """The optax schedule (a function of the update count) with the same values."""

    @abc.abstractmethod
    def to_torch(self, optimizer):
        """The ``torch.optim.lr_scheduler`` over ``optimizer`` (created with ``lr=init_value``) with the same values.

        The caller steps it once after each ``optimizer.step()``, as torch documents."""

    def torch_frozen_after(self) -> int | None:
        """A step count after which the torch scheduler must no longer be stepped (``None``: never frozen).

        torch's cosine annealing is periodic; optax's cosine decay stays at its final value. Stopping the torch
        scheduler at the end of the decay makes both hold the final value."""
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExponentialDecay(AbstractSchedule):
    """``init_value · decay_rate ** (step / transition_steps)`` (optax's ``exponential_decay``).

    With ``staircase=True`` the exponent is rounded down, so the rate drops by ``decay_rate`` every
    ``transition_steps`` updates (torch's ``StepLR``); otherwise it decays smoothly (torch's ``ExponentialLR``
    with ``gamma = decay_rate ** (1 / transition_steps)``).
    """

    init_value: float
    decay_rate: float
    transition_steps: int = 1
    staircase: bool = False

    def __post_init__(self):
        object.__setattr__(self, "init_value", _finite_positive(self.init_value, "ExponentialDecay init_value"))
        object.__setattr__(self, "decay_rate", _finite_positive(self.decay_rate, "ExponentialDecay decay_rate"))
        _positive_int(self.transition_steps, "ExponentialDecay transition_steps")

    def __call__(self, step: int) -> float:
        exponent = step / self.transition_steps
        return self.init_value * self.decay_rate ** (math.floor(exponent) if self.staircase else exponent)

    def to_optax(self):
        import optax
        return optax.exponential_decay(self.init_value, self.transition_steps, self.decay_rate,
                                       staircase=self.staircase)

    def to_torch(self, optimizer):
        from torch.optim import lr_scheduler
        if self.staircase:
            return lr_scheduler.StepLR(optimizer, step_size=self.transition_steps, gamma=self.decay_rate)
        return lr_scheduler.ExponentialLR(optimizer, gamma=self.decay_rate ** (1.0 / self.transition_steps))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CosineDecay(AbstractSchedule):
    """Cosine decay from ``init_value`` to ``alpha · init_value`` over ``decay_steps`` updates, then constant
    (optax's ``cosine_decay_schedule``; torch's ``CosineAnnealingLR`` with ``T_max=decay_steps``,
    ``eta_min=alpha · init_value``, held after ``decay_steps``; Loshchilov & Hutter 2017 without restarts)."""

    init_value: float
    decay_steps: int
    alpha: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "init_value", _finite_positive(self.init_value, "CosineDecay init_value"))
        _positive_int(self.decay_steps, "CosineDecay decay_steps")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise SpecError(f"CosineDecay alpha must lie in [0, 1], got {self.alpha!r}.")
        object.__setattr__(self, "alpha", float(self.alpha))

    def __call__(self, step: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(step, self.decay_steps) / self.decay_steps))
        return self.init_value * ((1.0 - self.alpha) * cosine + self.alpha)

    def to_optax(self):
        import optax
        return optax.cosine_decay_schedule(self.init_value, self.decay_steps, alpha=self.alpha)

    def to_torch(self, optimizer):
        from torch.optim import lr_scheduler
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.decay_steps, eta_min=self.alpha * self.init_value)

    def torch_frozen_after(self) -> int:
        return self.decay_steps


@dataclasses.dataclass(frozen=True, kw_only=True)
class PiecewiseConstant(AbstractSchedule):
    """``init_value`` multiplied by ``factors[i]`` from update ``boundaries[i]`` on (optax's
    ``piecewise_constant_schedule``; torch: one ``MultiStepLR`` per boundary, chained).

    The MNIST ODE-Net schedule is ``boundaries=(60·n, 100·n, 140·n), factors=(0.1, 0.1, 0.1)`` for ``n`` steps
    per epoch.
    """

    init_value: float
    boundaries: tuple[int, ...]
    factors: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "init_value", _finite_positive(self.init_value, "PiecewiseConstant init_value"))
        object.__setattr__(self, "boundaries", tuple(self.boundaries))
        object.__setattr__(self, "factors", tuple(_finite_positive(f, "PiecewiseConstant factor")
                                                  for f in self.factors))
        if len(self.boundaries) != len(self.factors) or not self.boundaries:
            raise SpecError("PiecewiseConstant needs boundaries and factors of the same, non-zero length, got "
                            f"{len(self.boundaries)} and {len(self.factors)}.")
        for b in self.boundaries:
            _positive_int(b, "PiecewiseConstant boundary")
        if list(self.boundaries) != sorted(set(self.boundaries)):
            raise SpecError(f"PiecewiseConstant boundaries must be strictly increasing, got {self.boundaries}.")

    def __call__(self, step: int) -> float:
        lr = self.init_value
        for boundary, factor in zip(self.boundaries, self.factors):
            if step >= boundary:
                lr *= factor
        return lr

    def to_optax(self):
        import optax
        return optax.piecewise_constant_schedule(self.init_value, dict(zip(self.boundaries, self.factors)))

    def to_torch(self, optimizer):
        from torch.optim import lr_scheduler
        return lr_scheduler.ChainedScheduler([lr_scheduler.MultiStepLR(optimizer, milestones=[b], gamma=f)
                                              for b, f in zip(self.boundaries, self.factors)])


def check_lr(lr, owner: str):
    """``lr`` validated: a finite number > 0 (returned as float) or an :class:`AbstractSchedule`."""
    if isinstance(lr, AbstractSchedule):
        return lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise SpecError(f"{owner} lr must be a finite number > 0 or a schedule such as "
                        f"pn.ExponentialDecay(init_value=..., decay_rate=...), got {lr!r}.")
    return float(lr)
