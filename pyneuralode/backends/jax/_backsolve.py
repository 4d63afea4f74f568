"""The paper's O(1)-memory adjoint (Chen et al. 2018, Algorithm 1), as a ``custom_vjp`` around diffrax solves.

diffrax has a ``BacksolveAdjoint`` too, but it does not report how many evaluations its backward solve took, and
pyneuralode reports exact backward NFE on every backend. So the backward pass here is its own sequence of ``diffeqsolve`` calls
whose step statistics give the count, returned through the probe's cotangent (see ``_counting``).

It mirrors torchdiffeq's ``odeint_adjoint`` (``_impl/adjoint.py``) step for step, so the two backends take the
same backward steps:

- the augmented state ``(y, a, g)`` is integrated from ``t_i`` back to ``t_{i-1}`` for each save interval, with
  ``dy/dt = f``, ``da/dt = -aᵀ ∂f/∂y``, ``dg/dt = -aᵀ ∂f/∂θ`` (one VJP per evaluation);
- after each interval ``y`` is reset to the forward solution and ``a`` gains the loss cotangent at ``t_{i-1}``;
- the error norm is torchdiffeq's default adjoint norm ``max(rms(y), rms(a), max_k rms(g_k))`` over the
  parameter tensors ``k``; with ``seminorm=True`` the parameter part is dropped (Kidger, Chen & Lyons 2021).
"""

from __future__ import annotations

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..._params import param_layout
from ._diffrax import integrate


def adjoint_norm(spec, seminorm: bool):
    """torchdiffeq's default adjoint norm (or the seminorm) on the scaled-error pytree ``(y, a, g)``."""
    layout = param_layout(spec)
    segment_ids = np.concatenate([np.full(s.size, k) for k, s in enumerate(layout)]) if layout else np.zeros(0, int)
    sizes = np.array([s.size for s in layout], dtype=np.float64)

    def rms(x):
        return jnp.sqrt(jnp.mean(jnp.square(x)))

    def norm(err):
        y_err, a_err, g_err = err
        out = jnp.maximum(rms(y_err), rms(a_err))
        if seminorm or not len(layout):
            return out
        per_tensor = jax.ops.segment_sum(jnp.square(g_err), segment_ids, num_segments=len(layout))
        return jnp.maximum(out, jnp.max(jnp.sqrt(per_tensor / sizes.astype(g_err.dtype))))

    return norm


def make_backsolve(model, field, solver, forward_solve):
    """``backsolve(params, y0, ts, grid, probe) -> (ys, fwd_stats)`` with the adjoint-method VJP.

    ``forward_solve(params, y0, ts, grid)`` is the plain (non-differentiated) forward solve returning
    ``(ys, stats)``; ``field(params, t, y)`` the compiled vector field.
    """
    adjoint, control = model.adjoint, model.control
    rtol = adjoint.rtol if adjoint.rtol is not None else control.rtol
    atol = adjoint.atol if adjoint.atol is not None else control.smallest_atol  # one for the augmented state
    back_control = dataclasses.replace(control, rtol=rtol, atol=atol)
    norm = adjoint_norm(model.field, adjoint.seminorm)

    def augmented(t, state, params):
        y, a, _ = state
        f, vjp = jax.vjp(lambda p, z: field(p, t, z), params, y)
        g_params, g_y = vjp(-a)
        return f, g_y, g_params


    def segment_solve(t_from, t_to, state, params):
        dt = None
        if not model.solver.adaptive:  # the forward grid's steps within this interval, walked backwards
            dt = (t_to - t_from) / jnp.maximum(1, jnp.ceil(jnp.abs(t_to - t_from) / control.dt - 1e-9))
        sol, stats = integrate(augmented, params, state, t_from, t_to, model_solver=model.solver,
                               diffrax_solver=solver, control=back_control, saveat=diffrax.SaveAt(t1=True),
                               norm=norm, dt=dt)
        final = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
        counts = (stats[k] for k in ("nfe_forward", "failed", "steps_accepted", "steps_rejected"))
        return (final, *(jnp.asarray(c).astype(jnp.int32) for c in counts))

    def skipped(t_from, t_to, state, params):  # after a failed interval: fail fast, solve nothing more
        zero = jnp.zeros((), jnp.int32)
        return state, zero, zero, zero, zero

    @jax.custom_vjp
    def backsolve(params, y0, ts, grid, probe):
        return forward_solve(params, y0, ts, grid)

    def fwd(params, y0, ts, grid, probe):
        ys, stats = forward_solve(params, y0, ts, grid)
        return (ys, stats), (params, ys, ts, grid, probe)

    def bwd(res, cotangents):
        params, ys, ts, grid, probe = res
        ct_ys = cotangents[0]
        n = ts.shape[0]

        def body(carry, i):
            a, g, nfe, failed, acc, rej = carry
            state = (ys[i], a, g)
            (_, a, g), seg_nfe, seg_failed, seg_acc, seg_rej = jax.lax.cond(
                failed == 0, segment_solve, skipped, ts[i], ts[i - 1], state, params)
            a = a + ct_ys[i - 1]
            failed = jnp.where(failed == 0, seg_failed, failed).astype(jnp.int32)  # the first failure's kind
            return (a, g, nfe + seg_nfe, failed, acc + seg_acc, rej + seg_rej), None

        zero = jnp.zeros((), jnp.int32)
        init = (ct_ys[-1], jnp.zeros_like(params), zero, zero, zero, zero)
        (a, g, nfe, failed, acc, rej), _ = jax.lax.scan(body, init, jnp.arange(n - 1, 0, -1))
        probe_ct = jnp.stack([nfe, failed, acc, rej]).astype(probe.dtype)
        return g, a, jnp.zeros_like(ts), jnp.zeros_like(grid), probe_ct

    backsolve.defvjp(fwd, bwd)
    return backsolve
