"""Forward solves against analytic solutions, on every backend and every solver it offers."""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends._registry import REGISTRY

from helpers import PROBLEMS, model, rel_err

ALL_SOLVERS = ("Euler", "Midpoint", "Heun", "RK4", "Bosh3", "Dopri5", "Tsit5", "Dopri8", "Kvaerno5",
               "Vern7", "Rodas5P", "KenCarp4", "QNDF", "FBDF")
FIXED_DT = 1e-3
# Relative-error bounds: adaptive solvers at rtol=1e-8/atol=1e-10 (float64); fixed-step solvers at dt=1e-3,
# bounded by their order (Euler's global error is O(dt), RK4's O(dt^4)).
ADAPTIVE_TOL = {"float64": (1e-8, 1e-10, 2e-6), "float32": (1e-5, 1e-6, 2e-3)}
FIXED_BOUND = {1: 5e-3, 2: 5e-6, 4: 1e-9}


def _solver_or_skip(backend, name):
    if name not in REGISTRY[backend].solvers:
        pytest.skip(f"{name} is not offered by the {backend} backend")
    return pn._solvers.SOLVERS[name]()


def _control(solver, dtype):
    if not solver.adaptive:
        return pn.StepControl(dt=FIXED_DT, max_steps=100_000)
    rtol, atol, _ = ADAPTIVE_TOL[dtype]
    return pn.StepControl(rtol=rtol, atol=atol, max_steps=100_000)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("solver_name", ALL_SOLVERS)
def test_analytic_float64(backend, solver_name, problem):
    solver = _solver_or_skip(backend, solver_name)
    spec, params, y0, ts, exact = PROBLEMS[problem]()
    m = model(spec, backend=backend, solver=solver, control=_control(solver, "float64"))
    sol = m.solve(params, y0, ts)
    assert sol.ys.shape == (len(ts), *y0.shape)
    bound = ADAPTIVE_TOL["float64"][2] if solver.adaptive else FIXED_BOUND[solver.order]
    if problem == "constant":  # every method integrates a constant field exactly
        bound = 1e-12
    assert rel_err(sol.ys, exact(ts)) < bound
    assert sol.stats.nfe_forward > 0 and sol.stats.steps_accepted > 0


@pytest.mark.parametrize("solver_name", ["Dopri5", "Tsit5", "Bosh3", "RK4"])
def test_analytic_float32(backend, solver_name):
    solver = _solver_or_skip(backend, solver_name)
    spec, params, y0, ts, exact = PROBLEMS["linear"]()
    m = model(spec, backend=backend, solver=solver, control=_control(solver, "float32"), dtype="float32")
    sol = m.solve(params, y0, ts)
    assert sol.ys.dtype == np.float32
    assert rel_err(sol.ys, exact(ts)) < 2e-3


@pytest.mark.parametrize("solver_name", ["Dopri5", "RK4"])
def test_reverse_time_matches_exact(backend, solver_name):
    solver = _solver_or_skip(backend, solver_name)
    spec, params, _, ts, exact = PROBLEMS["linear"]()
    ts_rev = ts[::-1].copy()
    y_end = exact(ts)[-1]
    m = model(spec, backend=backend, solver=solver, control=_control(solver, "float64"))
    sol = m.solve(params, y_end, ts_rev)
    assert rel_err(sol.ys, exact(ts)[::-1]) < 1e-5


def test_batch_equals_single_rows(backend):
    """A batch of identical rows equals the single-row solve (same steps, same numbers)."""
    spec, params, y0, ts, _ = PROBLEMS["linear"]()
    m = model(spec, backend=backend, control=_control(pn.Dopri5(), "float64"))
    single = m.solve(params, y0, ts)
    batch = m.solve(params, np.stack([y0, y0, y0]), ts)
    assert batch.ys.shape == (len(ts), 3, 10)
    for i in range(3):
        np.testing.assert_allclose(batch.ys[:, i], single.ys, rtol=1e-13, atol=1e-13)
    assert batch.stats.nfe_forward == single.stats.nfe_forward


def test_batch_rows_are_independent_with_fixed_steps(backend):
    """With fixed steps every row of a batch is solved exactly as on its own."""
    spec, params, _, ts, _ = PROBLEMS["cubic"]()
    m = model(spec, backend=backend, solver=pn.RK4(), control=pn.StepControl(dt=FIXED_DT, max_steps=100_000))
    y0s = np.array([[0.5], [1.0], [2.0]])
    batch = m.solve(params, y0s, ts)
    for i in range(3):
        np.testing.assert_allclose(batch.ys[:, i], m.solve(params, y0s[i], ts).ys, rtol=1e-13, atol=1e-14)


def test_single_time_returns_y0(backend):
    spec, params, y0, _, _ = PROBLEMS["linear"]()
    m = model(spec, backend=backend, control=_control(pn.Dopri5(), "float64"))
    sol = m.solve(params, y0, np.array([2.0]))
    assert sol.ys.shape == (1, 10)
    np.testing.assert_allclose(sol.ys[0], y0, rtol=0, atol=1e-12)


# OrdinaryDiffEq's Euler/Midpoint/Heun/RK4 are FSAL: `initialize!` evaluates f(t0, y0) once before the first
# step (lib/OrdinaryDiffEqLowOrderRK/src/fixed_timestep_perform_step.jl, `increment_nf!(..., 1)`), and each step
# then costs `stages` evaluations, the last one reused as the next step's first. diffrax and torchdiffeq spend
# exactly `stages` per step. pyneuralode reports the evaluations each backend really makes.
FIXED_STEP_INITIAL_NFE = {"julia": 1}


def test_fixed_step_nfe_is_stages_times_steps(backend):
    """Fixed-step solvers take ceil(|Δt|/dt) steps per save interval, each costing `stages` evaluations (plus
    Julia's one initial FSAL evaluation)."""
    spec, params, y0, ts, _ = PROBLEMS["exp"]()
    for solver in (pn.Euler(), pn.RK4()):
        m = model(spec, backend=backend, solver=solver, control=pn.StepControl(dt=0.1))
        steps = sum(int(np.ceil(abs(b - a) / 0.1 - 1e-9)) for a, b in zip(ts[:-1], ts[1:]))
        sol = m.solve(params, y0, ts)
        assert sol.stats.steps_accepted == steps
        assert sol.stats.nfe_forward == solver.stages * steps + FIXED_STEP_INITIAL_NFE.get(backend, 0)



@pytest.mark.parametrize("ts, expected", [
    # [0, 1] at dt=0.4: three equal steps of 1/3 (diffrax/torchdiffeq would take 0.4, 0.4, 0.2: 1.4**2 * 1.2).
    (np.array([0.0, 1.0]), [1.0, (4 / 3) ** 3]),
    # Each save interval on its own: 0.5 -> two steps of 0.25, then 0.8 -> two steps of 0.4.
    (np.array([0.0, 0.5, 1.3]), [1.0, 1.25**2, 1.25**2 * 1.4**2]),
    # Reverse time, y' = y: each of the three steps multiplies by 1 - 1/3.
    (np.array([1.0, 0.0]), [1.0, (2 / 3) ** 3]),
])
def test_fixed_step_grid_splits_each_interval_into_equal_steps(backend, ts, expected):
    """StepControl's documented convention, pinned on every backend: Euler on y' = y with dt = 0.4."""
    m = model(pn.Linear(1, 1, bias=False), backend=backend, solver=pn.Euler(), control=pn.StepControl(dt=0.4))
    sol = m.solve(np.array([1.0]), np.array([1.0]), ts)
    np.testing.assert_allclose(sol.ys[:, 0], expected, rtol=1e-14, atol=0)
    assert sol.stats.steps_accepted == sum(int(np.ceil(abs(b - a) / 0.4 - 1e-9)) for a, b in zip(ts[:-1], ts[1:]))


def test_dtmax_bounds_every_step_on_every_backend(backend):
    """``StepControl(dtmax=0.25)`` on ``y' = -y`` over [0, 10]: an unbounded solve at rtol 1e-6 takes fewer than
    40 steps; bounded, no step is longer than 0.25, so at least 40 are accepted. Every backend clips the first step
    and each next one to dtmax (diffrax ``PIDController(dtmax)``, torchdiffeq ``max_step``, OrdinaryDiffEq
    ``dtmax``), so the counts equal JAX's and stay within tolerance of the exact solution."""
    ts = np.linspace(0.0, 10.0, 3)
    free = model(pn.Linear(1, 1, bias=False), backend=backend, control=pn.StepControl(rtol=1e-6, atol=1e-9))
    bounded = model(pn.Linear(1, 1, bias=False), backend=backend,
                    control=pn.StepControl(rtol=1e-6, atol=1e-9, dtmax=0.25))
    a = free.solve(np.array([-1.0]), np.array([1.0]), ts)
    b = bounded.solve(np.array([-1.0]), np.array([1.0]), ts)
    assert a.stats.steps_accepted < 40 <= b.stats.steps_accepted
    np.testing.assert_allclose(b.ys[:, 0], np.exp(-ts), rtol=1e-5)
    reference = model(pn.Linear(1, 1, bias=False), backend="jax",
                      control=pn.StepControl(rtol=1e-6, atol=1e-9, dtmax=0.25))
    assert b.stats == reference.solve(np.array([-1.0]), np.array([1.0]), ts).stats


def test_dtmax_is_checked():
    with pytest.raises(pn.SpecError, match="dtmax must be a finite number > 0"):
        pn.StepControl(dtmax=0.0)
    with pytest.raises(pn.SpecError, match="give one or the other"):
        pn.StepControl(dt=0.1, dtmax=0.5)
