"""Step-size control shared by every backend: one object, one meaning."""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from ._errors import SpecError
from ._options import CheckedOptions


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepControl(metaclass=CheckedOptions):
    """How the solver chooses its steps.

    **Arguments (keyword-only):**

    - ``rtol``, ``atol``: relative and absolute tolerances of adaptive solvers (both > 0). ``atol`` may also be
      one tolerance per state component — an array of the state's shape, e.g. ``atol=(1e-8, 1e-14, 1e-8)`` for
      species whose scales differ by orders of magnitude (Robertson's kinetics), as SciPy's ``solve_ivp``,
      OrdinaryDiffEq's ``abstol`` and torchdiffeq take it: a step's error is measured against
      ``atol[i] + rtol * |y[i]|`` component by component. For :class:`pyneuralode.ODEModel` on JAX and torch.
    - ``dt0``: first step of an adaptive solver; ``None`` picks it with Hairer's rule (Hairer, Nørsett & Wanner,
      *Solving ODEs I*, II.4), computed the same way on every backend.
    - ``dtmax``: the largest step an adaptive solver may take (``None``: no bound), the first one included —
      diffrax's ``PIDController(dtmax=...)``, torchdiffeq's ``options={"max_step": ...}``, OrdinaryDiffEq's
      ``dtmax`` and SciPy's ``max_step``. Events are found by a change of sign between step ends, so an event
      condition that changes sign twice within one step (a ball that rises through a height and falls back through
      it) goes unnoticed, on every backend as in diffrax and torchdiffeq; a ``dtmax`` below the time between the
      two crossings finds it. The same holds for a short pulse in the forcing, which a long step can stride over.
    - ``dt``: the step of a fixed-step solver (``Euler``, ``Midpoint``, ``Heun``, ``RK4``); required by them and
      refused by adaptive solvers (which take ``dt0``). When ``dt`` does not divide an interval between two save
      times, that interval is split into ``ceil(|Δt| / dt)`` *equal* steps, each at most ``dt``: every save time
      is a step end, so no output is interpolated and every backend takes the same steps. (diffrax and
      torchdiffeq instead step by exactly ``dt`` from the start, shorten the last step and interpolate the save
      times in between; both conventions agree whenever ``dt`` divides every interval.)
    - ``safety``, ``factormin``, ``factormax``: the integral controller's safety factor and limits on how much one
      step may shrink or grow (diffrax's ``PIDController`` and torchdiffeq's ``safety/dfactor/ifactor``).
    - ``pcoeff``, ``icoeff``: the step-size controller's proportional and integral coefficients, diffrax's
      ``PIDController`` names (Söderlind's PI form: the next step is ``h * safety * err^-(pcoeff + icoeff)/k *
      err_prev^(pcoeff/k)`` for a method of order ``k``, clipped to ``[factormin, factormax]``; OrdinaryDiffEq's
      ``PIController(beta1=(pcoeff + icoeff)/k, beta2=pcoeff/k)``). The default ``pcoeff=0, icoeff=1`` is the
      integral controller every backend shares (torchdiffeq's only one). A PI controller such as
      ``pcoeff=0.2, icoeff=0.3`` damps the accept/reject oscillation of a high-order implicit method on a stiff
      problem: JAX's ``Kvaerno5`` on Robertson's kinetics (to t = 1e5, rtol 1e-7) made 40 422 evaluations in
      2887 steps instead of 63 634 in 4545, of which the integral controller rejected 2473; ``Kvaerno3`` does not
      gain. Backend ``'jax'`` only for now.
    - ``max_steps``: the most steps (accepted + rejected) one solve may take before raising
      :class:`pyneuralode.MaxStepsError`.
    - ``jump_ts``: times at which the vector field is discontinuous in ``t`` (a switched input, a dose, piecewise
      forcing written with ``np.where(t < 0.5, ...)``). An adaptive solver steps up to each one, restarts just
      after it and evaluates the field afresh there instead of reusing the last stage of the step before (the
      "first same as last" shortcut of Dopri5, Tsit5 and Bosh3 would carry the old branch across the jump).
      Without them it must shrink its steps to locate the jump by trial and rejection. The same meaning as
      diffrax's ``PIDController(jump_ts=...)``, torchdiffeq's ``options={"jump_t": ...}`` and OrdinaryDiffEq's
      ``d_discontinuities``; each costs a solver that reuses its last stage one more evaluation (JAX: one more
      for each retry of the step after it, as diffrax re-evaluates there).
    - ``step_ts``: times an adaptive solver must step to exactly (without restarting there), e.g. where the
      field changes fast; diffrax's ``step_ts``, torchdiffeq's ``step_t``, OrdinaryDiffEq's ``tstops``.

    Times in ``jump_ts``/``step_ts`` outside the open interval of a solve are ignored by it, so one control
    serves any save times. They apply to adaptive solvers: a fixed-step solver steps on a grid that has every
    save time as a step boundary, so put such a time in ``ts`` instead.
    """

    rtol: float = 1e-6
    atol: float | tuple = 1e-8
    dt0: float | None = None
    dt: float | None = None
    dtmax: float | None = None
    safety: float = 0.9
    factormin: float = 0.2
    factormax: float = 10.0
    max_steps: int = 4096
    jump_ts: tuple[float, ...] = ()
    step_ts: tuple[float, ...] = ()
    pcoeff: float = 0.0
    icoeff: float = 1.0

    def __post_init__(self):
        if not isinstance(self.atol, numbers.Real) or isinstance(self.atol, bool):
            object.__setattr__(self, "atol", _component_tolerances(self.atol))
        for name in ("rtol", "atol", "safety", "factormin", "factormax"):
            if name == "atol" and isinstance(self.atol, tuple):
                continue
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
                raise SpecError(f"StepControl {name} must be a finite number > 0, got {value!r}.")
            object.__setattr__(self, name, float(value))
        for name in ("dt0", "dt", "dtmax"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                        or value <= 0:
                    raise SpecError(f"StepControl {name} must be a finite number > 0 (or None), got {value!r}.")
                object.__setattr__(self, name, float(value))
        for name, lowest in (("pcoeff", 0.0), ("icoeff", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
                    or value < 0 or (lowest is None and value == 0):
                bound = ">= 0" if lowest is not None else "> 0"
                raise SpecError(f"StepControl {name} must be a finite number {bound}, got {value!r} (the integral "
                                "controller is pcoeff=0, icoeff=1; a PI controller e.g. pcoeff=0.2, icoeff=0.3).")
            object.__setattr__(self, name, float(value))
        if not self.safety < 1:
            raise SpecError(f"StepControl safety must lie in (0, 1), got {self.safety}.")
        if not self.factormin < 1 < self.factormax:
            raise SpecError("StepControl needs factormin < 1 < factormax, got "
                            f"factormin={self.factormin}, factormax={self.factormax}.")
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, numbers.Integral) or self.max_steps < 1:
            raise SpecError(f"StepControl max_steps must be a positive integer, got {self.max_steps!r}.")
        object.__setattr__(self, "max_steps", int(self.max_steps))  # numpy integers too
        for name in ("jump_ts", "step_ts"):
            object.__setattr__(self, name, _sorted_times(getattr(self, name), name))
        if self.dtmax is not None and self.dt is not None:
            raise SpecError("StepControl dtmax bounds the steps of an adaptive solver; a fixed-step solver takes "
                            "steps of dt, so give one or the other.")
        if (self.jump_ts or self.step_ts) and self.dt is not None:
            raise SpecError("StepControl jump_ts/step_ts are for adaptive solvers; a fixed-step solver (dt=...) "
                            "makes every save time a step boundary, so put these times in ts instead.")

    @property
    def per_component_atol(self) -> bool:
        """Whether ``atol`` holds one tolerance per state component."""
        return isinstance(self.atol, tuple)

    @property
    def smallest_atol(self) -> float:
        """``atol``, or its smallest component: where one number is needed (a backward solve of an augmented
        state, an event's tolerance in time, the step watch's growth test), the strictest of them."""
        return float(np.min(self.atol)) if self.per_component_atol else self.atol

    def atol_array(self, dtype) -> np.ndarray | float:
        """``atol`` as the backends use it: a float, or an array of the state's shape."""
        return np.asarray(self.atol, dtype=dtype) if self.per_component_atol else self.atol

    @property
    def controller(self) -> str:
        """The step-size controller these coefficients select: ``"integral"`` (``pcoeff=0, icoeff=1``, which every
        backend runs) or ``"PI"``."""
        return "integral" if self.pcoeff == 0.0 and self.icoeff == 1.0 else "PI"

    def breaks_inside(self, t0: float, t1: float, which: str):
        """The ``which`` times (``"jump_ts"`` or ``"step_ts"``) strictly between ``t0`` and ``t1``, as a tuple in
        increasing order: the ones a solve from ``t0`` to ``t1`` (either direction) acts on."""
        lo, hi = min(t0, t1), max(t0, t1)
        return tuple(t for t in getattr(self, which) if lo < t < hi)


def _component_tolerances(value) -> tuple:
    """A per-component ``atol`` as nested tuples of floats (hashable; ``np.asarray`` gives back its shape)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim == 0 or array.size == 0 or not np.all(np.isfinite(array)) \
            or not np.all(array > 0):
        raise SpecError(f"StepControl atol must be a finite number > 0, or an array of them with the state's shape "
                        f"(one per component, e.g. atol=(1e-8, 1e-14, 1e-8)), got {value!r}.")

    def nested(a):
        return tuple(nested(x) for x in a) if a.ndim > 1 else tuple(float(x) for x in a)
    return nested(array)


def check_atol_shape(control: StepControl, state_shape, owner: str) -> None:
    """A per-component ``atol`` must have the shape of the state it measures (``state_shape``; ``None`` where the
    model has no single state shape, which refuses it)."""
    if not control.per_component_atol:
        return
    shape = np.shape(control.atol)
    if state_shape is None:
        raise SpecError(f"A per-component StepControl atol needs a state of known shape; {owner} has none: give a "
                        "scalar atol, or use pn.ODEModel with a field of fixed input shape.")
    if tuple(shape) != tuple(state_shape):
        raise SpecError(f"StepControl atol has shape {tuple(shape)} but the state has shape {tuple(state_shape)}: "
                        "give one tolerance per state component (or one number for all).")


def _sorted_times(value, name: str) -> tuple[float, ...]:
    """``value`` (a number or a sequence of numbers) as a sorted tuple of distinct finite floats."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "iuf" or not np.all(np.isfinite(array)):
        raise SpecError(f"StepControl {name} must be a sequence of finite times, e.g. {name}=(0.5, 2.0), "
                        f"got {value!r}.")
    return tuple(float(t) for t in np.unique(array.astype(np.float64)))


def check_resolution(name: str, value: float, dtype: str) -> None:
    """Refuse a relative tolerance ``dtype`` cannot resolve (below half its machine epsilon): the error control
    would then follow round-off, taking steps that differ between backends and runs, or stall. Half, not one:
    torchdiffeq's default ``rtol=1e-7`` is 0.84 of float32's epsilon, and its own test suite runs it in float32
    (measured here: its ConstantODE, SineODE and LinearODE within its thresholds on JAX and torch, both
    directions, Dopri5/Bosh3/Dopri8)."""
    eps = float(np.finfo(dtype).eps)
    if value < eps / 2:
        raise SpecError(f"{name}={value:g} is below {dtype}'s resolution ({eps:.1e}): use a larger {name} or "
                        "dtype float64.")


def check_solver_control(solver, control: StepControl, *, give: str = "give it a step with "
                         "pn.StepControl(dt=...)") -> None:
    """A fixed-step solver needs ``dt`` and takes no ``dt0``; an adaptive one takes no ``dt`` (never ignored)."""
    if solver.adaptive and control.dt is not None:
        raise SpecError(f"{solver.name}() is adaptive: dt is for fixed-step solvers (pn.Euler(), pn.Midpoint(), "
                        "pn.Heun(), pn.RK4()); use dt0 for the first step of an adaptive one.")
    if not solver.adaptive and control.dt is None:
        raise SpecError(f"{solver.name}() is a fixed-step solver: {give}.")
    if not solver.adaptive and control.dt0 is not None:
        raise SpecError(f"{solver.name}() is a fixed-step solver: dt0 is the first step of an adaptive solver; "
                        "a fixed-step one takes only dt.")


def fixed_step_counts(ts, dt: float):
    """Steps per interval between consecutive save times: ``ceil(|Δt| / dt)`` (at least 1), as floats so that an
    absurdly small ``dt`` counts to a huge number instead of overflowing or allocating."""
    ts = np.asarray(ts, dtype=np.float64)
    return np.maximum(1.0, np.ceil(np.abs(np.diff(ts)) / dt - 1e-9))


def fixed_step_grid(ts, dt: float, max_steps: int | None = None):
    """The step grid of a fixed-step solve, shared by every backend so they take identical steps.

    Each interval between consecutive save times is split into ``ceil(|Δt| / dt)`` equal steps, so every save
    time is a step boundary: no backend interpolates, and the grid is the same everywhere. The steps are counted
    before the grid is built: more than ``max_steps`` raises :class:`pyneuralode.MaxStepsError` without
    allocating anything.
    """
    ts = np.asarray(ts, dtype=np.float64)
    counts = fixed_step_counts(ts, dt)
    if max_steps is not None and counts.sum() > max_steps:
        from ._errors import fixed_steps_error
        raise fixed_steps_error(counts.sum(), max_steps)
    pieces = [ts[:1]] + [np.linspace(a, b, int(n) + 1)[1:] for a, b, n in zip(ts[:-1], ts[1:], counts)]
    return np.concatenate(pieces)
