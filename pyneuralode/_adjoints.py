"""Gradient methods as small frozen strategy objects; each backend maps them onto its library.

- :class:`BacksolveAdjoint` — optimise-then-discretise: solve the adjoint ODE backwards (Chen et al. 2018,
  Algorithm 1); O(1) memory in the number of steps; gradients are accurate to the solver's tolerance.
- :class:`CheckpointAdjoint` — discretise-then-optimise with (binomial) checkpointing: exact gradients of the
  discrete solve, O(sqrt-ish) memory (diffrax's ``RecursiveCheckpointAdjoint``).
- :class:`DirectAdjoint` — plain backpropagation through every solver operation (the paper's "RK-Net");
  exact gradients of the discrete solve, memory O(steps).
- :class:`InterpolatingAdjoint`, :class:`QuadratureAdjoint`, :class:`GaussAdjoint` — SciMLSensitivity's
  continuous adjoints that store the forward solution (Julia backend).
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from ._errors import SpecError
from ._options import CheckedOptions

VJP_CHOICES = ("zygote", "reversediff", "enzyme")


class AbstractAdjoint(metaclass=CheckedOptions):
    """How gradients of a solve are computed. Subclasses are final frozen dataclasses."""

    @property
    def name(self) -> str:
        """The method's name, e.g. ``"BacksolveAdjoint"`` (the same on every backend)."""
        return type(self).__name__


def _check_optional_tol(value, name):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise SpecError(f"{name} must be a finite number > 0 (or None to reuse the forward tolerance), got {value!r}.")
    return float(value)


def _check_vjp(vjp):
    if vjp not in VJP_CHOICES:
        raise SpecError(f"Unknown vjp {vjp!r}: choose one of {', '.join(map(repr, VJP_CHOICES))}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BacksolveAdjoint(AbstractAdjoint):
    """The paper's adjoint method: integrate state, adjoint and parameter-gradient ODEs backwards in time.

    **Arguments (keyword-only):**

    - ``seminorm``: measure the backward step error on the state and adjoint only, not the parameter
      integrals (Kidger, Chen & Lyons 2021; torchdiffeq's ``adjoint_options={"norm": "seminorm"}``) — fewer
      backward evaluations at the same accuracy.
    - ``rtol``, ``atol``: tolerances of the backward solve (default: the forward ones).
    - ``vjp``: the Julia backend's VJP engine (``"zygote"``, ``"reversediff"``, ``"enzyme"``).
    """

    seminorm: bool = False
    rtol: float | None = None
    atol: float | None = None
    vjp: str = "zygote"

    def __post_init__(self):
        object.__setattr__(self, "rtol", _check_optional_tol(self.rtol, "BacksolveAdjoint rtol"))
        object.__setattr__(self, "atol", _check_optional_tol(self.atol, "BacksolveAdjoint atol"))
        _check_vjp(self.vjp)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointAdjoint(AbstractAdjoint):
    """Backpropagate through the solver, recomputing forward steps from checkpoints.

    ``checkpoints=None`` lets the backend choose (diffrax: online binomial checkpointing).
    """

    checkpoints: int | None = None

    def __post_init__(self):
        if self.checkpoints is not None and (isinstance(self.checkpoints, bool)
                                             or not isinstance(self.checkpoints, numbers.Integral) or self.checkpoints < 1):
            raise SpecError(f"CheckpointAdjoint checkpoints must be a positive integer or None, "
                            f"got {self.checkpoints!r}.")
        if self.checkpoints is not None:
            object.__setattr__(self, "checkpoints", int(self.checkpoints))  # numpy integers too


@dataclasses.dataclass(frozen=True)
class DirectAdjoint(AbstractAdjoint):
    """Backpropagate through every operation of the solver (RK-Net): exact gradients of the discrete solve.

    torch and Julia store every step (memory grows with the number of steps). JAX's reverse-mode loops always
    checkpoint, so on JAX this is the same computation as :class:`CheckpointAdjoint`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class InterpolatingAdjoint(AbstractAdjoint):
    """SciMLSensitivity's InterpolatingAdjoint: backward adjoint ODE using the stored forward interpolant."""

    vjp: str = "zygote"
    checkpointing: bool = False

    def __post_init__(self):
        _check_vjp(self.vjp)


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuadratureAdjoint(AbstractAdjoint):
    """SciMLSensitivity's QuadratureAdjoint: adjoint ODE then a quadrature for the parameter gradient."""

    vjp: str = "zygote"

    def __post_init__(self):
        _check_vjp(self.vjp)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussAdjoint(AbstractAdjoint):
    """SciMLSensitivity's GaussAdjoint (its default for large problems): Gauss–Legendre integration of the
    parameter gradient alongside the adjoint ODE."""

    vjp: str = "zygote"

    def __post_init__(self):
        _check_vjp(self.vjp)


ADJOINTS: dict[str, type[AbstractAdjoint]] = {
    cls.__name__: cls
    for cls in (BacksolveAdjoint, CheckpointAdjoint, DirectAdjoint, InterpolatingAdjoint, QuadratureAdjoint,
                GaussAdjoint)
}


def as_adjoint(adjoint) -> AbstractAdjoint:
    """Accept an adjoint object or its name; anything else is a SpecError."""
    if isinstance(adjoint, AbstractAdjoint):
        return adjoint
    if isinstance(adjoint, str):
        by_lower = {name.lower(): cls for name, cls in ADJOINTS.items()}
        key = adjoint.lower()
        if key in by_lower:
            return by_lower[key]()
        if key + "adjoint" in by_lower:
            return by_lower[key + "adjoint"]()
    raise SpecError(f"Unknown adjoint {adjoint!r}: choose one of {', '.join(f'pn.{n}()' for n in ADJOINTS)}.")
