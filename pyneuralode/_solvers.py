"""Solver choices as small frozen strategy objects; each backend maps them onto its library's solvers.

The metadata here (order, adaptivity, stages) is neutral knowledge about the method, shared by every backend:
the same ``Dopri5()`` means the Dormand–Prince 5(4) pair with FSAL whether diffrax, torchdiffeq or
OrdinaryDiffEq runs it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from ._errors import SpecError
from ._options import CheckedOptions


class AbstractSolver(metaclass=CheckedOptions):
    """A numerical method for ``dy/dt = f(t, y)``. Subclasses are final frozen dataclasses."""

    order: ClassVar[int]
    """Order of the propagated solution."""
    adaptive: ClassVar[bool]
    """Whether the method carries an embedded error estimate (``StepControl`` rtol/atol apply)."""
    stiff: ClassVar[bool] = False
    """Implicit / stiff method."""
    stages: ClassVar[int]
    """Vector-field evaluations per step (for explicit methods)."""
    fsal: ClassVar[bool] = False
    """First-same-as-last: one evaluation per step is reused by the next step."""

    @property
    def name(self) -> str:
        """The solver's name, e.g. ``"Dopri5"`` (the same on every backend)."""
        return type(self).__name__

    def __repr__(self) -> str:
        options = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                            if getattr(self, f.name) != f.default)
        return f"{self.name}({options})"


_COUNT_DOC = """

    Option (keyword-only): ``count_evaluations`` (default ``True``). On JAX an implicit step evaluates the field a
    data-dependent number of times (its Newton iterations), and pyneuralode counts them exactly inside the compiled
    solve, which costs about 3% of a stiff solve (Robertson with Kvaerno5, measured). ``count_evaluations=False``
    leaves the count out for raw diffrax's speed; ``stats.nfe_forward`` is then ``None`` (not counted, never
    estimated) and the steps are still reported. Julia counts as it solves, at no cost, and ignores the option."""


def _check_count_option(self) -> None:
    if not isinstance(self.count_evaluations, bool):
        raise SpecError(f"{self.name}(count_evaluations=...) takes True or False, got {self.count_evaluations!r}.")


def _solver(name: str, *, order: int, adaptive: bool, stages: int, fsal: bool = False, stiff: bool = False,
            doc: str) -> type[AbstractSolver]:
    namespace = {"order": order, "adaptive": adaptive, "stages": stages, "fsal": fsal, "stiff": stiff,
                 "__doc__": doc, "__module__": __name__, "__annotations__": {}}
    if stiff:  # implicit methods: whether JAX counts their evaluations (see _COUNT_DOC)
        namespace.update({"__annotations__": {"count_evaluations": bool},
                          "count_evaluations": dataclasses.field(default=True, kw_only=True),
                          "__post_init__": _check_count_option, "__doc__": doc + _COUNT_DOC})
    cls = type(name, (AbstractSolver,), namespace)
    return dataclasses.dataclass(frozen=True, repr=False)(cls)


Euler = _solver("Euler", order=1, adaptive=False, stages=1, doc="Explicit Euler (fixed step).")
Midpoint = _solver("Midpoint", order=2, adaptive=False, stages=2, doc="Explicit midpoint, RK2 (fixed step).")
Heun = _solver("Heun", order=2, adaptive=False, stages=2, doc="Heun's method, RK2 (fixed step).")
RK4 = _solver("RK4", order=4, adaptive=False, stages=4, doc="Classic 4th-order Runge–Kutta, 3/8 rule as "
              "torchdiffeq and diffrax use it (fixed step).")
Bosh3 = _solver("Bosh3", order=3, adaptive=True, stages=4, fsal=True,
                doc="Bogacki–Shampine 3(2) pair with FSAL (adaptive; torchdiffeq 'bosh3', Julia BS3).")
Dopri5 = _solver("Dopri5", order=5, adaptive=True, stages=7, fsal=True,
                 doc="Dormand–Prince 5(4) pair with FSAL (adaptive; the paper's solver; Julia DP5).")
Tsit5 = _solver("Tsit5", order=5, adaptive=True, stages=7, fsal=True,
                doc="Tsitouras 5(4) pair with FSAL (adaptive).")
Dopri8 = _solver("Dopri8", order=8, adaptive=True, stages=13, doc="Dormand–Prince 8(7) pair (adaptive; Julia DP8).")
ImplicitEuler = _solver("ImplicitEuler", order=1, adaptive=True, stages=1, stiff=True,
                        doc="Backward Euler for stiff problems (adaptive, implicit; the error estimate is the "
                            "trapezoidal-rule difference, as diffrax's ImplicitEuler; Julia ImplicitEuler).")
Kvaerno3 = _solver("Kvaerno3", order=3, adaptive=True, stages=4, stiff=True,
                   doc="Kværnø's ESDIRK 3(2) method for stiff problems (adaptive, implicit, L-stable).")
Kvaerno4 = _solver("Kvaerno4", order=4, adaptive=True, stages=5, stiff=True,
                   doc="Kværnø's ESDIRK 4(3) method for stiff problems (adaptive, implicit, L-stable).")
Kvaerno5 = _solver("Kvaerno5", order=5, adaptive=True, stages=7, stiff=True,
                   doc="Kværnø's ESDIRK 5(4) method for stiff problems (adaptive, implicit).")
KenCarp3 = _solver("KenCarp3", order=3, adaptive=True, stages=4, stiff=True,
                   doc="Kennedy–Carpenter ESDIRK 3(2) method for stiff problems, its implicit tableau applied to "
                       "the whole field (adaptive, implicit).")
KenCarp4 = _solver("KenCarp4", order=4, adaptive=True, stages=6, stiff=True,
                   doc="Kennedy–Carpenter ESDIRK 4(3) method for stiff problems, its implicit tableau applied to "
                       "the whole field (adaptive, implicit).")
KenCarp5 = _solver("KenCarp5", order=5, adaptive=True, stages=8, stiff=True,
                   doc="Kennedy–Carpenter ESDIRK 5(4) method for stiff problems, its implicit tableau applied to "
                       "the whole field (adaptive, implicit). On a linear field its embedded 4th-order solution is "
                       "5th-order accurate too (the tableau's design), so the error estimate is about 10x too small "
                       "there: a harmonic oscillator over [0, 10] at rtol=atol=1e-8 ends 3e-5 from the truth. On linear or "
                       "nearly linear fields prefer Kvaerno5() or tighten rtol.")
Vern7 = _solver("Vern7", order=7, adaptive=True, stages=10, doc="Verner's 7(6) pair (Julia only).")
Rodas5P = _solver("Rodas5P", order=5, adaptive=True, stages=8, stiff=True,
                  doc="Rosenbrock method Rodas5P for stiff problems (Julia only).")
QNDF = _solver("QNDF", order=5, adaptive=True, stages=1, stiff=True,
               doc="Quasi-constant-step NDF multistep method for stiff problems (Julia only).")
FBDF = _solver("FBDF", order=5, adaptive=True, stages=1, stiff=True,
               doc="Fixed-leading-coefficient BDF multistep method for stiff problems (Julia only).")

STIFF_SOLVERS: tuple[str, ...] = ("ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5", "KenCarp3", "KenCarp4",
                                  "KenCarp5", "Rodas5P", "QNDF", "FBDF")
"""Every implicit method pyneuralode knows (which backend runs which: ``pyneuralode.backends`` registry)."""

SOLVERS: dict[str, type[AbstractSolver]] = {
    cls.__name__: cls
    for cls in (Euler, Midpoint, Heun, RK4, Bosh3, Dopri5, Tsit5, Dopri8, ImplicitEuler, Kvaerno3, Kvaerno4,
                Kvaerno5, KenCarp3, KenCarp4, KenCarp5, Vern7, Rodas5P, QNDF, FBDF)
}


def as_solver(solver) -> AbstractSolver:
    """Accept a solver object or its name (``"Dopri5"``/``"dopri5"``); anything else is a SpecError."""
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, type) and issubclass(solver, AbstractSolver):
        raise SpecError(f"Pass a solver instance, e.g. pn.{solver.__name__}(), not the class.")
    if isinstance(solver, str):
        by_lower = {name.lower(): cls for name, cls in SOLVERS.items()}
        if solver.lower() in by_lower:
            return by_lower[solver.lower()]()
    raise SpecError(f"Unknown solver {solver!r}: choose one of {', '.join(f'pn.{n}()' for n in SOLVERS)}.")
