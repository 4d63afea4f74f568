"""A model compiled for JAX: jit-compiled solve and value-and-gradient with exact NFE, numpy in and out."""

from __future__ import annotations

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ..._errors import BLOW_UP, FAILED, MAX_STEPS, OK, STIFF, SolveError, non_finite_error, solve_failure
from ..._losses import cast_arrays
from ..._solution import Solution, Stats, ValueAndGrad, counted
from .._base import AbstractProgram
from ._backsolve import make_backsolve
from ._counting import new_probe, vjp_counted
from ._diffrax import finite_abs, fixed_grid, integrate, make_solver
from ._field import compile_split, compile_tensors
from ._x64 import require_x64_for_native, x64_scoped

_FORWARD = ("nfe_forward", "steps_accepted", "steps_rejected", "max_steps", "failed")
_ENSEMBLE_STATS = ("nfe_forward", "steps_accepted", "steps_rejected", "failed")


def _with_jacobian(solve, params, y0, *args):
    """``((t, y), aux, (J_params, J_y0))`` of an event ``solve(params, y0, *args) -> ((t, y), aux)``: reverse mode
    through the solve and, by implicit differentiation, its root find, one VJP per entry of ``[t, y.ravel()]``
    (the Jacobians' rows)."""
    def flat(p, y):
        (t, y_event), aux = solve(p, y, *args)
        return jnp.concatenate([t[None], y_event.ravel()]), (y_event, aux)
    out, vjp, (y_event, aux) = jax.vjp(flat, params, y0, has_aux=True)
    return (out[0], y_event), aux, jax.vmap(vjp)(jnp.eye(out.size, dtype=out.dtype))


def _sensitivity_fields(j_params, j_y0, state, *, members=False) -> dict:
    """The :class:`pyneuralode.EventSolution` derivative fields from :func:`_with_jacobian`'s rows (row 0: the
    time, then the state's entries), with a leading member axis when ``members`` (numpy arrays)."""
    axis = 1 if members else 0
    lead = j_params.shape[:axis]
    first = lambda a: np.take(a, 0, axis=axis)  # noqa: E731
    rest = lambda a: np.take(a, np.arange(1, a.shape[axis]), axis=axis)  # noqa: E731
    return dict(dt_dparams=first(j_params), dt_dy0=first(j_y0).reshape(*lead, *state),
                dy_dparams=rest(j_params).reshape(*lead, *state, -1),
                dy_dy0=rest(j_y0).reshape(*lead, *state, *state))


CHECKPOINT_BUDGET_BYTES = 32 * 2**20
MIN_CHECKPOINTS = 8


def default_checkpoints(max_steps: int, y0) -> int:
    """Checkpoints for ``RecursiveCheckpointAdjoint`` when the adjoint leaves the choice to the backend.

    diffrax's own default is ``O(sqrt(2 max_steps))`` (90 for the default 4096 steps), and its buffer
    ``(checkpoints, *state)`` is allocated, zero-filled and finally sorted with a gather on every gradient
    evaluation, whether or not the solve takes that many steps. For large states that is real time: on the
    64-channel MNIST ODE-Net (a 1.2 MB state, plus the FSAL stage) those 106 MB cost ~0.25 s of a ~2.5 s
    one-core training step. So the count is capped to keep the buffer near ``CHECKPOINT_BUDGET_BYTES`` (never
    below ``MIN_CHECKPOINTS``, never above diffrax's default): small states keep diffrax's choice, and a solve
    longer than the count is still exact, treeverse recomputing some forward steps.
    """
    diffrax_default = 1 if max_steps == 1 else math.floor(-1.5 + math.sqrt(2 * max_steps + 0.25)) + 1
    state_bytes = 2 * sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(y0))  # y + an FSAL stage
    capped = max(MIN_CHECKPOINTS, CHECKPOINT_BUDGET_BYTES // max(state_bytes, 1))
    return int(min(diffrax_default, capped, max_steps))


def unbatch_like(ys, data):
    """``ys`` (always batched inside) in the shape of the loss's target: without the batch axis when the caller's
    ``y0`` had none."""
    return ys if ys.ndim == data["target"].ndim else ys[:, 0]


class _IntervalBisection(optx.Bisection):
    """optimistix's bisection, finished when the bracket is narrower than the tolerance. optimistix also waits for
    ``|f|`` below ``atol``, which a boolean event condition (``±1`` on either side of the switch) never reaches.

    Use it with ``flip=True``: the combined event function is positive before the event and not after (its signs
    are chosen so), so the bracket's orientation is known. optimistix's ``flip="detect"`` also raises when the
    bracket holds no root, and under ``vmap`` diffrax runs the root find for every member when any member's event
    fires: a member whose event had not happened then stopped the whole ensemble ("The root is not contained in
    [lower, upper]"); its root find's result is discarded anyway."""

    def terminate(self, fn, y, args, options, state, tags):
        scale = self.atol + self.rtol * jnp.abs(y)
        return jnp.abs(state.lower - state.upper) < scale, optx.RESULTS.successful


def _pack(values) -> jax.Array:
    """Scalars packed into one float array (float64 when enabled; counts stay exact below 2**24 in float32)."""
    return jnp.stack([jnp.asarray(v).astype(jnp.result_type(float)) for v in values])


def backward_count(model, probe_count) -> int | None:
    """The backward pass's evaluation count as the VJP probe carried it, or ``None`` where it is not counted: an
    implicit solver under a discretise-then-optimise adjoint, whose VJPs run inside diffrax's implicit
    differentiation, out of the probe's reach (BacksolveAdjoint counts its own backward solve)."""
    if model.solver.stiff and model.adjoint.name != "BacksolveAdjoint":
        return None
    return int(round(float(probe_count)))


@x64_scoped
class JaxProgram(AbstractProgram):
    """The JAX/Diffrax program of one :class:`pyneuralode.ODEModel`.

    All arrays carry a leading batch axis inside; unbatched ``y0`` gets one added and removed. The pure
    functions :meth:`solve_fn` and :meth:`loss_and_grad_fn` are what the training loop and ``native()`` reuse.
    """

    def __init__(self, model, *, instrument=None):
        """``instrument(field) -> field`` wraps the compiled vector field (tests use it for independent counters)."""
        self.model = model
        self.dtype = jnp.dtype(model.dtype)
        # The solves split the flat parameters into tensors once, outside the solver loop (see compile_split);
        # ``field(params_flat, t, y)`` is kept for everything that evaluates the field outside a solve.
        self.split, apply = compile_split(model.field)
        self.apply = apply if instrument is None else instrument(apply)
        self.field = lambda params, t, y: self.apply(self.split(params), t, y)
        self.solver = make_solver(model.solver)
        self._solve_jit = jax.jit(self._solve_packed)
        self._vg_jit = jax.jit(self._value_and_grad_packed, static_argnums=(5,))
        self._ensemble_jit: dict = {}  # one compiled vmap per (params, y0) member axes
        self._cotangent_jit = jax.jit(lambda ys, data, kernel: jax.grad(lambda y: kernel(jnp, y, data))(ys),
                                      static_argnums=(2,))
        self._field_along_jit = jax.jit(jax.vmap(self.field, in_axes=(None, 0, 0)))
        self._event_jit: dict = {}  # (bound event, sensitivities) -> compiled solve to the event
        if model.adjoint.name == "BacksolveAdjoint":
            self._backsolve = make_backsolve(model, self.field, self.solver, self._plain_solve)

    # ------------------------------------------------------------------ pure functions
    def _diffeqsolve(self, field, params, y0, ts, grid, adjoint, *, watch_stalls=True):
        sol, stats = integrate(field, params, y0, ts[0], ts[-1], model_solver=self.model.solver,
                               diffrax_solver=self.solver, control=self.model.control,
                               saveat=diffrax.SaveAt(ts=ts), grid=grid, adjoint=adjoint, watch_stalls=watch_stalls)
        return sol.ys, stats

    def _plain_solve(self, params, y0, ts, grid, *, watch_stalls=True):
        return self._diffeqsolve(lambda t, y, w: self.apply(w, t, y), self.split(params), y0, ts, grid,
                                 diffrax.RecursiveCheckpointAdjoint(), watch_stalls=watch_stalls)

    def solve_fn(self, params, y0, ts, grid):
        """``(ys, stats)`` for batched ``y0`` — pure and jit-able."""
        return self._plain_solve(params, y0, ts, grid)

    def _diffrax_adjoint(self, y0):
        # DirectAdjoint and CheckpointAdjoint are both exact reverse-mode gradients of the discrete solve, so
        # both run through diffrax's RecursiveCheckpointAdjoint: diffrax's own DirectAdjoint gives the same
        # numbers but was 3x slower on the spiral and 16x on the CNF here, and is no lighter (its bounded while
        # loop checkpoints too; benchmarks/results/memory.json).
        adjoint = self.model.adjoint
        checkpoints = adjoint.checkpoints if adjoint.name == "CheckpointAdjoint" else None
        if checkpoints is None:
            checkpoints = default_checkpoints(self.model.control.max_steps, y0)
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints)

    def predict_fn(self, params, y0, ts, grid, probe):
        """``(ys, stats)`` differentiable with the model's adjoint; ``d/d probe`` carries backward counts."""
        if self.model.adjoint.name == "BacksolveAdjoint":
            return self._backsolve(params, y0, ts, grid, probe)
        if self.model.solver.stiff:  # forward-mode Jacobians cannot pass the counting custom_vjp
            field = lambda t, y, p: self.apply(p[0], t, y)  # noqa: E731
        else:
            counted = vjp_counted(self.apply)
            field = lambda t, y, p: counted(p[0], t, y, p[1])  # noqa: E731
        return self._diffeqsolve(field, (self.split(params), probe), y0, ts, grid, self._diffrax_adjoint(y0))

    def value_and_grad_fn(self, params, y0, ts, grid, data, loss_kernel):
        """``(value, (grad_params, grad_y0, probe_grad), (ys, stats))`` — pure and jit-able.

        ``loss_kernel(jnp, ys, data)`` is the loss (see :mod:`pyneuralode._losses`); ``data`` holds its arrays
        in the caller's shapes, so an unbatched call's loss sees ``ys`` without the internal batch axis."""
        def loss_fn(params, y0, probe):
            ys, stats = self.predict_fn(params, y0, ts, grid, probe)
            return loss_kernel(jnp, unbatch_like(ys, data), data), (ys, stats)

        probe = new_probe(self.dtype)
        (value, aux), grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(params, y0, probe)
        return value, grads, aux

    # ------------------------------------------------------------------ numpy API
    def grid(self, ts: np.ndarray) -> np.ndarray:
        """The fixed-step grid for ``ts`` (an empty array for adaptive solvers)."""
        return fixed_grid(self.model.control, ts) if not self.model.solver.adaptive else np.zeros(0, ts.dtype)

    def _arrays(self, params, y0, ts):
        batched = y0.ndim == len(self.model.field.in_shape or (y0.shape[-1],)) + 1
        y0b = y0 if batched else y0[None]
        return batched, jnp.asarray(params), jnp.asarray(y0b), jnp.asarray(ts), jnp.asarray(self.grid(ts))

    def raise_failure(self, kind, where: str = "forward solve") -> None:
        """Raise the shared error of a failure kind carried out of compiled code (nothing when it is OK)."""
        if kind == OK:  # the common case, first: this runs twice on every training step
            return
        backsolve = where != "forward solve" and self.model.adjoint.name == "BacksolveAdjoint"
        error = solve_failure(int(round(float(kind))), where=where, max_steps=self.model.control.max_steps,
                              solver=self.model.solver, backend="jax", backsolve=backsolve)
        if error is not None:
            raise error

    def _forward_stats(self, stats) -> dict:
        self.raise_failure(stats["failed"])
        return {"nfe_forward": counted(stats["nfe_forward"]), "steps_accepted": int(stats["steps_accepted"]),
                "steps_rejected": int(stats["steps_rejected"])}

    # The numpy API's compiled entry points return everything the host reads about the run packed into one
    # small "report" array, so a call costs one transfer for it instead of one per statistic.
    def _solve_packed(self, params, y0, ts, grid, *, watch_stalls=True):
        ys, stats = self._plain_solve(params, y0, ts, grid, watch_stalls=watch_stalls)
        return ys, _pack([stats[k] for k in _FORWARD])

    def _value_and_grad_packed(self, params, y0, ts, grid, data, loss_kernel):
        value, (gp, gy, probe), (ys, stats) = self.value_and_grad_fn(params, y0, ts, grid, data, loss_kernel)
        return ys, gp, gy, _pack([value, *(stats[k] for k in _FORWARD), *probe])

    def _forward_report(self, report) -> dict:
        """Forward statistics from a packed report (raises the shared errors on failure)."""
        stats = dict(zip(_FORWARD, report))
        return self._forward_stats(stats)

    def _batched_inputs(self, y0, ts):
        batched = y0.ndim == len(self.model.field.in_shape or (y0.shape[-1],)) + 1
        return batched, (y0 if batched else y0[None]), self.grid(ts)

    def solve(self, params, y0, ts):
        if ts.shape[0] == 1:
            return Solution(ts, np.asarray(y0)[None].copy(), Stats())
        batched, y, grid = self._batched_inputs(y0, ts)
        # numpy goes straight into the compiled function: jit's dispatch transfers it faster than jnp.asarray
        ys, report = jax.device_get(self._solve_jit(params, y, ts, grid))
        forward = self._forward_report(report)
        if not np.all(np.isfinite(ys)):
            raise non_finite_error()
        return Solution(ts, ys if batched else ys[:, 0], Stats(**forward))

    def solve_ensemble(self, inputs, ts, *, devices=None):
        """Members vectorised with ``jax.vmap`` in one compiled solve (sharded over ``devices`` if given).

        Each member is a batch of one inside the vmapped solve, so its error norm, steps and statistics are its
        own — exactly those of ``model.solve(params[m], y0[m], ts)``. Only member axes are mapped: a shared
        ``params`` or ``y0`` enters once (``in_axes=None``), neither copied per member nor sent to the device
        ``M`` times. The vectorised solve watches for blow-up only (the stall rule's bookkeeping cost 25-40% of
        every member's step); a member that fails is solved again alone, so its error is the words
        ``model.solve`` raises for it (a stiff member: the stiff diagnosis, not a bare ``max_steps``).
        """
        from ..._ensemble import EnsembleSolution, loop_ensemble
        from ._sharding import put_batch, put_replicated, resolve_mesh
        mesh = resolve_mesh(devices)
        members = inputs.members
        if ts.shape[0] == 1:
            return loop_ensemble(self.solve, inputs, ts)
        pad = (-members) % mesh.devices.size if mesh is not None else 0

        def member_axis(array, shared):  # padded with copies of the last member: an ensemble may be any size
            if shared:
                return put_replicated(mesh, array)
            if pad:
                array = np.concatenate([array, np.repeat(array[-1:], pad, axis=0)])
            return put_batch(mesh, array)
        axes = (None if inputs.params_shared else 0, None if inputs.y0_shared else 0)  # never both shared
        if axes not in self._ensemble_jit:
            def member(p, y, t, g):  # one member: a batch of one inside, its batch axis dropped on the device
                ys, stats = self._plain_solve(p, y[None], t, g, watch_stalls=False)
                # The statistics leave as they are (integers, a dict): packing them into one float array
                # inside the vmapped solve, as the single solve does, measured 10-15% slower per member.
                return ys[:, 0], {k: stats[k] for k in _ENSEMBLE_STATS}
            self._ensemble_jit[axes] = jax.jit(jax.vmap(member, in_axes=(*axes, None, None)))
        args = (member_axis(inputs.params, inputs.params_shared), member_axis(inputs.y0, inputs.y0_shared),
                *put_replicated(mesh, (ts, self.grid(ts))))
        ys, stats = jax.device_get(self._ensemble_jit[axes](*args))
        ys = ys[:members]
        # Checked for all members at once; only a failed member's message is built one by one.
        kinds = np.asarray(stats["failed"])[:members]
        errors: list[str | None] = [None] * members
        all_fine = (kinds == OK).all() and np.isfinite(ys).all()  # one pass each; members only on failure
        suspects = () if all_fine else np.flatnonzero((kinds != OK) | ~np.isfinite(ys.reshape(members, -1)).all(axis=1))
        for m in suspects:
            try:  # alone, with the whole watch: the single solve's diagnosis and words
                self.solve(inputs.params if inputs.params_shared else inputs.params[m],
                           inputs.y0 if inputs.y0_shared else inputs.y0[m], ts)
                self.raise_failure(kinds[m])
                raise non_finite_error()
            except SolveError as err:
                errors[m] = str(err)
        counts = np.stack([np.asarray(stats[k])[:members] for k in _ENSEMBLE_STATS[:3]], axis=1)
        return EnsembleSolution.from_counts(ts, ys, counts, errors)

    @staticmethod
    def _event_value(condition):
        """``value(tensors, t, y)``: the event function ``condition`` (a scalar- or vector-valued ``Dynamics``) at
        a batch of one ``y``; ``tensors`` are the field's split parameters, which a dynamics field's event reads as
        its own."""
        compiled = compile_tensors(condition)
        shares = bool(condition.params or condition.nets)
        return lambda tensors, t, y: compiled(tensors if shares else [], t, y)[0]

    def _event_solve_fn(self, bound, *, rearmed=False):
        """``solve(params, y0, t0, t1, signs, arm) -> ((t, y), (occurred, which, rearm, start, stats))`` stopping at
        the first zero of the combined function ``min_i max(σ (arm_i − t), signs_i g_i)`` of ``bound``'s
        conditions (``pyneuralode._events``; ``signs`` of 0 are taken from the conditions at the start), located
        by diffrax's root find on the dense output: optimistix Newton, or bisection when a condition is re-armed
        (``rearmed``), the conditions are booleans or the event is a steady state — the arming term's kink can
        send Newton out of a step that spans it, a boolean's ±1 has no slope, a decaying oscillation's RMS norm
        threw Newton out of the step (measured), and bisection needs only the sign change diffrax brackets.
        ``which`` is the condition that fired, ``rearm`` whether one starts on the side its direction crosses to
        (the caller then re-arms it), ``start`` the conditions at ``t0``. The step watch runs its blow-up test only:
        ``t1`` is a bound (possibly infinite), not a destination, so a stall says nothing (``_stepwatch``)."""
        value = self._event_value(bound.conditions)
        directions = np.asarray(bound.directions, dtype=self.dtype)
        tol = float(np.finfo(self.dtype).eps) ** 0.75  # in time: ~2e-12 (float64), ~6e-6 (float32)
        bisect = rearmed or bound.boolean or bound.steady_state
        root_finder = (_IntervalBisection(rtol=tol, atol=tol, flip=True) if bisect
                       else optx.Newton(rtol=tol, atol=tol, norm=optx.rms_norm))

        def solve(params, y0, t0, t1, signs, arm):
            tensors, sigma = self.split(params), jnp.sign(t1 - t0)
            start = value(tensors, t0, y0[None]).reshape(-1)
            signs = jnp.where(signs == 0, jnp.sign(start), signs)

            def terms(t, y, w):  # without a re-armed condition every arm term is -inf: left out
                signed = signs * value(w, t, y).reshape(-1)
                return jnp.maximum(sigma * (arm - t), signed) if rearmed else signed
            sol, stats = integrate(lambda t, y, w: self.apply(w, t, y), tensors, y0[None], t0, t1,
                                   model_solver=self.model.solver, diffrax_solver=self.solver,
                                   control=self.model.control, saveat=diffrax.SaveAt(t1=True),
                                   event=diffrax.Event(lambda t, y, args, **_: jnp.min(terms(t, y, args)),
                                                       root_finder=root_finder),
                                   watch_stalls=False)
            t, y = sol.ts[-1], sol.ys[-1]
            if bound.count == 1:
                which = jnp.zeros((), jnp.int32)
            elif bound.boolean:  # read just past t: the root find's t may lie before the switch (_events.fired)
                step = sigma * 4 * tol * jnp.maximum(1.0, jnp.maximum(jnp.abs(t0), finite_abs(t1)))
                which = jnp.argmin(terms(t + step, y + step * self.apply(tensors, t, y), tensors))
            else:
                which = jnp.argmin(terms(t, y, tensors))
            rearm = jnp.any((directions != 0) & (jnp.sign(start) == directions))
            occurred = sol.result == diffrax.RESULTS.event_occurred
            return (t, y[0]), (occurred, which, rearm, start, stats)
        return solve

    def _event_run(self, bound, sensitivities: bool, rearmed: bool):
        """The compiled ``run(params, y0, t0, t1, signs, arm) -> (y, jacobian or None, packed report)``."""
        key = (bound, sensitivities, rearmed)
        if key not in self._event_jit:
            solve = self._event_solve_fn(bound, rearmed=rearmed)

            def report(t, aux):  # one array for the host: a transfer per leaf costs ~7 us
                occurred, which, rearm, _, stats = aux
                return _pack([t, occurred, which, rearm, *(stats[k] for k in _FORWARD)])

            def run(params, y0, t0, t1, signs, arm):
                if not sensitivities:
                    (t, y_event), aux = solve(params, y0, t0, t1, signs, arm)
                    return y_event, None, report(t, aux)
                (t, y_event), aux, jac = _with_jacobian(solve, params, y0, t0, t1, signs, arm)
                return y_event, jac, report(t, aux)
            self._event_jit[key] = jax.jit(run)
        return self._event_jit[key]

    def _run_event(self, bound, sensitivities, params, y0, t0, t1, signs, arm):
        """``(t, y, occurred, which, rearm, forward counts, jacobian or None)`` of one compiled event solve."""
        run = self._event_run(bound, sensitivities, rearmed=bool(np.any(np.isfinite(arm))))
        y, jac, packed = jax.device_get(run(params, y0, *(np.asarray(v, self.dtype) for v in (t0, t1, signs, arm))))
        t, occurred = float(packed[0]), bool(packed[1] == 1)
        if not (np.isfinite(t) and np.all(np.isfinite(y))):
            raise non_finite_error()
        return t, y, occurred, int(packed[2]), bool(packed[3] == 1), self._forward_report(packed[4:]), jac

    def locate_event(self, params, y0, t0, t1, bound, signs, arm):
        t, y, occurred, _, _, forward, _ = self._run_event(bound, False, params, y0, t0, t1, signs, arm)
        return t, y, occurred, forward

    def solve_event(self, params, y0, t0, t1, bound, *, sensitivities=False):
        """One compiled solve; with sensitivities, reverse mode through it and the root find. When a condition
        must be re-armed (its direction excludes its first crossing), the shared :meth:`locate_in_direction` settles
        it and, with sensitivities, the last solve is differentiated."""
        from ..._events import EventSolution, needs_rearming
        if needs_rearming(bound, params, t0, y0):  # directed events only: read on the host before any solve
            t, y, occurred, which, signs, arm, forward = self.locate_in_direction(params, y0, t0, t1, bound)
            jac = None
            if sensitivities and occurred:
                t, y, occurred, _, _, last, jac = self._run_event(bound, True, params, y0, t0, t1, signs, arm)
                forward = {k: v + last[k] for k, v in forward.items()}
        else:  # one compiled solve, its signs taken from the conditions at the start
            none, arm = np.zeros(bound.count), np.full(bound.count, -np.sign(t1 - t0) * np.inf)
            t, y, occurred, which, _, forward, jac = self._run_event(bound, sensitivities, params, y0, t0, t1, none,
                                                                     arm)
        extra = {}
        if jac is not None:
            extra = _sensitivity_fields(*jac, y0.shape)
            if not all(np.all(np.isfinite(v)) for v in extra.values()):
                raise non_finite_error("event sensitivities")
        return EventSolution(t, y, occurred, Stats(**forward, nfe_backward=None if sensitivities else 0),
                             which=which if occurred else None, **extra)

    def solve_event_ensemble(self, inputs, t0, t1, bound, *, solve_one, sensitivities=False):
        """The members vectorised with ``jax.vmap`` of the event solve in one compiled call, each a batch of one
        with its own steps and counts (as :meth:`solve_ensemble`) and, with ``sensitivities``, its own reverse-mode
        pass (vectorised with the solves); the event's value at ``t0`` is checked for every member on the device,
        and a failed member — or one with a condition to re-arm (see :meth:`solve_event`) — is solved again
        alone."""
        from ..._errors import SolveError
        from ..._events import EventEnsembleSolution, bad_starts, check_event_start, record_member
        axes = (None if inputs.params_shared else 0, None if inputs.y0_shared else 0)
        key = ("ensemble", bound, axes, sensitivities)
        if key not in self._event_jit:
            solve = self._event_solve_fn(bound)
            none = jnp.zeros(bound.count, dtype=self.dtype)

            def member(p, y, a, b):
                arm = jnp.full(bound.count, -jnp.sign(b - a) * jnp.inf, dtype=self.dtype)
                if sensitivities:
                    (t, y_event), aux, jac = _with_jacobian(solve, p, y, a, b, none, arm)
                else:
                    ((t, y_event), aux), jac = solve(p, y, a, b, none, arm), None
                occurred, which, rearm, start, stats = aux
                return t, y_event, occurred, which, rearm, start, {k: stats[k] for k in _ENSEMBLE_STATS}, jac
            self._event_jit[key] = jax.jit(jax.vmap(member, in_axes=(*axes, None, None)))
        t0_, t1_ = np.asarray(t0, self.dtype), np.asarray(t1, self.dtype)
        *arrays, stats, jac = jax.device_get(self._event_jit[key](inputs.params, inputs.y0, t0_, t1_))
        t, y, occurred, which, rearm, start = (np.array(v) for v in arrays)
        derivatives = None if jac is None else {k: np.array(v) for k, v in
                                                _sensitivity_fields(*jac, y.shape[1:], members=True).items()}
        for m in np.flatnonzero(bad_starts(bound, start)):
            check_event_start(bound, start[m], t0, member=int(m))
        counts = np.stack([np.asarray(stats[k]) for k in _ENSEMBLE_STATS[:3]], axis=1)
        errors: list[str | None] = [None] * inputs.members
        kinds = np.asarray(stats["failed"])
        alone = (kinds != OK) | ~np.isfinite(t) | ~np.isfinite(y.reshape(inputs.members, -1)).all(1) | rearm
        for m in np.flatnonzero(alone):
            try:  # alone: the single solve's diagnosis and words, or its re-arming
                hit = solve_one(inputs.params if inputs.params_shared else inputs.params[m],
                                inputs.y0 if inputs.y0_shared else inputs.y0[m])
                if not rearm[m]:
                    raise non_finite_error()
                record_member(m, hit, t, y, occurred, which, counts, derivatives)
            except SolveError as err:
                errors[m] = str(err)
        return EventEnsembleSolution.assemble(t, y, occurred, which, counts, errors, derivatives)

    def event_gradient(self, condition, params, t, y):
        """``(∂g/∂t, ∇_y g, ∂g/∂θ)`` of one event condition at ``(t, y)`` (``jax.grad``; not compiled: it serves
        the implicit-function-theorem path that other backends take, which tests compare with this one's)."""
        value = self._event_value(condition)
        gradient = jax.grad(lambda p, t_, y_: value(self.split(p), t_, y_[None]), argnums=(0, 1, 2))
        d_p, d_t, d_y = gradient(jnp.asarray(params), jnp.asarray(t, self.dtype), jnp.asarray(y, self.dtype))
        return float(d_t), np.asarray(d_y), np.asarray(d_p)

    def value_and_grad(self, params, y0, ts, loss):
        batched, y, grid = self._batched_inputs(y0, ts)
        data = cast_arrays(loss.data(), self.dtype)
        kernel = loss.kernel()
        if ts.shape[0] == 1:
            value, (gp, gy) = jax.value_and_grad(lambda p_, y_: kernel(jnp, unbatch_like(y_[None], data), data),
                                                 argnums=(0, 1))(jnp.asarray(params), jnp.asarray(y))
            ys, gp, gy, value = np.asarray(y)[None], np.asarray(gp), np.asarray(gy), float(value)
            forward, probe_grad = {}, np.zeros(4)
        else:
            ys, gp, gy, report = jax.device_get(self._vg_jit(params, y, ts, grid, data, kernel))
            value, forward, probe_grad = float(report[0]), self._forward_report(report[1:6]), report[6:]
        self.raise_failure(probe_grad[1], where="backward (adjoint) solve")
        if not (np.isfinite(value) and np.all(np.isfinite(gp)) and np.all(np.isfinite(gy))):
            raise non_finite_error("loss or its gradient")
        stats_out = Stats(**forward,
                          nfe_backward=backward_count(self.model, probe_grad[0]),
                          backward_steps_accepted=int(round(probe_grad[2])),
                          backward_steps_rejected=int(round(probe_grad[3])))
        return ValueAndGrad(value, gp, gy if batched else gy[0], stats_out, ys if batched else ys[:, 0])

    def loss_cotangent(self, ys, loss):
        return np.asarray(self._cotangent_jit(ys, cast_arrays(loss.data(), self.dtype), loss.kernel()))

    def field_along(self, params, ts, ys):
        return np.asarray(self._field_along_jit(params, ts, ys))

    def make_trainer(self, optimizer, loss_type, *, devices=None):
        """A native training loop (see :class:`pyneuralode.train.Trainer`), data-parallel over ``devices``."""
        from ._train import JaxTrainer
        return JaxTrainer(self, optimizer, loss_type, devices=devices)

    def failure_messages(self) -> tuple[str, ...]:
        """The message of each failure kind of a forward solve (index = kind; ``OK``'s is empty), for errors raised
        inside compiled code (:class:`NativeODE`)."""
        model = self.model
        return tuple("" if kind == OK else str(solve_failure(kind, max_steps=model.control.max_steps,
                                                               solver=model.solver, backend="jax"))
                     for kind in range(max(OK, MAX_STEPS, BLOW_UP, STIFF, FAILED) + 1))

    def native(self, params):
        require_x64_for_native(self.dtype)
        return NativeODE(params=jnp.asarray(params, self.dtype), probe=new_probe(self.dtype), program=self)


def backward_counts(probe_grad) -> dict:
    """The backward counts carried by a probe's gradient (``[nfe, failed, accepted, rejected]``), as JAX
    scalars (jit-able): ``nfe_backward``, ``backward_steps_accepted``, ``backward_steps_rejected`` and the
    failure flag ``backward_max_steps``."""
    rounded = jnp.round(probe_grad).astype(jnp.int32)
    return {"nfe_backward": rounded[0], "backward_steps_accepted": rounded[2],
            "backward_steps_rejected": rounded[3], "backward_max_steps": probe_grad[1] != 0}


class NativeODE(eqx.Module):
    """The JAX-native face of a model: an equinox module ``ode(y0, ts) -> ys``, differentiable with
    ``jax.grad``/``eqx.filter_grad`` (through the model's adjoint) and jit-able.

    - ``params``: the canonical flat parameter vector (``model.native()`` starts from ``model.init(0)``, or from
      ``model.native(params)``); read it with ``np.asarray(ode.params)``, replace it with
      ``ode.with_params(flat)``.
    - ``vector_field(t, y)``: the compiled network, ``dy/dt`` for batched ``y``.
    - ``solve(y0, ts) -> (ys, stats)``: ``stats`` holds the forward counts ``nfe_forward``, ``steps_accepted``,
      ``steps_rejected`` and the failure flags ``max_steps``/``failed`` (a failure kind, 0 when the solve
      succeeded), as JAX scalars — nothing raises, so check the flags (diffrax's ``throw=False``).
    - ``ode(y0, ts)`` raises instead when the solve failed (diffrax's default ``throw=True``, and what the torch
      ``native()`` does): an ``equinox.EquinoxRuntimeError`` carrying the words ``model.solve`` would raise
      (max steps, stiffness, blow-up), from inside your jit too; a failed solve never hands back its ``inf`` rows.
    - ``probe``: a zero array whose gradient counts the backward pass: differentiate with respect to the whole
      module and :func:`backward_counts` of ``grads.probe`` gives ``nfe_backward`` and the backward steps, the
      numbers ``model.value_and_grad`` reports. Keep it out of optimiser updates (``eqx.filter`` on ``params``).

    jit it with ``eqx.filter_jit`` (``eqx.filter_jit(ode)(y0, ts)``) or close over it
    (``jax.jit(lambda y0, ts: ode(y0, ts))``): ``jax.jit(ode)`` hashes the module, which holds arrays, and fails
    with "unhashable type", as for any equinox module.
    """

    params: jax.Array
    probe: jax.Array
    program: JaxProgram = eqx.field(static=True)

    def with_params(self, params) -> NativeODE:
        """A copy with the canonical flat vector ``params``."""
        return eqx.tree_at(lambda n: n.params, self, jnp.asarray(params, self.params.dtype))

    def vector_field(self, t, y):
        """``dy/dt`` at ``(t, y)`` with batched ``y``."""
        return self.program.field(self.params, t, y)

    def solve(self, y0, ts):
        """``(ys, stats)`` from batched ``y0``: ``ys`` of shape ``(len(ts), *y0.shape)``, forward ``stats``."""
        model = self.program.model
        if model.solver.adaptive:
            grid = jnp.zeros(0, ts.dtype)
        else:
            try:
                grid = jnp.asarray(self.program.grid(np.asarray(ts)))
            except jax.errors.TracerArrayConversionError:
                from ..._errors import NotSupportedError
                raise NotSupportedError(f"native() of a fixed-step model ({model.solver.name}()) builds its step grid "
                                        "from concrete save times: pass ts as a constant (close over it, or mark it "
                                        "static in jax.jit), or use an adaptive solver.") from None
        return self.program.predict_fn(self.params, y0, ts, grid, self.probe)

    def __call__(self, y0, ts):
        """Solve from batched ``y0`` and return ``ys`` of shape ``(len(ts), *y0.shape)``; a failed solve raises
        (``eqx.branched_error_if``) with the words of ``model.solve``'s error."""
        ys, stats = self.solve(y0, ts)
        return eqx.branched_error_if(ys, stats["failed"] != OK, stats["failed"], self.program.failure_messages())
