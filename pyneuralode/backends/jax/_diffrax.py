"""Translate pyneuralode's solver and step-control objects into diffrax's, and count evaluations exactly.

Initial step. ``StepControl(dt0=None)`` means Hairer's rule (*Solving ODEs I*, II.4) exactly as torchdiffeq's
``misc._select_initial_step`` computes it, so both backends start with the same step. It is computed here rather
than by diffrax because diffrax 0.7.2's own rule never runs for ``diffeqsolve``: ``_select_initial_step`` returns
0.01 unless ``terms`` is an ``ODETerm``, and ``diffeqsolve`` always passes a ``WrapTerm``. The rule's first
evaluation ``f(t0, y0)`` is handed to the FSAL solver as its first stage (``solver_state=(False, f0)``), as
torchdiffeq does, so it is not evaluated twice; with a given ``dt0``, ``f(t0, y0)`` is evaluated once and handed
over the same way. Gradients do not flow through the chosen step (as in diffrax).

Forward NFE then follow from diffrax's step statistics, because an explicit Runge–Kutta step costs a fixed number
of evaluations (diffrax#315), checked against an independent host-callback counter in tests/test_jax_backend.py:

    nfe = [2 if dt0 is picked by Hairer's rule, else 1 for an FSAL method's handed-over first stage]
        + steps * (stages - [1 if FSAL])       # accepted and rejected steps alike
        + [restarts if FSAL]                   # steps that evaluate their first stage afresh

An FSAL ("first same as last") method takes each step's first stage from the step before, except in a step that
starts fresh: diffrax evaluates it when ``first_step | made_jump`` (``runge_kutta.py``), and both flags survive a
rejected step. The first stage is always handed over (see above), so the attempts that start fresh are those
after stepping across a StepControl jump time, until one is accepted. The watched controller counts them; a step rejected
elsewhere reuses its first stage, as torchdiffeq's does. Fixed-step solvers (none of them FSAL) have no restarts.

Implicit methods (Kvaerno, KenCarp, ImplicitEuler) evaluate the field a data-dependent number of times inside
Newton iterations; they carry an exact count through the solve instead (``_implicit``), with no host callback.
"""

from __future__ import annotations

from typing import Any, Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ..._control import StepControl, fixed_step_grid
from ..._errors import BLOW_UP, FAILED, MAX_STEPS, OK, STIFF, NotSupportedError
from ..._solution import NOT_COUNTED
from ..._solvers import AbstractSolver
from ..._stepwatch import EPS, FIRST_STEP_MARGIN, GROWTH, PATIENCE, STARVATION
from ._implicit import KenCarp3, KenCarp4, KenCarp5, counting_parts

_SOLVERS = {
    "Euler": diffrax.Euler,
    "Midpoint": diffrax.Midpoint,
    "Heun": diffrax.Heun,
    "RK4": None,  # built below: diffrax has no classic RK4 class; its tableau lives here
    "Bosh3": diffrax.Bosh3,
    "Dopri5": diffrax.Dopri5,
    "Tsit5": diffrax.Tsit5,
    "Dopri8": diffrax.Dopri8,
    "ImplicitEuler": diffrax.ImplicitEuler,
    "Kvaerno3": diffrax.Kvaerno3,
    "Kvaerno4": diffrax.Kvaerno4,
    "Kvaerno5": diffrax.Kvaerno5,
    # KenCarp: the implicit tableau of diffrax's IMEX pairs, on the whole field (see _implicit._ImplicitKenCarp)
    "KenCarp3": KenCarp3,
    "KenCarp4": KenCarp4,
    "KenCarp5": KenCarp5,
}


class _RK4(diffrax.AbstractERK):
    """Classic 4th-order RK with the 3/8 rule, the variant torchdiffeq's 'rk4' runs (rk_common.py
    ``rk4_alt_step_func``); diffrax ships no classic RK4 class, so the tableau is given here."""

    tableau = diffrax.ButcherTableau(
        c=np.array([1 / 3, 2 / 3, 1.0]),
        b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]),
        b_error=np.zeros(4),
        a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])),
    )
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


def make_solver(solver: AbstractSolver):
    """The diffrax solver object for a pyneuralode solver."""
    if solver.name == "RK4":
        return _RK4()
    if solver.name not in _SOLVERS:
        raise NotSupportedError(f"{solver.name}() is not available on the JAX backend.")
    return _SOLVERS[solver.name]()


def stage_cost(diffrax_solver) -> tuple[int, bool]:
    """``(stages, fsal)`` of an explicit diffrax solver, read from its Butcher tableau (Euler has none)."""
    tableau = getattr(diffrax_solver, "tableau", None)
    if tableau is None:
        return 1, False
    return tableau.num_stages, bool(tableau.fsal)


def nfe_from_steps(diffrax_solver, num_steps, restarts, *, before: int):
    """Exact evaluations of an explicit method (see the module docstring for the rule and its proof); ``before``
    counts those made before the solve (Hairer's rule, a first stage handed to the solver)."""
    stages, fsal = stage_cost(diffrax_solver)
    return before + num_steps * (stages - int(fsal)) + (restarts if fsal else 0)


def hairer_initial_step(fn, t0, y0, direction, *, order: int, rtol: float, atol: float, norm, floor=0.0):
    """``(h, f0)``: Hairer's initial step (a signed step, along ``direction`` = ±1) and ``f0 = fn(t0, y0)``.

    Line by line torchdiffeq's ``misc._select_initial_step`` (which sees reversed time as forward time with a
    negated field; written here in the original time). ``fn(t, y)`` is the vector field, ``y0`` any pytree and
    ``norm`` maps a pytree of scaled values to a scalar. Costs two evaluations; ``f0`` is returned so the
    solver reuses it as its first stage. ``floor`` is the smallest step returned (see
    :data:`pyneuralode._stepwatch.FIRST_STEP_MARGIN`).
    """
    tree = jax.tree_util.tree_map
    f0 = fn(t0, y0)
    scale = tree(lambda y: atol + jnp.abs(y) * rtol, y0)
    d0 = jnp.abs(norm(tree(jnp.divide, y0, scale)))
    d1 = jnp.abs(norm(tree(jnp.divide, f0, scale)))
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.abs(jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1.0, d1)))
    y1 = tree(lambda y, f: y + direction * h0 * f, y0, f0)
    f1 = fn(t0 + direction * h0, y1)
    d2 = jnp.abs(norm(tree(lambda a, b, s: (a - b) / s, f1, f0, scale)) / h0)
    flat = (d1 <= 1e-15) & (d2 <= 1e-15)
    max_d = jnp.maximum(d1, d2)
    h1 = jnp.where(flat, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.where(flat, 1.0, max_d)) ** (1.0 / order))
    h = jax.lax.stop_gradient(jnp.maximum(jnp.minimum(100 * h0, jnp.abs(h1)), floor))  # no gradient through it
    return direction * h, f0


def finite_abs(t):
    """``|t|``, or 0 for an infinite ``t`` (an event solve's open end): :func:`pyneuralode._stepwatch.time_scale`
    on traced times."""
    return jnp.where(jnp.isfinite(t), jnp.abs(t), 0.0)


class WatchedController(diffrax.AbstractAdaptiveStepSizeController):
    """``inner`` (a PIDController, whose steps it does not change) plus :mod:`pyneuralode._stepwatch`'s rule.

    Every attempted step is checked; a blow-up or a stiff stall ends the solve (the step is rejected and the
    solve jumps to its end), and the kind (``BLOW_UP``/``STIFF``) is kept in the controller state, which
    :func:`integrate` saves and reads (:meth:`failure`) before diffrax's own result. The state also counts the
    attempted steps that start fresh (:meth:`restarts`, see the module docstring); the next attempt does while
    ``fresh`` holds, which is true at the start unless the first stage was handed to the solver
    (``first_stage_given``) and after an accepted step onto a jump time.
    diffrax flips decreasing times to increasing ones before the controller sees them, so the rule's absolute
    values are unchanged.

    The state carries only what the static options need: no restart counter when no attempt can start fresh
    (first stage given, no jump times) or when the evaluations are counted exactly anyway (``count_restarts``
    false: implicit solvers, see ``_implicit``), no stall counters when stalls are not watched. Every carried value costs
    each step of a vectorised solve a select per member (an ensemble of 256 Lotka–Volterra members on XLA:CPU ran
    15% slower with the unused counters carried along, measured).
    """

    inner: diffrax.AbstractAdaptiveStepSizeController
    max_steps: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    rtol: float
    atol: float
    norm: Callable = eqx.field(static=True)
    first_stage_given: bool = eqx.field(static=True, default=False)
    stall_is_stiffness: bool = eqx.field(static=True, default=True)
    """False for implicit solvers: their small steps are the problem's own time scales (Robertson's early
    transient), not an explicit method's stability limit, and a stiff solver is already in use."""
    can_jump: bool = eqx.field(static=True, default=False)
    """Whether ``inner`` may step onto a jump time (a ``ClipStepSizeController`` with ``jump_ts``)."""
    count_restarts: bool = eqx.field(static=True, default=True)
    """Whether the NFE is derived from the steps (explicit solvers), which needs the fresh starts counted."""
    t_end: Any = None
    """The solve's end time, in the times the controller sees (:meth:`wrap` flips it with diffrax's direction)."""

    @property
    def _counts_restarts(self) -> bool:
        return self.count_restarts and (self.can_jump or not self.first_stage_given)

    def wrap(self, direction):
        # A field, not loop state: a value carried through a vectorised while loop costs a select per member on
        # every step, a field is a constant of the loop.
        return eqx.tree_at(lambda c: (c.inner, c.t_end), self, (self.inner.wrap(direction), self.t_end * direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, inner = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        zero = jnp.zeros((), jnp.int32)
        restart = (jnp.array(not self.first_stage_given), zero) if self._counts_restarts else ()
        stall = (zero, zero, jnp.zeros((), jnp.result_type(t1))) if self.stall_is_stiffness else ()
        return tnext, (inner, zero, restart, stall)

    def failure(self, controller_state):
        """The kind of failure the watch stopped the solve for (``OK`` if none), from the final state."""
        return controller_state[1]

    def restarts(self, controller_state):
        """The attempted steps that started fresh, from the final state (a Python 0 when none can)."""
        return controller_state[2][1] if self._counts_restarts else 0

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        inner, kind, restart, stall = controller_state
        t_end = self.t_end
        keep, next_t0, next_t1, jump, inner, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, inner)
        if self._counts_restarts:
            fresh, restarts = restart
            restarts = restarts + fresh.astype(restarts.dtype)  # this attempt started fresh
            fresh = jnp.where(keep, jump, fresh)  # diffrax: made_jump of an accepted step, else the flags it had
            restart = (fresh, restarts)
        h = jnp.abs(t1 - t0)
        blow_up = ~(h > self.eps * jnp.maximum(jnp.abs(t0), finite_abs(t_end)))
        stiff = False
        if self.stall_is_stiffness:  # static: an implicit solve skips the stall bookkeeping (a few % of its step)
            steps, run, ref = stall
            steps = steps + 1
            # "STARVATION * h * (max_steps - steps) < |t_end - t0|", divided through: with the product form steering
            # the loop, one measurement of a vectorised Lotka–Volterra ensemble on XLA:CPU ran 1.7x slower than the
            # quotient form (stall counter only, no growth test); the quotient form was never the slower one.
            starved = h < jnp.abs(t_end - t0) / (STARVATION * (self.max_steps - steps))
            # empty leaves (the parameter integrals of a backsolve over a field with no parameters) have no max
            size = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)).astype(ref.dtype)
                                      for leaf in jax.tree_util.tree_leaves(y0) if leaf.size]))
            ref = jnp.where(starved & (run == 0), size, ref)
            run = jnp.where(starved, run + 1, 0)
            stiff = (run >= PATIENCE) & jnp.isfinite(size) & (size <= GROWTH * (ref + jnp.min(self.atol)))
            stall = (steps, run, ref)
        kind = jnp.where(blow_up, BLOW_UP, jnp.where(stiff, STIFF, kind)).astype(jnp.int32)
        # A tripped solve ends by rejecting the step and moving to the end of the interval, which ends diffrax's
        # loop; the failure travels in ``kind``. Ending it with a failed ``result`` instead makes the controller's
        # result dynamic, which cost 16% of a vectorised explicit solve with the blow-up test alone (256
        # Lotka–Volterra members). Save times after the trip are never written; callers raise on ``kind``.
        tripped = kind != OK
        keep = keep & ~tripped
        next_t0, next_t1 = jnp.where(tripped, t_end, next_t0), jnp.where(tripped, t_end, next_t1)
        return keep, next_t0, next_t1, jump, (inner, kind, restart, stall), result


def _times_inside(times: tuple[float, ...], t0, t1):
    """``times`` as an array for diffrax's ``ClipStepSizeController``, each one not strictly between ``t0`` and
    ``t1`` moved to infinity in the solve's direction, where the solve never arrives (``t0``/``t1`` may be traced,
    so the mask is in the graph). ``None`` when there are none. Keeping a time at or past the end would step to
    just before it and stop short; one at ``t0`` would count a rejected first step as a restart."""
    if not times:
        return None
    ts = jnp.asarray(times, dtype=jnp.result_type(t0))
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    return jnp.where((ts > lo) & (ts < hi), ts, jnp.sign(t1 - t0) * jnp.inf)


def integrate(field, args, y0, t0, t1, *, model_solver: AbstractSolver, diffrax_solver, control: StepControl,
              saveat, grid=None, adjoint=None, norm=optx.rms_norm, dt=None, watch_stalls=True, event=None):
    """One ``diffeqsolve`` with pyneuralode's step rules; returns ``(sol, stats)`` with exact NFE.

    - Adaptive methods: diffrax's ``PIDController`` with the StepControl's ``pcoeff``/``icoeff`` (by default the
      integral controller, pcoeff=dcoeff=0 and icoeff=1, which torchdiffeq and OrdinaryDiffEq's defaults also use),
      safety and factor limits, and Hairer's
      initial step unless ``control.dt0`` is given; the control's ``jump_ts``/``step_ts`` inside the solve's
      interval through diffrax's ``ClipStepSizeController``.
    - Fixed-step methods: ``grid`` (from :func:`pyneuralode._control.fixed_step_grid`) through ``StepTo``, or a
      constant step ``dt`` when no grid is given.

    ``field(t, y, args)`` is diffrax's vector-field signature. ``stats`` holds ``nfe_forward`` (exact for
    explicit methods, and for implicit ones through ``_implicit``; ``NOT_COUNTED`` for an implicit solver given
    ``count_evaluations=False``), ``steps_accepted``, ``steps_rejected``, the flag
    ``max_steps`` and ``failed``, the failure kind (``pyneuralode._errors.OK``, ``MAX_STEPS``, ``BLOW_UP``,
    ``STIFF`` or ``FAILED``; see :mod:`pyneuralode._stepwatch`, whose rule watches every adaptive solve).
    ``watch_stalls=False`` keeps only the blow-up test: a stalled solve runs on to ``max_steps``. Ensembles use it
    (the stall bookkeeping cost 25-40% of a vectorised Lotka–Volterra ensemble on XLA:CPU, measured) and diagnose
    a failed member by solving it alone. ``event``: a ``diffrax.Event`` that ends the solve early (a success).
    """
    direction = jnp.sign(t1 - t0)
    solver_state, before = None, 0  # before: evaluations made before diffeqsolve
    fsal = stage_cost(diffrax_solver)[1] and not model_solver.stiff
    if model_solver.adaptive:
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0)).name  # the model's dtype
        # one atol, or one per state component (an array of the state's shape, broadcast over the batch axis:
        # diffrax's error scale atol + rtol |y| is elementwise)
        atol = jnp.asarray(control.atol_array(dtype)) if control.per_component_atol else control.atol
        pid = diffrax.PIDController(
            rtol=control.rtol, atol=atol, pcoeff=control.pcoeff, icoeff=control.icoeff, dcoeff=0.0,
            safety=control.safety, dtmax=control.dtmax,  # diffrax clips dt0 to dtmax too
            factormin=control.factormin, factormax=control.factormax, norm=norm)
        saveat = eqx.tree_at(lambda s: s.controller_state, saveat, True)
        if control.dt0 is None:
            before = 2
            floor = FIRST_STEP_MARGIN * EPS[dtype] * jnp.maximum(jnp.abs(t0), finite_abs(t1))
            dt0, f0 = hairer_initial_step(lambda t, y: field(t, y, args), t0, y0, direction,
                                          order=model_solver.order, rtol=control.rtol, atol=atol, norm=norm,
                                          floor=floor)
            if fsal:
                solver_state = (jnp.array(False), f0)  # reuse f0 as the first FSAL stage, as torchdiffeq does
        else:
            dt0 = direction * control.dt0
            if fsal:  # evaluated once and handed over, as torchdiffeq does: diffrax would evaluate it again on
                # every retry of a rejected first step, and counting those retries in the loop's state cost a
                # vectorised solve ~13% (256 Lotka–Volterra members on XLA:CPU, measured)
                before, solver_state = 1, (jnp.array(False), field(t0, y0, args))
        inner = pid if not (control.jump_ts or control.step_ts) else diffrax.ClipStepSizeController(
            pid, step_ts=_times_inside(control.step_ts, t0, t1), jump_ts=_times_inside(control.jump_ts, t0, t1))
        controller = WatchedController(inner, control.max_steps, EPS[dtype], control.rtol, atol, norm,
                                       first_stage_given=solver_state is not None,
                                       stall_is_stiffness=watch_stalls and not model_solver.stiff,
                                       can_jump=bool(control.jump_ts), count_restarts=not model_solver.stiff,
                                       t_end=jnp.asarray(t1))
    elif grid is not None:
        controller, dt0 = diffrax.StepTo(ts=grid), None
    else:
        controller, dt0 = diffrax.ConstantStepSize(), dt
    solver, watch = diffrax_solver, controller
    counting = model_solver.stiff and model_solver.count_evaluations
    if counting:  # each step's exact evaluation count reaches the controller (see _implicit)
        solver, controller = counting_parts(diffrax_solver, controller, norm=norm)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver, t0, t1, dt0, y0, args=args, saveat=saveat,
        stepsize_controller=controller, max_steps=control.max_steps, solver_state=solver_state,
        adjoint=adjoint if adjoint is not None else diffrax.RecursiveCheckpointAdjoint(), throw=False, event=event)
    steps, accepted = sol.stats["num_steps"], sol.stats["num_accepted_steps"]
    max_steps = sol.result == diffrax.RESULTS.max_steps_reached
    controller_state = sol.controller_state
    if counting:  # (watched controller's state, evaluation count)
        controller_state, counted = controller_state
        nfe = counted.astype(jnp.int32) + before  # + the evaluations before the solve (Hairer's rule)
    elif model_solver.stiff:  # count_evaluations=False: the host reads NOT_COUNTED as None
        nfe = jnp.asarray(NOT_COUNTED, jnp.int32)
    else:
        restarts = watch.restarts(controller_state) if model_solver.adaptive else 0
        nfe = nfe_from_steps(diffrax_solver, steps, restarts, before=before)
    # BLOW_UP or STIFF if the watch stopped it
    watched = watch.failure(controller_state) if model_solver.adaptive else OK
    succeeded = sol.result == diffrax.RESULTS.successful
    if event is not None:
        succeeded = succeeded | (sol.result == diffrax.RESULTS.event_occurred)
    kind = jnp.where(watched != OK, watched, jnp.where(succeeded, OK, jnp.where(max_steps, MAX_STEPS, FAILED)))
    stats = {
        "nfe_forward": nfe,
        "steps_accepted": accepted,
        "steps_rejected": steps - accepted,
        "max_steps": max_steps,
        "failed": kind,
    }
    return sol, stats


def fixed_grid(control: StepControl, ts_np):
    """The step grid of a fixed-step solve (numpy), passed into the compiled solve as an array argument."""
    return fixed_step_grid(ts_np, control.dt, control.max_steps).astype(ts_np.dtype)
