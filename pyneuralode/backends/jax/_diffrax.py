"""Translate pyneuralode's solver and step-control objects into diffrax's, and count evaluations exactly.

Forward NFE follow from diffrax's step statistics, because an explicit Runge–Kutta step costs a fixed number of
evaluations (diffrax#315; checked against an independent callback counter in tests/test_nfe.py):

    nfe = [2 if dt0 is picked automatically]   # diffrax pid.py _select_initial_step: f(t0,y0), f(t0+h0,y1)
        + [1 if the method is FSAL]            # the solver's init evaluates f(t0, y0) once
        + steps * (stages - [1 if FSAL])       # accepted and rejected steps alike

Implicit methods (Kvaerno5) evaluate the field a data-dependent number of times inside Newton iterations, so
they are counted by a host callback instead (slower; implicit solves are rare in training loops).
"""

from __future__ import annotations

import diffrax
import jax.numpy as jnp
import numpy as np

from ..._control import StepControl, fixed_step_grid
from ..._errors import NotSupportedError
from ..._solvers import AbstractSolver

_SOLVERS = {
    "Euler": diffrax.Euler,
    "Midpoint": diffrax.Midpoint,
    "Heun": diffrax.Heun,
    "RK4": None,  # built below: diffrax has no classic RK4 class; its tableau lives here
    "Bosh3": diffrax.Bosh3,
    "Dopri5": diffrax.Dopri5,
    "Tsit5": diffrax.Tsit5,
    "Dopri8": diffrax.Dopri8,
    "Kvaerno5": diffrax.Kvaerno5,
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


def counts_by_formula(solver: AbstractSolver) -> bool:
    """Whether forward NFE follow exactly from step statistics (explicit methods)."""
    return not solver.stiff


def nfe_from_steps(solver: AbstractSolver, num_steps, *, auto_dt0: bool):
    """Exact evaluations of an explicit method over ``num_steps`` attempted steps (see the module docstring)."""
    per_step = solver.stages - (1 if solver.fsal else 0)
    return 2 * int(auto_dt0) + int(solver.fsal) + num_steps * per_step


def step_setup(solver: AbstractSolver, control: StepControl, ts_np, *, norm=None):
    """``(stepsize_controller, dt0, auto_dt0)`` for diffrax, from a StepControl and the (numpy) save times.

    Adaptive methods: an integral controller (PID with pcoeff=dcoeff=0, icoeff=1) with the StepControl's
    safety and factor limits — the controller torchdiffeq and OrdinaryDiffEq's default also use.
    Fixed-step methods: the shared grid of :func:`pyneuralode._control.fixed_step_grid` through ``StepTo``.
    """
    if solver.adaptive:
        kwargs = {} if norm is None else {"norm": norm}
        controller = diffrax.PIDController(
            rtol=control.rtol, atol=control.atol, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, safety=control.safety,
            factormin=control.factormin, factormax=control.factormax, **kwargs)
        direction = 1.0 if len(ts_np) < 2 or ts_np[-1] >= ts_np[0] else -1.0
        dt0 = None if control.dt0 is None else direction * control.dt0
        return controller, dt0, control.dt0 is None
    return None, None, False


def fixed_grid(control: StepControl, ts_np):
    """The step grid of a fixed-step solve (numpy), passed into the compiled solve as an array argument."""
    return fixed_step_grid(ts_np, control.dt, control.max_steps).astype(ts_np.dtype)
