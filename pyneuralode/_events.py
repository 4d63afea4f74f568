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
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ._custom_loss import loss
from ._dynamics import Dynamics
from ._ensemble import MemberOutcomes
from ._errors import SpecError
from ._layers import AbstractLayer
from ._solution import Stats


@dataclasses.dataclass(frozen=True, eq=False)
class Event:
    """A terminating event: the solve stops at the first time ``fn(t, u, p)`` changes sign.

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
    real number; ``p`` holds the field's declared parameters, constants and networks when the field is a
    :func:`pyneuralode.dynamics` (for any other field ``p`` is empty). Any sign change counts, in either direction,
    as in torchdiffeq: write ``fn`` so that the first crossing is the one you mean (e.g. ``u[0] - 0.5`` for a
    concentration falling to half, started above it). ``fn`` must not be zero at the start of the solve.
    """

    fn: Callable

    def __post_init__(self):
        if not callable(self.fn):
            raise SpecError(f"pn.Event needs a function fn(t, u, p) returning one number, got {self.fn!r}.")
        object.__setattr__(self, "_bound", {})  # field -> traced event: traced once, compiled once per backend

    @property
    def name(self) -> str:
        """The function's name."""
        return getattr(self.fn, "__name__", "event")

    def bind(self, field: AbstractLayer, state: tuple[int, ...]) -> Dynamics:
        """The event function traced against ``field``'s declarations: a scalar-valued :class:`Dynamics` whose
        canonical parameters are the field's own when the field is a ``Dynamics`` (so one flat vector serves
        both), and none otherwise. Cached, so each backend compiles it once per field."""
        key = (field, tuple(state))
        if key not in self._bound:
            if isinstance(field, Dynamics):
                bound = Dynamics(self.fn, state=field.state, params=field.params, nets=field.nets,
                                 constants=field.constants, positive=field.positive, scalar=True)
            else:
                bound = Dynamics(self.fn, state=state, scalar=True)
            self._bound[key] = bound
        return self._bound[key]


@dataclasses.dataclass(frozen=True)
class EventSolution:
    """Where a solve with a terminating event stopped.

    - ``t``: the event time (``t1`` when no event happened before it), ``y``: the state there.
    - ``occurred``: whether the event happened (``False``: the solve reached ``t1`` first).
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
    dt_dparams: np.ndarray | None = None
    dt_dy0: np.ndarray | None = None
    dy_dparams: np.ndarray | None = None
    dy_dy0: np.ndarray | None = None


def check_event_inputs(model, params, y0, event, t0, t1) -> tuple[Dynamics, float, float]:
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
                or not np.isfinite(value):
            raise SpecError(f"{name} must be a finite number, got {value!r}.")
        times.append(float(value))
    if times[0] == times[1]:
        raise SpecError(f"t1 must differ from t0 (both {times[0]}): t1 is the latest time the solve may reach "
                        "before the event.")
    bound = event.bind(model.field, tuple(state))
    if params is not None:
        own = params if isinstance(model.field, Dynamics) else np.zeros(0)  # the event reads the field's
        check_event_start(event.name, float(bound.evaluate(own, times[0], y0)), times[0])
    return bound, times[0], times[1]


def check_event_start(name: str, g0: float, t0: float, member: int | None = None) -> None:
    """The SpecError for an event function that is zero (or not finite) where the solve starts."""
    if not np.isfinite(g0) or g0 == 0.0:
        where = "" if member is None else f"ensemble member {member}: "
        raise SpecError(f"{where}The event function {name} is {g0} at t0 = {t0}: it must be a finite, "
                        "nonzero number at the start (the event is its first sign change after t0).")


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
    - ``occurred``: ``(M,)`` whether each member's event happened before ``t1``.
    - ``nfe_forward``, ``steps_accepted``, ``steps_rejected``, ``ok``, ``errors``: per member, as
      :class:`pyneuralode.EnsembleSolution` — a member whose solve failed is reported there (its ``t`` and ``y``
      NaN, counts 0) while the others still return.
    """

    t: np.ndarray
    y: np.ndarray
    occurred: np.ndarray

    @classmethod
    def assemble(cls, t, y, occurred, counts, errors) -> EventEnsembleSolution:
        """From per-member arrays and ``errors``; a failed member's time, state and counts become NaN and 0."""
        fields = cls.outcomes(counts, errors)
        ok = fields["ok"]
        t, y = np.array(t, dtype=float), np.array(y)
        t[~ok], y[~ok] = np.nan, np.nan
        return cls(t=t, y=y, occurred=np.asarray(occurred, dtype=bool) & ok, **fields)


def loop_event_ensemble(solve_one, inputs) -> EventEnsembleSolution:
    """The members one after another with ``solve_one(params, y0) -> EventSolution``, each member's failure caught
    (a bad input, such as an event function that is zero at ``t0`` for one member, raises for the call)."""
    from ._errors import PyNeuralODEError
    params, y0 = inputs.expanded()
    t = np.full(inputs.members, np.nan)
    y = np.full((inputs.members, *y0.shape[1:]), np.nan, dtype=y0.dtype)
    occurred = np.zeros(inputs.members, dtype=bool)
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
        t[m], y[m], occurred[m] = hit.t, hit.y, hit.occurred
        counts[m] = hit.stats.nfe_forward, hit.stats.steps_accepted, hit.stats.steps_rejected
        errors.append(None)
    return EventEnsembleSolution.assemble(t, y, occurred, counts, errors)
