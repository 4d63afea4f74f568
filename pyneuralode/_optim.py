"""Optimisers described neutrally; each backend runs them natively (optax on JAX, ``torch.optim`` on torch; Julia's
trainer applies the same rules on the host, :mod:`pyneuralode.train._host`).

The first-order rules follow PyTorch's documented update rules, which optax's ``adam``/``rmsprop``/``sgd``
reproduce with the arguments chosen in each ``to_optax`` (RMSprop: optax's ``eps`` sits inside the square root
unless ``eps_in_sqrt=False``, so it is set to match torch). Their ``lr`` is a number or a schedule
(:mod:`pyneuralode._schedules`). :class:`LBFGS` is a quasi-Newton method with a line search; see its docstring
for exactly what agrees between its implementations.
"""

from __future__ import annotations

import abc
import dataclasses

from ._errors import SpecError
from ._options import CheckedOptions
from ._schedules import AbstractSchedule, PiecewiseConstant, check_lr


class AbstractOptimizer(metaclass=CheckedOptions):
    """A gradient-based update rule. Subclasses are final frozen dataclasses with keyword-only options."""

    #: Whether a step needs the loss as a function of the parameters (a line search), not only one gradient.
    needs_value_fn = False

    @abc.abstractmethod
    def to_optax(self):
        """The optax ``GradientTransformation`` with the same update rule."""

    @abc.abstractmethod
    def to_torch(self, params):
        """The ``torch.optim.Optimizer`` over ``params`` with the same update rule."""

    @property
    def schedule(self) -> AbstractSchedule | None:
        """The learning-rate schedule, or ``None`` for a constant rate."""
        lr = getattr(self, "lr", None)
        return lr if isinstance(lr, AbstractSchedule) else None

    def _optax_lr(self):
        if self.schedule is None:
            return self.lr
        import jax.numpy as jnp
        schedule = self.schedule.to_optax()

        def in_float(count):  # optax's step count is int32, and int32 / int is float32 in JAX even with x64 on:
            return schedule(jnp.asarray(count, jnp.result_type(float)))  # float32-rounded rates in float64 models
        return in_float

    def _torch_lr(self) -> float:
        return self.schedule.init_value if self.schedule is not None else self.lr


@dataclasses.dataclass(frozen=True, kw_only=True)
class Adam(AbstractOptimizer):
    """Adam (Kingma & Ba 2015) with PyTorch's defaults; ``lr`` a number or a schedule."""

    lr: float | AbstractSchedule = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "lr", check_lr(self.lr, "Adam"))

    def to_optax(self):
        import optax
        return optax.adam(self._optax_lr(), b1=self.b1, b2=self.b2, eps=self.eps)

    def to_torch(self, params):
        import torch
        return torch.optim.Adam(params, lr=self._torch_lr(), betas=(self.b1, self.b2), eps=self.eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RMSprop(AbstractOptimizer):
    """RMSprop as ``torch.optim.RMSprop`` (the paper's spiral demo uses lr=1e-3); ``lr`` a number or a schedule."""

    lr: float | AbstractSchedule = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8

    def __post_init__(self):
        object.__setattr__(self, "lr", check_lr(self.lr, "RMSprop"))

    def to_optax(self):
        import optax
        return optax.rmsprop(self._optax_lr(), decay=self.alpha, eps=self.eps, eps_in_sqrt=False)

    def to_torch(self, params):
        import torch
        return torch.optim.RMSprop(params, lr=self._torch_lr(), alpha=self.alpha, eps=self.eps)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SGD(AbstractOptimizer):
    """SGD with (heavy-ball) momentum as ``torch.optim.SGD``; ``lr`` a number or a schedule.

    ``boundaries``/``factors`` are shorthand for ``lr=pn.PiecewiseConstant(init_value=lr, boundaries=...,
    factors=...)``: the learning rate is multiplied by ``factors[i]`` from step ``boundaries[i]`` on (the MNIST
    ODE-Net schedule is ``boundaries=(60·n, 100·n, 140·n)``, ``factors=(0.1, 0.1, 0.1)``).
    """

    lr: float | AbstractSchedule = 0.1
    momentum: float = 0.9
    boundaries: tuple[int, ...] = ()
    factors: tuple[float, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "lr", check_lr(self.lr, "SGD"))
        if len(self.boundaries) != len(self.factors):
            raise SpecError("SGD boundaries and factors must have the same length.")
        if self.boundaries:
            if isinstance(self.lr, AbstractSchedule):
                raise SpecError("SGD takes either a schedule as lr or boundaries/factors, not both.")
            object.__setattr__(self, "lr", PiecewiseConstant(init_value=self.lr, boundaries=self.boundaries,
                                                             factors=self.factors))

    def to_optax(self):
        import optax
        return optax.sgd(self._optax_lr(), momentum=self.momentum or None)

    def to_torch(self, params):
        import torch
        return torch.optim.SGD(params, lr=self._torch_lr(), momentum=self.momentum)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LBFGS(AbstractOptimizer):
    """Limited-memory BFGS with a strong-Wolfe line search — the second stage of the UDE recipe (Adam, then
    L-BFGS), for deterministic full-batch losses. One :meth:`pyneuralode.Trainer.step` is one L-BFGS iteration.

    JAX runs optax's ``lbfgs`` (its zoom line search, Nocedal & Wright Alg. 3.5/3.6); torch runs
    ``torch.optim.LBFGS(line_search_fn="strong_wolfe", max_iter=1)``; Julia, whose trainer updates on the host,
    runs the two-loop recursion (Nocedal & Wright Alg. 7.4) in NumPy with SciPy's strong-Wolfe line search
    (``scipy.optimize.line_search``; SciPy must be installed: ``pip install scipy``), re-solving in Julia at each
    trial. All three keep the last ``memory_size`` curvature pairs, scale the initial inverse Hessian by
    ``sᵀy / yᵀy``, try the unit step first, accept a step under the same strong Wolfe conditions (``c1 = 1e-4``,
    ``c2 = 0.9``) and give the line search at most ``max_linesearch_steps`` trials. They differ in details that
    change the iterates after the first step — torch and Julia scale the very first trial step by
    ``min(1, 1/‖g‖₁)``, the line searches interpolate differently, optax switches to Hager–Zhang's approximate
    Wolfe test near convergence, and when no trial meets the Wolfe conditions Julia moves to the best trial that
    lowered the loss (if any) and drops its curvature pairs — so the backends do NOT follow the same path; what
    agrees is where they go: on a problem with a unique minimum they converge to it (tested on a convex
    least-squares fit through the ODE solver). Each step evaluates the loss and gradient once at the current
    parameters and then once per line-search trial (``StepInfo.evaluations`` counts them; ``StepInfo.stats`` are
    those of the first). A trial whose solve fails (too many steps, a blow-up) makes the search back off on every
    backend (tested on JAX and torch): optax treats its non-finite loss as a failed trial, torch scores it far
    above the first loss with a zero gradient (its zoom interpolation would turn an infinite loss into NaN), Julia
    counts it as an infinite loss; a failure at the current parameters raises. Julia's state (``s``, ``y``, the
    number of pairs) is saved in checkpoints.
    """

    memory_size: int = 10
    max_linesearch_steps: int = 25

    needs_value_fn = True

    def __post_init__(self):
        for name in ("memory_size", "max_linesearch_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"LBFGS {name} must be a positive integer, got {value!r}.")

    def to_optax(self):
        import optax
        linesearch = optax.scale_by_zoom_linesearch(max_linesearch_steps=self.max_linesearch_steps,
                                                    initial_guess_strategy="one")
        return optax.lbfgs(memory_size=self.memory_size, linesearch=linesearch)

    def to_torch(self, params):
        import torch
        # max_iter=1: one iteration per call (its state carries over between calls); tolerance_grad=0 and
        # tolerance_change=0: no early exits of torch's own, which optax does not have. max_eval bounds only
        # torch's outer loop, so it is set high enough never to cut a line search short.
        return torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=self.max_linesearch_steps + 1,
                                 tolerance_grad=0.0, tolerance_change=0.0, history_size=self.memory_size,
                                 line_search_fn="strong_wolfe")


def optimizer_mistake(optimizer) -> str:
    """What is wrong with a value passed as ``optimizer=`` that is not an optimiser instance, and the fix."""
    if isinstance(optimizer, type) and issubclass(optimizer, AbstractOptimizer):
        return (f"got the class pn.{optimizer.__name__}: create one with its options, e.g. "
                f"pn.{optimizer.__name__}({'' if optimizer is LBFGS else 'lr=1e-3'}).")
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        return (f"got {type(optimizer).__name__}, an optax transformation: a trainer takes pyneuralode's "
                "optimisers, which it runs as optax/torch.optim itself; to drive your own optax loop, call "
                "model.value_and_grad(params, y0, ts, loss=...) and apply res.grad_params.")
    return f"got {optimizer!r}."
