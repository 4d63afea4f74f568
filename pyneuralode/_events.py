"""Terminating events: stop a solve where a function of the state crosses zero, and differentiate where it stops.

A ball reaching the ground, a concentration reaching a threshold, a dose running out: the solve ends at the first
time ``g(t, u, p)`` changes sign, and the answer is that time and the state there — torchdiffeq's
``odeint_event``, diffrax's ``Event`` with a root finder, OrdinaryDiffEq's terminating ``ContinuousCallback``.
``g`` is written once in NumPy and traced like a :func:`pyneuralode.dynamics` field (into the same graph, as a
function that returns one number), so it may read the field's parameters, constants and networks by name.

Sensitivities of the event follow from the implicit function theorem: with ``y(t; θ)`` the solution and ``t*``
defined by ``g(t*, y(t*; θ), θ) = 0``,

    dt*/dθ = -(∂g/∂θ + ∇_y g · ∂y/∂θ) / (∂g/∂t + ∇_y g · f(t*, y*)),     dy*/dθ = ∂y/∂θ + f(t*, y*) · dt*/dθ,

which is what torchdiffeq's ``odeint_event`` builds into its backward pass (``ImplicitFnGradientRerouting``) and
what diffrax's root find gives through optimistix's implicit differentiation (there with the solver's dense
interpolant in place of ``f``, which differs from it by the solver's local error).

Several conditions and directions. ``fn`` may return ``k`` numbers, ``k`` conditions at once; each backend locates
the first zero of the one function ``h(t, u) = min_i max(σ (a_i − t), s_i g_i(t, u))`` (``σ`` the sign of
``t1 − t0``), with ``s_i`` the sign of ``g_i`` at the start — torchdiffeq's ``combine_event_functions`` — so the
earliest crossing of any condition ends the solve, on every backend alike, and the derivatives above hold for the
condition that fired. ``a_i`` is ``−σ∞`` (no effect) except for a condition restricted to one ``direction`` that
starts on the side it is meant to cross *to*: its first crossing does not count, so a first solve finds that
crossing at ``t_a``, and the solve is repeated with ``s_i`` flipped and ``a_i = t_a`` plus a small margin, where the
condition counts again (:func:`locate_in_direction`). The max keeps ``h`` continuous, so the root find is as for
one condition.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import numpy as np

from ._custom_loss import loss
from ._dynamics import Dynamics
from ._ensemble import MemberOutcomes
from ._errors import MaxStepsError, NonFiniteError, SpecError
from ._layers import AbstractLayer
from ._solution import Stats
from ._stepwatch import time_scale
from ._trace import is_boolean_event


@dataclasses.dataclass(frozen=True, eq=False)
class Event:
    """A terminating event: the solve stops at the first time ``fn(t, u, p)`` changes sign (in ``direction``).

    ```python
    @pn.dynamics(state=2, params={"g": 9.81})
    def falling(t, u, p):
        return np.stack([u[1], -p.g])

    ground = pn.Event(lambda t, u, p: u[0])          # height crosses zero
    model = pn.ODEModel(falling, solver=pn.Tsit5(), control=pn.StepControl(rtol=1e-8, atol=1e-8))
    hit = model.solve_event(model.init(0), np.array([10.0, 0.0]), event=ground, t0=0.0, t1=5.0,
                            sensitivities=True)
    hit.t, hit.y, hit.occurred, hit.dt_dparams        # t* = sqrt(2 h / g), dt*/dg = -t* / (2 g)
    ```

    ``fn`` is written for one sample in NumPy (the operations :func:`pyneuralode.dynamics` accepts) and returns one
    real number, or a 1-D array of ``k`` numbers for ``k`` conditions at once (the earliest crossing of any of them
    ends the solve, and ``EventSolution.which`` says which); ``p`` holds the field's declared parameters, constants
    and networks when the field is a :func:`pyneuralode.dynamics` (for any other field ``p`` is empty). ``fn``
    must not be zero at the start of the solve. ``fn`` may also return a boolean (or booleans) — ``u[0] < 0``,
    ``t > 10``, diffrax's boolean events — which ends the solve where it becomes true (located by bisection, to
    the same tolerance in time; it must be false at the start, and it has no sensitivities).

    ``direction`` (diffrax's ``direction``, SciPy's ``event.direction``, OrdinaryDiffEq's ``affect!`` /
    ``affect_neg!``): ``0`` (default) counts any sign change; ``1`` only a crossing from negative to positive
    (rising), ``-1`` only from positive to negative (falling), both as the solve proceeds (backwards in time when
    ``t1 < t0``, as diffrax counts them); a tuple gives one per condition. A condition that
    starts on the side it is meant to reach lets its first crossing pass and stops at the next one in its direction
    (found by solving again from ``t0``; its counts are included in ``stats``).

    A sign change is looked for between step ends (as diffrax and torchdiffeq do): a condition that changes sign
    twice within one step is missed; ``pn.StepControl(dtmax=...)`` below the time between the two crossings finds
    it.

    ``model.solve_event(..., t1=np.inf)`` waits for the event however long it takes (bounded by ``max_steps``);
    :func:`pyneuralode.steady_state_event` is the ready-made event of reaching equilibrium.
    """

    fn: Callable
    direction: int | tuple[int, ...] = 0

    def __post_init__(self):
        if not callable(self.fn):
            raise SpecError(f"pn.Event needs a function fn(t, u, p) returning one number, got {self.fn!r}.")
        directions = self.direction if isinstance(self.direction, (tuple, list)) else (self.direction,)
        if not directions or any(isinstance(d, bool) or d not in (-1, 0, 1) for d in directions):
            raise SpecError(f"pn.Event direction must be 0 (either way), 1 (rising: negative to positive) or -1 "
                            f"(falling), or a tuple of those, one per condition; got {self.direction!r}.")
        if isinstance(self.direction, list):
            object.__setattr__(self, "direction", tuple(self.direction))
        object.__setattr__(self, "_bound", {})  # field -> traced event: traced once, compiled once per backend

    @property
    def name(self) -> str:
        """The function's name."""
        return getattr(self.fn, "__name__", "event")

    def bind(self, field: AbstractLayer, state: tuple[int, ...], control=None) -> BoundEvent:
        """The event traced against ``field``'s declarations (:class:`BoundEvent`); ``control`` (the model's
        :class:`pyneuralode.StepControl`) gives a :func:`steady_state_event` the tolerances it was not given.
        Cached, so each backend compiles it once per field."""
        steady = isinstance(self.fn, _SteadyState)
        tolerances = self.fn.tolerances(control) if steady else None
        key = (field, tuple(state), tolerances)
        if key not in self._bound:
            fn = self.fn.condition(field, *tolerances) if steady else self.fn
            bound = BoundEvent(self._trace(fn, field, state, calls_field=steady), self.direction, self, field,
                               tuple(state))
            self._bound[key] = bound
        return self._bound[key]

    @staticmethod
    def _trace(fn, field, state, *, calls_field: bool = False) -> Dynamics:
        """``fn`` as a :class:`Dynamics` with one number or a vector as its value, whose canonical parameters are
        the field's own when the field is a ``Dynamics`` (so one flat vector serves both), and none otherwise —
        unless ``calls_field``: a function of the field's value (:func:`steady_state_event`) calls any other field
        as its one network, ``p.field``, whose weights are then the model's whole flat vector."""
        if isinstance(field, Dynamics):
            return Dynamics(fn, state=field.state, params=field.params, nets=field.nets,
                            constants=field.constants, positive=field.positive, scalar=True)
        if calls_field:
            return Dynamics(fn, state=state, nets={"field": field}, scalar=True)
        return Dynamics(fn, state=state, scalar=True)


@dataclasses.dataclass(frozen=True)
class _SteadyState:
    """The condition of :func:`steady_state_event`: ``rms(f(t, u)) − (atol + rtol · rms(u))``."""

    rtol: float | None
    atol: float | None
    __name__ = "steady_state"

    def __call__(self, t, u, p):  # pragma: no cover - bound to a field by Event.bind, never called as it is
        raise SpecError("pn.steady_state_event() is bound to the model's field by model.solve_event.")

    def tolerances(self, control) -> tuple[float, float]:
        """``(rtol, atol)``: the ones given, else the model's step control's (diffrax's default)."""
        if control is None and (self.rtol is None or self.atol is None):
            raise SpecError("pn.steady_state_event() without rtol/atol takes them from the model's StepControl: "
                            "use it with model.solve_event, or give rtol= and atol=.")
        return (float(control.rtol if self.rtol is None else self.rtol),
                float(control.smallest_atol if self.atol is None else self.atol))

    @staticmethod
    def condition(field, rtol: float, atol: float) -> Callable:
        def rms(x):
            return np.sqrt(np.mean(x * x))
        if isinstance(field, Dynamics):
            def steady_state(t, u, p):
                return rms(field.fn(t, u, p)) - (atol + rtol * rms(u))
        else:
            def steady_state(t, u, p):
                return rms(p.field(u)) - (atol + rtol * rms(u))
        return steady_state


def steady_state_event(*, rtol: float | None = None, atol: float | None = None) -> Event:
    """An :class:`Event` that ends the solve where it reaches a steady state: the first time the field's
    root-mean-square value falls to ``atol + rtol · rms(y)`` (diffrax's ``steady_state_event``, the same test with
    its default RMS norm; OrdinaryDiffEq's ``TerminateSteadyState``). ``rtol``/``atol`` default to the model's
    ``StepControl`` tolerances, as diffrax's do. Unlike diffrax's boolean test the condition is a number, so the
    time is located by root finding and has sensitivities. Use it with ``t1=np.inf`` to run until equilibrium::

        hit = model.solve_event(params, y0, event=pn.steady_state_event(), t0=0.0, t1=np.inf)
        hit.y, hit.t                     # the equilibrium state, and when the field fell below the tolerance
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not value >= 0 or not np.isfinite(value)):
            raise SpecError(f"steady_state_event {name} must be a finite number >= 0 (or None for the model's "
                            f"StepControl {name}), got {value!r}.")
    if rtol == 0 and atol == 0:
        raise SpecError("steady_state_event needs rtol > 0 or atol > 0: the field never reaches exactly zero.")
    return Event(_SteadyState(rtol, atol), direction=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class BoundEvent:
    """An :class:`Event` traced for one field: what the backends compile.

    ``conditions`` is the traced function (a :class:`Dynamics` whose value has shape ``()`` or ``(k,)``),
    ``direction`` one entry per condition, and :meth:`component` condition ``i`` alone (its gradient serves the
    implicit function theorem)."""

    conditions: Dynamics
    directions: tuple[int, ...]
    event: Event
    field: AbstractLayer
    state: tuple[int, ...]

    def __post_init__(self):
        shape = self.conditions.out_shape(self.state)
        count = 1 if shape == () else shape[0]
        directions = self.directions if isinstance(self.directions, tuple) else (self.directions,)
        if len(directions) == 1:
            directions = directions * count
        if len(directions) != count:
            raise SpecError(f"pn.Event({self.name}) has {count} conditions but {len(directions)} directions: give "
                            f"one direction, or one per condition.")
        object.__setattr__(self, "directions", tuple(directions))
        object.__setattr__(self, "_components", {})

    @property
    def name(self) -> str:
        """The event function's name."""
        return self.event.name

    @property
    def count(self) -> int:
        """The number of conditions ``k``."""
        return len(self.directions)

    @property
    def boolean(self) -> bool:
        """Whether the conditions are booleans (the solve ends where one becomes true; no derivatives)."""
        return is_boolean_event(self.conditions.graph)

    @property
    def steady_state(self) -> bool:
        """Whether this is a :func:`steady_state_event` (an RMS norm of the field, whose root JAX brackets by
        bisection: Newton's step left the interval on a decaying oscillation's norm, measured)."""
        return isinstance(self.event.fn, _SteadyState)

    def component(self, i: int) -> Dynamics:
        """Condition ``i`` alone, as a scalar :class:`Dynamics` (the whole function when it has one condition)."""
        if self.conditions.out_shape(self.state) == ():
            return self.conditions
        if i not in self._components:
            fn = self.event.fn

            def condition(t, u, p):
                return fn(t, u, p)[i]
            condition.__name__ = f"{self.name}[{i}]"
            self._components[i] = Event._trace(condition, self.field, self.state)
        return self._components[i]

    def values(self, params, t: float, y) -> np.ndarray:
        """The ``k`` conditions at ``(t, y)`` in NumPy (the reference), ``params`` the model's flat vector."""
        reads = self.conditions.params or self.conditions.nets
        own = params if reads else np.zeros(0)  # the event reads the field's
        return np.atleast_1d(self.conditions.evaluate(own, t, y)).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class EventSolution:
    """Where a solve with a terminating event stopped.

    - ``t``: the event time (``t1`` when no event happened before it), ``y``: the state there.
    - ``occurred``: whether the event happened (``False``: the solve reached ``t1`` first).
    - ``which``: the index of the condition that ended the solve (``0`` for a one-number event), ``None`` when
      no event happened.
    - ``stats``: the forward solve's counts (:class:`pyneuralode.Stats`).
    - With ``sensitivities=True``: ``dt_dparams`` (``(P,)``), ``dt_dy0`` (the state's shape), ``dy_dparams``
      (``(*state, P)``) and ``dy_dy0`` (``(*state, *state)``), the derivatives of the event time and state with
      respect to the canonical flat parameters and the initial state. Chain them with your loss's derivative
      (e.g. ``2 * (hit.t - target) * hit.dt_dparams``). They are computed by differentiating through the solve
      (discretise-then-optimise) whatever the model's adjoint; ``None`` otherwise.
    """

    t: float
    y: np.ndarray
    occurred: bool
    stats: Stats
    which: int | None = None
    dt_dparams: np.ndarray | None = None
    dt_dy0: np.ndarray | None = None
    dy_dparams: np.ndarray | None = None
    dy_dy0: np.ndarray | None = None


def check_event_inputs(model, params, y0, event, t0, t1) -> tuple[BoundEvent, float, float]:
    """``(bound event, t0, t1)`` for a checked call of ``model.solve_event``, or the SpecError naming the fix;
    ``params=None`` leaves out the check of the event's value at ``t0`` (an ensemble checks it per member)."""
    if not isinstance(event, Event):
        raise SpecError(f"event must be a pn.Event(fn), got {type(event).__name__}: wrap your function, "
                        "event=pn.Event(fn).")
    if model.augment:
        raise SpecError("solve_event does not take augmented models (augment > 0) yet: write the extra features "
                        "into a pn.dynamics field instead.")
    if not model.solver.adaptive:
        raise SpecError(f"solve_event needs an adaptive solver (the event is located on its dense output), got "
                        f"{model.solver.name}(): use e.g. pn.Tsit5() or pn.Dopri5().")
    state = model.state_shape or y0.shape
    if y0.shape != tuple(state):
        raise SpecError(f"solve_event takes one initial state of shape {tuple(state)}, got y0 of shape "
                        f"{y0.shape}: each sample meets its event at its own time, so solve them one by one.")
    times = []
    for name, value in (("t0", t0), ("t1", t1)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or np.isnan(value) or (name == "t0" and not np.isfinite(value)):
            raise SpecError(f"{name} must be a " + ("finite number" if name == "t0" else "number (np.inf: wait "
                            "until the event, bounded by max_steps)") + f", got {value!r}.")
        times.append(float(value))
    if times[0] == times[1]:
        raise SpecError(f"t1 must differ from t0 (both {times[0]}): t1 is the latest time the solve may reach "
                        "before the event.")
    bound = event.bind(model.field, tuple(state), model.control)
    if params is not None:
        check_event_start(bound, bound.values(params, times[0], y0), times[0])
    return bound, times[0], times[1]


@contextlib.contextmanager
def open_ended_advice(t1: float):
    """A :class:`pyneuralode.MaxStepsError` or :class:`pyneuralode.NonFiniteError` of a solve with ``t1 = ±inf``
    says the event may never have happened, or been stepped over."""
    try:
        yield
    except (MaxStepsError, NonFiniteError) as err:
        if np.isfinite(t1):
            raise
        raise type(err)(f"{err} With t1 = {t1} the solve runs until the event, and it had not happened: check the "
                        "event condition (one that changes sign twice within a step is stepped over: bound the "
                        "steps with pn.StepControl(dtmax=...)), or give a finite t1 to be told occurred=False when "
                        "the event does not come by then.") from None


def bad_starts(bound: BoundEvent, starts) -> np.ndarray:
    """Which rows of ``starts`` (``(M, k)``: each member's conditions at ``t0``) :func:`check_event_start` refuses:
    a value that is zero or not finite, or a boolean already true or a steady state already reached."""
    starts = np.asarray(starts, dtype=np.float64)
    already = bound.boolean or bound.steady_state  # a start past the event counts as one
    return ~np.isfinite(starts).all(1) | (starts == 0).any(1) | (already & (starts < 0).any(1))


def check_event_start(bound: BoundEvent, g0, t0: float, member: int | None = None) -> None:
    """The SpecError for an event function that is zero (or not finite) where the solve starts, or a boolean
    condition that is already true there (``g0`` its value, one number per condition)."""
    g0 = np.atleast_1d(np.asarray(g0, dtype=np.float64))
    where = "" if member is None else f"ensemble member {member}: "
    if bound.boolean and np.any(g0 < 0):
        which = "" if g0.size == 1 else f" (condition {int(np.flatnonzero(g0 < 0)[0])})"
        raise SpecError(f"{where}The event condition {bound.name}{which} is already true at t0 = {t0}: a boolean "
                        "condition ends the solve where it becomes true, so it must be false at the start.")
    if bound.steady_state and np.all(np.isfinite(g0)) and g0[0] <= 0:
        raise SpecError(f"{where}The solve starts at a steady state: at t0 = {t0} the field's RMS value is already "
                        "within the steady-state tolerance (atol + rtol * rms(y)), so there is nothing to wait for.")
    bad = np.flatnonzero(~np.isfinite(g0) | (g0 == 0.0))
    if bad.size:
        value = f"{g0[bad[0]]}" if g0.size == 1 else f"{g0[bad[0]]} in condition {bad[0]}"
        raise SpecError(f"{where}The event function {bound.name} is {value} at t0 = {t0}: it must be a finite, "
                        "nonzero number at the start (the event is its first sign change after t0).")


def check_event_sensitivities(bound: BoundEvent, sensitivities: bool) -> None:
    """The SpecError for sensitivities of a boolean condition, which has no derivative."""
    if sensitivities and bound.boolean:
        raise SpecError(f"The event condition {bound.name} is a boolean, which has no derivative: for "
                        "sensitivities write it as a number that crosses zero (u[0] - 10 rather than u[0] > 10).")


def start_plan(g0, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """``(signs, arm)`` for the first solve: ``s_i`` the sign of each condition at the start, ``a_i = −σ∞`` (see the
    module docstring)."""
    signs = np.sign(np.atleast_1d(np.asarray(g0, dtype=np.float64)))
    return signs, np.full(signs.shape, -np.sign(t1 - t0) * np.inf)


def combined(values, signs, arm, t: float, t0: float, t1: float) -> np.ndarray:
    """Each condition's term ``max(σ (a_i − t), s_i g_i)`` of the combined function (its minimum is ``h``)."""
    sigma = np.sign(t1 - t0)
    with np.errstate(invalid="ignore"):
        return np.maximum(sigma * (arm - t), signs * np.atleast_1d(values))


def fired(bound: BoundEvent, params, t: float, y, signs, arm, t0: float, t1: float, probe=None) -> int:
    """The condition that ended a solve at ``(t, y)``: the smallest term of the combined function there. Boolean
    conditions are read at ``probe(t, y)``, a point just past the located time (which lies within the root find's
    tolerance of the switch, possibly before it, where every condition still reads false)."""
    if bound.boolean and probe is not None:
        t, y = probe(t, y)
    return int(np.argmin(combined(bound.values(params, t, y), signs, arm, t, t0, t1)))


def needs_rearming(bound: BoundEvent, params, t0: float, y0) -> bool:
    """Whether a directed condition starts on the side its direction makes it cross to (so its first crossing does
    not count and :func:`locate_in_direction` solves more than once); never for an event without directions."""
    directions = np.array(bound.directions)
    if not directions.any():
        return False
    return bool(np.any((directions != 0) & (np.sign(bound.values(params, t0, y0)) == directions)))


def locate_in_direction(locate, bound: BoundEvent, params, y0, t0: float, t1: float, margin: float, probe=None):
    """``(t, y, occurred, which, signs, arm, stats)``: the event located with ``locate(signs, arm) -> (t, y,
    occurred, stats)`` (one backend solve from ``t0`` with the combined function), solving again, with that
    condition re-armed, after each crossing its direction excludes (module docstring). ``stats`` sums the solves'
    counts; ``margin`` is how far past an excluded crossing its condition counts again (above the backend's error
    in locating the time); ``probe`` as for :func:`fired`."""
    directions = np.array(bound.directions)
    signs, arm = start_plan(bound.values(params, t0, y0), t0, t1)
    total: dict = {}
    for _ in range(bound.count + 1):  # each condition is re-armed at most once
        t, y, occurred, stats = locate(signs, arm)
        total = {k: total.get(k, 0) + v for k, v in stats.items()}
        if not occurred:
            return t, y, False, None, signs, arm, total
        which = fired(bound, params, t, y, signs, arm, t0, t1, probe)
        crossed_to = -signs[which]  # the combined term s_i g_i went from + to −, so g_i went to the sign −s_i
        if directions[which] == 0 or directions[which] == crossed_to:
            return t, y, True, which, signs, arm, total
        signs, arm = signs.copy(), arm.copy()
        signs[which], arm[which] = -signs[which], t + np.sign(t1 - t0) * margin
    raise AssertionError("an event condition was re-armed twice")  # pragma: no cover - each flips once


def event_margin(t0: float, t1: float, dtype, time_tolerance: float) -> float:
    """How far past a crossing its direction excludes a condition starts to count again: well above the error
    in the located time (``time_tolerance``, the backend's) and the time's round-off."""
    scale = max(1.0, time_scale(t0, t1))
    return max(100.0 * time_tolerance, float(np.sqrt(np.finfo(dtype).eps)) * scale)


def _last_state_component(ys, target):
    """``<ys, target>``: with ``target`` one at a single entry of the last time, that entry of ``y(t_end)``."""
    return np.sum(ys * target)


_PICK_ENTRY = loss(_last_state_component)  # traced once per state shape, then cached with the function


def implicit_sensitivities(model, params, y0, t0: float, t: float, y: np.ndarray, gradient) -> dict:
    """The derivatives of an event's time and state by the implicit function theorem (module docstring), from
    pieces every backend already computes: ``gradient = (∂g/∂t, ∇_y g, ∂g/∂θ)`` of the event function at
    ``(t, y)`` (``∂g/∂θ`` in the canonical layout, zeros for an event that reads no parameter), the Jacobian of
    ``y(t)`` at the fixed time ``t`` — one ``model.value_and_grad`` of a loss that picks one state entry per row,
    the backend's own tested gradients — and ``f(t, y)``. ``gradient=None``: no event happened, the solve ended at
    the fixed time ``t = t1``, so ``dt/d(θ, y0) = 0`` and ``y``'s derivatives are those of the solve to ``t1``."""
    ts = np.array([t0, t], dtype=model.dtype)
    rows_p, rows_y0 = [], []
    for k in range(y.size):
        target = np.zeros((2, *y0.shape))
        target[-1].flat[k] = 1.0
        res = model.value_and_grad(params, y0, ts, loss=_PICK_ENTRY(target))
        rows_p.append(res.grad_params)
        rows_y0.append(res.grad_y0.reshape(-1))
    dy_dp, dy_dy0 = np.stack(rows_p), np.stack(rows_y0)  # ∂y(t)/∂(θ, y0) at the fixed time t
    shape, dtype = y0.shape, np.dtype(model.dtype)
    if gradient is None:
        return dict(dt_dparams=np.zeros(dy_dp.shape[1], dtype), dt_dy0=np.zeros(shape, dtype),
                    dy_dparams=dy_dp.reshape(*shape, -1).astype(dtype),
                    dy_dy0=dy_dy0.reshape(*shape, *shape).astype(dtype))
    g_t, g_y, g_p = (np.asarray(v, dtype=np.float64) for v in gradient)
    g_y = g_y.reshape(-1)
    f = model.program.field_along(params, np.array([t], dtype=model.dtype),
                                  np.asarray(y, dtype=model.dtype)[None, None])[0, 0].reshape(-1)
    rate = float(g_t + g_y @ f)  # dg/dt along the solution at t*
    if rate == 0.0 or not np.isfinite(rate):
        raise SpecError("The event function does not cross zero transversally at the event (its rate of change "
                        "along the solution is 0 there), so the event time has no derivative.")
    dt_dp = -(g_p + g_y @ dy_dp) / rate
    dt_dy0 = -(g_y @ dy_dy0) / rate
    return dict(dt_dparams=dt_dp.astype(dtype), dt_dy0=dt_dy0.reshape(shape).astype(dtype),
                dy_dparams=(dy_dp + f[:, None] * dt_dp[None, :]).reshape(*shape, -1).astype(dtype),
                dy_dy0=(dy_dy0 + f[:, None] * dt_dy0[None, :]).reshape(*shape, *shape).astype(dtype))


@dataclasses.dataclass(frozen=True)
class EventEnsembleSolution(MemberOutcomes):
    """Where each member of ``model.solve_event_ensemble`` stopped (``M`` members).

    - ``t``: ``(M,)`` event times (``t1`` where no event happened first), ``y``: ``(M, *state)`` the states there.
    - ``occurred``: ``(M,)`` whether each member's event happened before ``t1``; ``which``: ``(M,)`` the condition
      that ended each member's solve (``-1`` where none did).
    - ``nfe_forward``, ``steps_accepted``, ``steps_rejected``, ``ok``, ``errors``: per member, as
      :class:`pyneuralode.EnsembleSolution` — a member whose solve failed is reported there (its ``t`` and ``y``
      NaN, counts 0) while the others still return.
    - With ``sensitivities=True``: ``dt_dparams`` ``(M, P)``, ``dt_dy0`` ``(M, *state)``, ``dy_dparams``
      ``(M, *state, P)`` and ``dy_dy0`` ``(M, *state, *state)``, each member's
      :class:`pyneuralode.EventSolution` derivatives (NaN for a failed member); ``None`` otherwise.
    """

    t: np.ndarray
    y: np.ndarray
    occurred: np.ndarray
    which: np.ndarray
    dt_dparams: np.ndarray | None = None
    dt_dy0: np.ndarray | None = None
    dy_dparams: np.ndarray | None = None
    dy_dy0: np.ndarray | None = None

    @classmethod
    def assemble(cls, t, y, occurred, which, counts, errors, sensitivities=None) -> EventEnsembleSolution:
        """From per-member arrays and ``errors``; a failed member's time, state, counts and ``sensitivities`` (a
        dict of the four derivative arrays, member axis first) become NaN and 0."""
        fields = cls.outcomes(counts, errors)
        ok = fields["ok"]
        t, y = np.array(t, dtype=float), np.array(y)
        t[~ok], y[~ok] = np.nan, np.nan
        derivatives = {k: np.array(v) for k, v in (sensitivities or {}).items()}
        for v in derivatives.values():
            v[~ok] = np.nan
        occurred = np.asarray(occurred, dtype=bool) & ok
        return cls(t=t, y=y, occurred=occurred, which=np.where(occurred, which, -1).astype(np.int64), **fields,
                   **derivatives)


SENSITIVITIES = ("dt_dparams", "dt_dy0", "dy_dparams", "dy_dy0")
"""The derivative fields of an :class:`EventSolution` (and, member axis first, an :class:`EventEnsembleSolution`)."""


def sensitivity_arrays(members: int, num_params: int, state: tuple[int, ...], dtype) -> dict:
    """The four derivative arrays of an ensemble of ``members``, NaN until each member's are written."""
    shapes = {"dt_dparams": (num_params,), "dt_dy0": state, "dy_dparams": (*state, num_params),
              "dy_dy0": (*state, *state)}
    return {k: np.full((members, *shapes[k]), np.nan, dtype=dtype) for k in SENSITIVITIES}


def record_member(m: int, hit: EventSolution, t, y, occurred, which, counts, derivatives=None) -> None:
    """Write member ``m``'s :class:`EventSolution` into an ensemble's arrays (and its derivatives into
    ``derivatives``, the :func:`sensitivity_arrays`, when given)."""
    t[m], y[m], occurred[m] = hit.t, hit.y, hit.occurred
    which[m] = -1 if hit.which is None else hit.which
    counts[m] = hit.stats.forward_row()
    for k in SENSITIVITIES if derivatives is not None else ():
        derivatives[k][m] = getattr(hit, k)


def loop_event_ensemble(solve_one, inputs, *, sensitivities: bool = False) -> EventEnsembleSolution:
    """The members one after another with ``solve_one(params, y0) -> EventSolution``, each member's failure caught
    (a bad input, such as an event function that is zero at ``t0`` for one member, raises for the call); with
    ``sensitivities`` each member's derivatives are gathered."""
    from ._errors import PyNeuralODEError
    params, y0 = inputs.expanded()
    derivatives = (sensitivity_arrays(inputs.members, params.shape[1], y0.shape[1:], y0.dtype) if sensitivities
                   else None)
    t = np.full(inputs.members, np.nan)
    y = np.full((inputs.members, *y0.shape[1:]), np.nan, dtype=y0.dtype)
    occurred = np.zeros(inputs.members, dtype=bool)
    which = np.full(inputs.members, -1)
    counts = np.zeros((inputs.members, 3), dtype=np.int64)
    errors: list[str | None] = []
    for m in range(inputs.members):
        try:
            hit = solve_one(params[m], y0[m])
        except SpecError as err:  # the options were checked once: this is the member's own start
            raise SpecError(f"ensemble member {m}: {err}") from None
        except PyNeuralODEError as err:
            errors.append(str(err))
            continue
        record_member(m, hit, t, y, occurred, which, counts, derivatives)
        errors.append(None)
    return EventEnsembleSolution.assemble(t, y, occurred, which, counts, errors, derivatives)
