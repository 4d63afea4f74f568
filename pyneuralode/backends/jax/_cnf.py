"""A :class:`pyneuralode.CNF` compiled for JAX: the augmented dynamics solved by the JAX backend's own machinery.

The augmented state is one array ``(N, D + 1)`` — ``[z, l]`` with ``dl/dt = tr(∂f/∂z)`` — or ``(N, D + 3)`` with
the RNODE integrals ``∫||f||²`` and ``∫||∂f/∂z||_F²``. It is solved by :func:`._diffrax.integrate` (one
``diffeqsolve`` with pyneuralode's step rules and exact forward NFE); gradients use the model's adjoint exactly as
:class:`._program.JaxProgram` does: the VJP probe of :mod:`._counting` for Direct/Checkpoint adjoints, the counted
:func:`._backsolve.make_backsolve` for BacksolveAdjoint.

- Exact trace: one ``jax.vjp`` of the field at ``z`` and ``D`` reverse passes for the rows ``e_iᵀ (∂f/∂z)``
  (samples are independent rows, so one pass per state dimension serves the whole batch); ``tr = Σ_i`` of their
  ``i``-th entries. Unrolled over ``i``, not vmapped: see :func:`augmented_dynamics` for the measurements.
- Hutchinson: one ``jax.vjp``: ``εᵀ (∂f/∂z)`` then its dot with ``ε``; ``ε`` is an argument, fixed for the solve.
"""

from __future__ import annotations

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..._errors import SolveError, max_steps_error, non_finite_error
from ..._flow_results import Density, FlowValueAndGrad
from ..._solution import Stats, counted
from ._backsolve import make_backsolve
from ._counting import new_probe, vjp_counted
from ._diffrax import fixed_grid, integrate, make_solver
from ._field import compile_split
from ._x64 import x64_scoped


def augmented_dynamics(field, dim: int, exact: bool, regularised: bool):
    """``aug((params, eps), t, state) -> d state/dt`` for the state ``[z, l (, kinetic, jacobian)]`` of shape
    ``(N, dim + 1 (+ 2))``; ``eps`` is Hutchinson's noise ``(N, dim)`` (ignored for the exact trace).

    ``eps`` travels as an argument, not a closure: the counting ``custom_vjp`` and diffrax's loops cannot close
    over traced values."""

    def aug(args, t, state):
        params, eps = args
        z = state[:, :dim]

        def f(y):
            return field(params, t, y)

        if exact:
            # Rows e_iᵀ ∂f/∂z by D reverse-mode passes over the whole batch (samples are independent rows), as
            # torchdiffeq's examples/cnf.py computes the trace; tr = Σ_i (e_iᵀ ∂f/∂z)_i. A Python loop, not a
            # vmap over the basis: on XLA CPU the vmapped (batched) form makes the whole training step 2-3x
            # slower (moons x512, 2-64-64-2, one interleaved run each: 23 vs 45 ms/step on a quiet
            # machine, 42 vs 115 under load; Hutchinson's one VJP 16 / 32 ms; per-sample vmap(jacfwd/jacrev) as
            # in diffrax's CNF example 230 ms under load). See docs/cnf.md for the alternatives measured.
            value, vjp = jax.vjp(f, z)
            rows = [vjp(jnp.zeros_like(z).at[:, i].set(1))[0] for i in range(dim)]
            trace = sum(row[:, i] for i, row in enumerate(rows))
            jac_sq = sum(jnp.sum(row * row, axis=-1) for row in rows)
        else:
            value, vjp = jax.vjp(f, z)
            e_jac = vjp(eps)[0]  # εᵀ ∂f/∂z
            trace = jnp.sum(e_jac * eps, axis=-1)
            jac_sq = jnp.sum(e_jac * e_jac, axis=-1)
        parts = [value, trace[:, None]]
        if regularised:
            parts += [jnp.sum(value * value, axis=-1)[:, None], jac_sq[:, None]]
        return jnp.concatenate(parts, axis=-1)

    return aug


def base_log_prob(z):
    """``log N(z; 0, I)`` row by row."""
    return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


@x64_scoped
class JaxCNFProgram:
    """The JAX program of one :class:`pyneuralode.CNF`; pure functions :meth:`density_fn` and
    :meth:`value_and_grad_fn` are what the numpy API and the native training step jit."""

    def __init__(self, cnf):
        if cnf.device == "cuda" and not any(d.platform == "gpu" for d in jax.devices()):
            from ..._errors import BackendUnavailable
            raise BackendUnavailable("device='cuda' was asked for but JAX sees no GPU: install a CUDA build "
                                     "with `pip install -U \"jax[cuda12]\"`, or use device=None.")
        self.cnf = cnf
        self.dtype = jnp.dtype(cnf.dtype)
        self.dim = cnf.dim
        # Split the flat parameters into tensors once per solve, outside the solver loop (see compile_split).
        self.split, self.apply = compile_split(cnf.field)
        self.solver = make_solver(cnf.solver)
        times = np.array([cnf.t1, cnf.t0], dtype=cnf.dtype)  # data -> base
        self._times = times
        self._grid = None if cnf.solver.adaptive else fixed_grid(cnf.control, times)
        self._density_jit = jax.jit(self.density_fn)
        self._vg_jit = jax.jit(self.value_and_grad_fn, static_argnums=(4,))

    # ------------------------------------------------------------------ pure functions
    def _solve(self, aug_field, args, state0, adjoint, saveat):
        t1, t0 = self._times
        grid = None if self._grid is None else jnp.asarray(self._grid)
        return integrate(aug_field, args, state0, t1, t0, model_solver=self.cnf.solver, diffrax_solver=self.solver,
                         control=self.cnf.control, saveat=saveat, grid=grid, adjoint=adjoint)

    def _initial_state(self, x, regularised):
        extra = 3 if regularised else 1
        return jnp.concatenate([x, jnp.zeros((x.shape[0], extra), x.dtype)], axis=-1)

    def density_fn(self, params, x, eps):
        """``(state(t0), stats)``: the augmented state at ``t0`` (``(N, D + 1)``) — no gradients."""
        aug = augmented_dynamics(self.apply, self.dim, eps is None, False)
        sol, stats = self._solve(lambda t, y, a: aug(a, t, y), (self.split(params), eps),
                                 self._initial_state(x, False),
                                 diffrax.RecursiveCheckpointAdjoint(), diffrax.SaveAt(t1=True))
        return sol.ys[-1], stats

    def _predict(self, params, x, eps, probe, regularised):
        """The final augmented state, differentiable with the flow's adjoint; ``d/d probe`` counts backward NFE."""
        aug = augmented_dynamics(self.apply, self.dim, eps is None, regularised)
        state0 = self._initial_state(x, regularised)
        adjoint = self.cnf.adjoint
        if adjoint.name == "BacksolveAdjoint":
            def flow(p, t, y):
                return aug((self.split(p), eps), t, y)

            def forward_solve(p, y0, ts, grid):
                sol, stats = self._solve(lambda t, y, a: flow(a, t, y), p, y0,
                                         diffrax.RecursiveCheckpointAdjoint(), diffrax.SaveAt(ts=ts))
                return sol.ys, stats
            backsolve = make_backsolve(self.cnf, flow, self.solver, forward_solve)
            ys, stats = backsolve(params, state0, jnp.asarray(self._times), jnp.zeros(0, self.dtype), probe)
            return ys[-1], stats
        counted = vjp_counted(aug)
        diffrax_adjoint = (diffrax.RecursiveCheckpointAdjoint(checkpoints=adjoint.checkpoints)
                           if adjoint.name == "CheckpointAdjoint" else diffrax.DirectAdjoint())
        sol, stats = self._solve(lambda t, y, a: counted(a[0], t, y, a[1]), ((self.split(params), eps), probe),
                                 state0,
                                 diffrax_adjoint, diffrax.SaveAt(t1=True))
        return sol.ys[-1], stats

    def value_and_grad_fn(self, params, x, eps, weights, regularised: bool):
        """``(loss, (grad_params, grad_x, probe_grad), (nll, kinetic, jacobian, stats))`` — pure and jit-able.

        ``weights = [kinetic_weight, jacobian_weight]``; ``regularised`` (static) adds their integrals to the
        state. The regularisers are integrated from ``t1`` down to ``t0``, hence the sign flip.
        """
        dim = self.dim

        def loss_fn(params, x, probe):
            state, stats = self._predict(params, x, eps, probe, regularised)
            nll = -jnp.mean(base_log_prob(state[:, :dim]) + state[:, dim])
            if regularised:
                kinetic, jacobian = -jnp.mean(state[:, dim + 1]), -jnp.mean(state[:, dim + 2])
            else:
                kinetic = jacobian = jnp.zeros((), state.dtype)
            loss = nll + weights[0] * kinetic + weights[1] * jacobian
            return loss, (nll, kinetic, jacobian, stats)

        probe = new_probe(self.dtype)
        (loss, aux), grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(params, x, probe)
        return loss, grads, aux

    # ------------------------------------------------------------------ numpy API
    def forward_stats(self, stats) -> dict:
        """The forward counts of a solve's stats (host values), raising the shared errors on failure."""
        if stats["max_steps"]:
            raise max_steps_error(self.cnf.control.max_steps)
        if stats["failed"]:
            raise SolveError("The CNF solve failed (diffrax reported an unsuccessful result): tighten rtol/atol, "
                             "lower the learning rate, or check the inputs.")
        return {"nfe_forward": counted(stats["nfe_forward"]), "steps_accepted": int(stats["steps_accepted"]),
                "steps_rejected": int(stats["steps_rejected"])}

    def backward_stats(self, probe_grad) -> dict:
        """The backward counts carried by the probe's gradient, raising the shared error on failure."""
        probe_grad = np.asarray(probe_grad)
        if probe_grad[1]:
            raise max_steps_error(self.cnf.control.max_steps, where="backward (adjoint) solve")
        return {"nfe_backward": round(float(probe_grad[0])), "backward_steps_accepted": round(float(probe_grad[2])),
                "backward_steps_rejected": round(float(probe_grad[3]))}

    def _eps(self, eps):
        return None if eps is None else jnp.asarray(eps)

    def density(self, params, x, eps) -> Density:
        state, stats = jax.block_until_ready(self._density_jit(jnp.asarray(params), jnp.asarray(x), self._eps(eps)))
        forward = self.forward_stats(jax.device_get(stats))
        state = np.asarray(state)
        if not np.all(np.isfinite(state)):
            raise non_finite_error()
        z, delta = state[:, :self.dim], state[:, self.dim]
        logp = np.asarray(base_log_prob(z)) + delta
        return Density(logp, z, delta, Stats(**forward))

    def value_and_grad(self, params, x, eps, loss) -> FlowValueAndGrad:
        weights = jnp.asarray([loss.kinetic, loss.jacobian], self.dtype)
        value, (gp, gx, probe_grad), (nll, kin, jac, stats) = jax.block_until_ready(self._vg_jit(
            jnp.asarray(params), jnp.asarray(x), self._eps(eps), weights, loss.regularised))
        forward = self.forward_stats(jax.device_get(stats))
        backward = self.backward_stats(probe_grad)
        gp, gx = np.asarray(gp), np.asarray(gx)
        if not (np.isfinite(float(value)) and np.all(np.isfinite(gp)) and np.all(np.isfinite(gx))):
            raise non_finite_error("loss or its gradient")
        return FlowValueAndGrad(float(value), gp, gx, Stats(**forward, **backward), float(nll), float(kin),
                                float(jac))
