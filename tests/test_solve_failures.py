"""A failing solve: one classification, the same type and words on every backend (pyneuralode._stepwatch).

- a finite-time blow-up and an overflowing ``y' = 1000 y`` are ``NonFiniteError`` (never the max-steps advice);
- an explicit solver on a stiff problem stops early with a ``MaxStepsError`` naming the stiff solvers — of the
  backend in use, or the backends that have them; none when a stiff solver is already in use;
- ``BacksolveAdjoint`` on a stiff problem fails fast, telling the user to pick another adjoint;
- the stiffness hint is derived from the backend registry.

The stiff problem is ``y' = A y`` with ``A = diag(-1, -1e4)``: Dopri5's stability limit holds its steps near
3.3e-4, so ``[0, 100]`` needs ~3e5 steps.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode import _errors
from pyneuralode.backends import _registry

from helpers import model

STIFF_A = np.array([-1.0, 0.0, 0.0, -1e4])
LINEAR2 = pn.Linear(2, 2, bias=False)
Y2 = np.array([1.0, 1.0])
TOL = dict(rtol=1e-6, atol=1e-8)

BLOW_UP = ("The forward solve blew up: the state became NaN or infinite, or grew until the step size underflowed "
           "(a finite-time singularity), so raising max_steps cannot help: lower the learning rate, tighten "
           "rtol/atol, use float64, shorten the time span, or check the inputs.")
STIFF_HINT = {
    "jax": "try a stiff solver such as pn.Kvaerno5()",
    "julia": "try a stiff solver such as pn.Kvaerno5()",
    "torch": "try a stiff solver such as pn.Kvaerno5() on backend 'jax' or 'julia' (backend 'torch' has none)",
}


def test_finite_time_blow_up_is_non_finite(backend):
    """dy/dt = y**3 from y0 = 10 blows up at t = 0.005 (was MaxStepsError on jax, SolveError on torch)."""
    m = model(pn.Sequential(pn.Activation("cube"), pn.Linear(1, 1, bias=False)), backend=backend,
              control=pn.StepControl(**TOL))
    with pytest.raises(pn.NonFiniteError) as info:
        m.solve(np.array([1.0]), np.array([10.0]), np.array([0.0, 1.0]))
    assert str(info.value) == BLOW_UP


def test_flat_start_on_a_long_span_is_not_a_blow_up(backend):
    """A field that vanishes at t0 (a zero-initialised output layer) in float32 over [0, 100]: Hairer's rule
    proposes a first step of 1e-6, below the underflow threshold eps * 100 = 1.2e-5, which read as a blow-up on
    every backend. The first step is lifted to 100x the threshold; then the steps grow tenfold to the end."""
    m = model(pn.Linear(1, 1, bias=False), backend=backend, dtype="float32", control=pn.StepControl(**TOL))
    sol = m.solve(np.array([0.0]), np.array([1.0]), np.array([0.0, 100.0]))
    np.testing.assert_array_equal(sol.ys[-1], [1.0])
    # 1.19e-3, then x10 per step (factormax; Julia's qmax_first_step is set to it too) until the sixth step is
    # clipped to land on t = 100
    assert (sol.stats.steps_accepted, sol.stats.steps_rejected) == (6, 0)


def test_overflow_is_non_finite(backend):
    """y' = 1000 y overflows float64 at t ~ 0.71 (was MaxStepsError on jax, NonFiniteError on torch)."""
    m = model(pn.Linear(1, 1, bias=False), backend=backend, control=pn.StepControl(**TOL))
    with pytest.raises(pn.NonFiniteError) as info:
        m.solve(np.array([1000.0]), np.array([1.0]), np.array([0.0, 1.0]))
    assert str(info.value) == BLOW_UP


def test_stiff_problem_stops_early_with_stiff_advice(backend):
    """With max_steps=100000 the explicit solver stops after ~200 steps instead of spending 100000
    (torch took 404 s on the issue's problem; this test would run for minutes before the fix)."""
    m = model(LINEAR2, backend=backend, control=pn.StepControl(**TOL, max_steps=100_000))
    with pytest.raises(pn.MaxStepsError) as info:
        m.solve(STIFF_A, Y2, np.array([0.0, 100.0]))
    assert str(info.value) == (
        "The forward solve stopped early: for 200 consecutive steps the step size was so small that the rest of "
        "the interval would need more than 2 times the steps left of max_steps=100000, while the state stayed "
        "bounded — the signature of a stiff "
        f"problem, which explicit solvers cross only in tiny steps, or of a span too long for max_steps: "
        f"{STIFF_HINT[backend]}, increase max_steps in "
        "pn.StepControl(max_steps=...), or loosen rtol/atol.")


@pn.dynamics(state=2, params={"g": 9.81, "c": 0.1, "force": 0.5, "omega": 1.3})
def forced_pendulum(t, u, p):
    return np.stack([u[1], -p.g * np.sin(u[0]) - p.c * u[1] + p.force * np.sin(p.omega * t)])


def test_a_long_non_stiff_solve_is_not_stopped_or_called_only_stiff(backend):
    """Two non-stiff solves near their step budget (new users' reports). A forced pendulum takes 3961 steps of
    Bosh3 at rtol = atol = 1e-9 within max_steps=4096; its step size varies with the phase, and near the end of the
    budget "the rest of the interval needs more steps than are left, at this step" held for 200 steps in a row, so
    the solve was stopped as stiff on every backend. A step is now starved only when the rest needs more than twice
    the steps left (pyneuralode._stepwatch.STARVATION). An oscillator that needs 4457 steps is still stopped early
    (it cannot finish), but no longer told only that it is stiff: the span may be too long for max_steps."""
    m = model(forced_pendulum, backend=backend, solver=pn.Bosh3(), control=pn.StepControl(rtol=1e-9, atol=1e-9))
    sol = m.solve(m.init(0), np.array([1.0, 0.0]), np.linspace(0.0, 5.0, 11))
    assert (sol.stats.steps_accepted, sol.stats.steps_rejected) == (3953, 8)
    oscillator = model(LINEAR2, backend=backend, solver=pn.Bosh3(), control=pn.StepControl(rtol=1e-8, atol=1e-8))
    with pytest.raises(pn.MaxStepsError) as info:
        oscillator.solve(np.array([0.0, 1.0, -1.0, 0.0]), Y2 * [1.0, 0.0], np.array([0.0, 40.0]))
    assert "or of a span too long for max_steps" in str(info.value)
    assert "increase max_steps in pn.StepControl(max_steps=...)" in str(info.value)


def test_max_steps_names_stiff_solvers_where_they_are(backend):
    m = model(LINEAR2, backend=backend, control=pn.StepControl(**TOL, max_steps=50))
    with pytest.raises(pn.MaxStepsError) as info:
        m.solve(STIFF_A, Y2, np.array([0.0, 100.0]))
    assert str(info.value) == (
        "The forward solve reached max_steps=50 before the end of the interval: increase max_steps in "
        f"pn.StepControl(max_steps=...), loosen rtol/atol, or {STIFF_HINT[backend]}.")


STIFF_BACKENDS = [name for name, e in _registry.REGISTRY.items() if "Kvaerno5" in e.solvers]


@pytest.mark.parametrize("name", STIFF_BACKENDS)
def test_no_stiff_hint_when_a_stiff_solver_is_in_use(name):
    from helpers import unavailable_reason

    if (reason := unavailable_reason(name)) is not None:
        pytest.skip(reason)
    m = model(LINEAR2, backend=name, solver=pn.Kvaerno5(), control=pn.StepControl(**TOL, max_steps=3))
    with pytest.raises(pn.MaxStepsError) as info:
        m.solve(STIFF_A, Y2, np.array([0.0, 100.0]))
    assert str(info.value) == ("The forward solve reached max_steps=3 before the end of the interval: increase "
                               "max_steps in pn.StepControl(max_steps=...), or loosen rtol/atol.")


BACKSOLVE_ADVICE = {
    "jax": "use pn.DirectAdjoint() or pn.CheckpointAdjoint()",
    "torch": "use pn.DirectAdjoint()",
    "julia": "use pn.DirectAdjoint() or pn.InterpolatingAdjoint() or pn.QuadratureAdjoint() or pn.GaussAdjoint()",
}


def test_backsolve_on_a_stiff_problem_fails_fast_with_adjoint_advice(backend):
    """The forward solve of [0, 0.2] is fine (~600 steps); re-solving y backwards in time grows the stiff mode by
    e^(1e4 t) until it overflows. Before the fix JAX spent max_steps on every remaining save interval and then
    advised raising max_steps."""
    if backend == "julia":
        pytest.skip("SciMLSensitivity reports no adjoint return code; its warnings are mapped instead "
                    "(tests/test_julia_backend.py::test_status_and_warning_mapping)")
    m = model(LINEAR2, backend=backend, control=pn.StepControl(**TOL, max_steps=10_000),
              adjoint=pn.BacksolveAdjoint())
    with pytest.raises(pn.NonFiniteError) as info:
        m.value_and_grad(STIFF_A, Y2, np.linspace(0.0, 0.2, 3), loss=pn.MSE(np.zeros((3, 2))))
    assert str(info.value) == (
        "The backward (adjoint) solve blew up: the state became NaN or infinite, or grew until the step size "
        "underflowed (a finite-time singularity), so raising max_steps cannot help: BacksolveAdjoint re-solves "
        "the state backwards in time, which is unstable for stiff or strongly dissipative dynamics: "
        f"{BACKSOLVE_ADVICE[backend]}; otherwise lower the learning rate, tighten rtol/atol, use float64, shorten "
        "the time span, or check the inputs.")


def test_stiff_hint_is_derived_from_the_registry(monkeypatch):
    """A backend that gains a stiff solver is named by the hint (the "stiff" solvers are being added)."""
    assert _errors.stiff_hint(pn.Kvaerno5(), "jax") is None
    assert _errors.stiff_hint(pn.Dopri5(), "torch") == STIFF_HINT["torch"]
    entry = _registry.REGISTRY["torch"]
    monkeypatch.setitem(_registry.REGISTRY, "torch",
                        type(entry)(**{**entry.__dict__, "solvers": entry.solvers | {"Rodas5P"}}))
    assert _errors.stiff_hint(pn.Dopri5(), "torch") == "try a stiff solver such as pn.Rodas5P()"
    monkeypatch.setitem(_registry.REGISTRY, "jax",
                        type(entry)(**{**_registry.REGISTRY["jax"].__dict__, "solvers": frozenset({"Dopri5"})}))
    monkeypatch.setitem(_registry.REGISTRY, "torch", entry)
    assert _errors.stiff_hint(pn.Dopri5(), "torch") == (
        "try a stiff solver such as pn.Kvaerno5() on backend 'julia' (backend 'torch' has none)")
