"""Jump and step times: ``StepControl(jump_ts=..., step_ts=...)`` on every backend.

The problem is torchdiffeq's ``jump_t`` test (``tests/odeint_tests.py``): ``f = -0.5 x`` for ``t < 0.5`` and
``x**2`` afterwards, ``x0 = [1, 2]``, ``t`` in ``[0, 1]``. Its exact solution is ``x0 exp(-t/2)`` and then
``1 / (1/x(0.5) - (t - 0.5))``. Declaring the jump must cut the evaluations (torchdiffeq's assertion) and keep the
solution within tolerance; JAX's evaluation count must equal a counter of actual calls; backends must agree.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends import BACKEND_NAMES
from pyneuralode.backends._registry import REGISTRY

from helpers import model, rel_err, unavailable_reason

X0 = np.array([1.0, 2.0])
TS = np.linspace(0.0, 1.0, 5)
JUMP = 0.5


@pn.dynamics(state=2, params={"rate": 0.5})
def switched(t, u, p):
    """torchdiffeq's jump_t field, with its decay rate as a parameter (so gradients have something to reach)."""
    return np.where(t < JUMP, -p.rate * u, u ** 2)


def exact(ts, x0=X0):
    ts = np.asarray(ts)[:, None]
    at_jump = x0 * np.exp(-0.5 * JUMP)
    return np.where(ts < JUMP, x0 * np.exp(-0.5 * ts), 1.0 / (1.0 / at_jump - (ts - JUMP)))


def _control(jumps=(), steps=(), **kw):
    return pn.StepControl(**{"rtol": 1e-8, "atol": 1e-8, **kw}, jump_ts=jumps, step_ts=steps)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("solver", [pn.Dopri5(), pn.Bosh3()], ids=repr)
def test_declared_jump_cuts_evaluations_and_meets_the_exact_solution(backend, solver, reverse):
    ts = TS[::-1] if reverse else TS
    y0 = exact(ts[:1])[0]
    with_jump = model(switched, backend=backend, solver=solver, control=_control((JUMP,)))
    without = model(switched, backend=backend, solver=solver, control=_control())
    params = with_jump.init(0)
    sol, blind = with_jump.solve(params, y0, ts), without.solve(params, y0, ts)
    assert np.abs(sol.ys - exact(ts)).max() < 2e-6
    assert sol.stats.nfe_forward < blind.stats.nfe_forward
    assert sol.stats.steps_rejected < blind.stats.steps_rejected


def test_jump_outside_the_solve_changes_nothing(backend):
    """Times at or beyond the ends of the interval are ignored: same steps, same values, same count."""
    outside = model(switched, backend=backend, control=_control((-1.0, 0.0, 1.0, 3.0)))
    plain = model(switched, backend=backend, control=_control())
    params = plain.init(0)
    a, b = outside.solve(params, X0, TS), plain.solve(params, X0, TS)
    assert rel_err(a.ys, b.ys) == 0.0
    assert (a.stats.nfe_forward, a.stats.steps_accepted) == (b.stats.nfe_forward, b.stats.steps_accepted)


def test_step_times_are_stepped_onto(backend):
    """A kink at t = 0.3 (``u' = |t - 0.3|``, continuous, derivative jumps): stepping onto it is far more accurate
    than stepping across it at the same tolerance. Exact: ``u(t) = u0 + ((t-0.3)|t-0.3| + 0.09) / 2``."""
    kink = pn.dynamics(lambda t, u, p: np.abs(t - 0.3) * np.ones(1), state=1)
    ts = np.array([0.0, 1.0])
    truth = 0.5 * (0.7 * 0.7 + 0.09)
    stepped = model(kink, backend=backend, control=_control(steps=(0.3,), rtol=1e-5, atol=1e-5))
    blind = model(kink, backend=backend, control=_control(rtol=1e-5, atol=1e-5))
    params = blind.init(0)
    err_stepped = abs(stepped.solve(params, np.zeros(1), ts).ys[-1, 0] - truth)
    err_blind = abs(blind.solve(params, np.zeros(1), ts).ys[-1, 0] - truth)
    assert err_stepped < 1e-12 < err_blind  # Dopri5 is exact on each linear piece


# ----------------------------------------------------------------------------------------- JAX's exact count
@pytest.fixture(scope="module")
def counted():
    """``program(control, solver)``: a JAX program whose field calls go through independent host counters."""
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from pyneuralode.backends.jax._program import JaxProgram
    from test_jax_backend import Counters

    def program(control, solver=pn.Dopri5(), adjoint=pn.DirectAdjoint()):
        counters = Counters()
        m = pn.ODEModel(switched, solver=solver, control=control, adjoint=adjoint, dtype="float64")
        return m, JaxProgram(m, instrument=counters.instrument), counters
    return program


Y0_BATCH = np.stack([X0, 0.5 * X0])
LOOSE_JUMPS = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("solver", [pn.Dopri5(), pn.Tsit5(), pn.Bosh3(), pn.Dopri8()], ids=repr)
@pytest.mark.parametrize("dt0", [None, 0.01])
def test_jax_count_with_jumps_equals_calls(counted, solver, dt0):
    """Each jump restarts an FSAL method's first stage, and so does every retry after one (diffrax keeps its
    ``made_jump`` flag through rejections); both directions."""
    control = _control((JUMP, 0.75), dt0=dt0, **LOOSE_JUMPS)
    for ts in (TS, TS[::-1]):
        m, program, counters = counted(control, solver)
        sol = program.solve(m.init(0), Y0_BATCH, ts)
        assert sol.stats.nfe_forward == counters.forward.count


def test_jax_count_with_rejections_mid_solve_equals_calls(counted):
    """Without declared jumps the solver rejects many steps around t = 0.5, long after its first step: a
    rejected step reuses its first stage, so these cost no extra evaluation (with or without a given dt0)."""
    for dt0 in (None, 0.01):
        m, program, counters = counted(_control(dt0=dt0, **LOOSE_JUMPS))
        sol = program.solve(m.init(0), Y0_BATCH, TS)
        assert sol.stats.steps_rejected > 10
        assert sol.stats.nfe_forward == counters.forward.count


@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=repr)
def test_jax_backward_count_with_jumps_equals_calls(counted, adjoint):
    m, program, counters = counted(_control((JUMP,), **LOOSE_JUMPS), adjoint=adjoint)
    res = program.value_and_grad(m.init(0), Y0_BATCH, TS, pn.L1(np.zeros((len(TS), *Y0_BATCH.shape))))
    assert res.stats.nfe_backward == counters.vjp.count > 0
    if adjoint.name == "BacksolveAdjoint":  # every backward evaluation is one forward call and one VJP
        assert counters.forward.count == res.stats.nfe_forward + res.stats.nfe_backward


# ------------------------------------------------------------------------------------------------ agreement
PAIRS = list(itertools.combinations(BACKEND_NAMES, 2))


@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=repr)
@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_backends_agree_with_jumps(pair, adjoint):
    for name in pair:
        if unavailable_reason(name):
            pytest.skip(unavailable_reason(name))
        if adjoint.name not in REGISTRY[name].adjoints:
            pytest.skip(f"backend {name!r} has no {adjoint.name}")
    control = _control((JUMP,), rtol=1e-10, atol=1e-10)
    a, b = (model(switched, backend=name, control=control, adjoint=adjoint) for name in pair)
    params = a.init(0)
    target = exact(TS) * 1.1
    ra = a.value_and_grad(params, X0, TS, loss=pn.L1(target))
    rb = b.value_and_grad(params, X0, TS, loss=pn.L1(target))
    assert rel_err(ra.ys, rb.ys) < 1e-9
    assert rel_err(ra.grad_params, rb.grad_params) < 1e-8
    assert rel_err(ra.grad_y0, rb.grad_y0) < 1e-8
    if "julia" in pair:  # OrdinaryDiffEq places the restart by its own rule (d_discontinuities): values only
        return
    assert (ra.stats.steps_accepted, ra.stats.steps_rejected) == (rb.stats.steps_accepted, rb.stats.steps_rejected)
    sa, sb = a.solve(params, X0, TS), b.solve(params, X0, TS)
    assert abs(sa.stats.nfe_forward - sb.stats.nfe_forward) <= sa.stats.steps_rejected  # retries after the jump


def test_gradient_with_jumps_matches_finite_differences(backend):
    control = _control((JUMP,), rtol=1e-10, atol=1e-10)
    m = model(switched, backend=backend, control=control)
    params, target = m.init(0), exact(TS) * 1.1
    res = m.value_and_grad(params, X0, TS, loss=pn.MSE(target))
    h = 1e-6
    loss = lambda p, y: np.mean((m.solve(p, y, TS).ys - target) ** 2)  # noqa: E731
    fd_rate = (loss(params + h, X0) - loss(params - h, X0)) / (2 * h)
    fd_y0 = [(loss(params, X0 + h * e) - loss(params, X0 - h * e)) / (2 * h) for e in np.eye(2)]
    assert res.grad_params[0] == pytest.approx(fd_rate, rel=1e-6)
    np.testing.assert_allclose(res.grad_y0, fd_y0, rtol=1e-6)


# ------------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("bad", ["a", [float("nan")], [True], None, [[1, "x"]]], ids=repr)
def test_bad_times_are_refused(bad):
    with pytest.raises(pn.SpecError, match=r"StepControl jump_ts must be a sequence of finite times, e.g. "):
        pn.StepControl(jump_ts=bad)
    with pytest.raises(pn.SpecError, match=r"StepControl step_ts must be a sequence of finite times"):
        pn.StepControl(step_ts=bad)


def test_times_are_sorted_and_deduplicated():
    assert pn.StepControl(jump_ts=[2, 0.5, 0.5], step_ts=1).jump_ts == (0.5, 2.0)
    assert pn.StepControl(step_ts=1).step_ts == (1.0,)


def test_fixed_step_solver_refuses_jump_times():
    with pytest.raises(pn.SpecError, match="put these times in ts instead"):
        pn.StepControl(dt=0.1, jump_ts=[0.5])
