"""The peers' own test problems written as a new user would write them with ``pn.dynamics``, and what broke.

Each test pins a bug found by porting torchdiffeq's, diffrax's and SciMLSensitivity's test problems (peers.md §6)
or a NumPy idiom users write without thinking: analytic solutions, gradients against closed forms or finite
differences, and the exact error where something cannot be traced.
"""

from __future__ import annotations


import numpy as np
import pytest

import pyneuralode as pn

from helpers import model


@pn.dynamics(state=1)
def decay(t, y, p):
    return -y


def test_backsolve_of_a_field_with_no_parameters(backend):
    """torchdiffeq's SineODE and ExpODE have no parameters; JAX's BacksolveAdjoint raised a raw ValueError ("zero-
    size array to reduction operation max") from its step watch on the empty parameter integral. Exact answer:
    loss = mean(y0² e^{-2t}) over the save times, d loss / d y0 = 2 y0 mean(e^{-2t})."""
    ts = np.array([0.0, 0.5, 1.0])
    m = model(decay, backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-12), adjoint=pn.BacksolveAdjoint())
    res = m.value_and_grad(m.init(0), np.array([1.5]), ts, loss=pn.MSE(np.zeros((3, 1))))
    assert res.grad_params.shape == (0,)
    assert res.value == pytest.approx(1.5 ** 2 * np.mean(np.exp(-2 * ts)), rel=1e-9)
    assert res.grad_y0[0] == pytest.approx(2 * 1.5 * np.mean(np.exp(-2 * ts)), rel=1e-9)


# ---------------------------------------------------------------------- a 2-D state with matrix constants
B = np.array([[-0.5, 0.3], [-0.2, -0.4]])
C = np.array([[0.0, 0.4, -0.1], [-0.4, 0.0, 0.2], [0.1, -0.2, 0.0]])


@pn.dynamics(state=(2, 3), constants={"B": B, "C": C})
def sylvester(t, u, p):
    return p.B @ u + u @ p.C


def _expm(a):
    w, v = np.linalg.eig(a)
    return np.real(v @ np.diag(np.exp(w)) @ np.linalg.inv(v))


def test_matrix_state_against_its_closed_form(backend):
    """dU/dt = B U + U C on a (2, 3) state: U(t) = e^{B t} U0 e^{C t}; forward and reversed, one sample and a
    batch, at torchdiffeq's default tolerances."""
    m = model(sylvester, backend=backend, control=pn.StepControl(rtol=1e-7, atol=1e-9))
    u0 = np.arange(1.0, 7.0).reshape(2, 3)
    ts = np.linspace(0.0, 2.0, 5)
    for times in (ts, ts[::-1].copy()):
        exact = np.stack([_expm(B * (t - times[0])) @ u0 @ _expm(C * (t - times[0])) for t in times])
        ys = m.solve(m.init(0), np.stack([u0, -u0]), times).ys
        assert ys.shape == (5, 2, 2, 3)
        assert np.max(np.abs(ys[:, 0] - exact)) < 1e-6 and np.max(np.abs(ys[:, 1] + exact)) < 1e-6


# ---------------------------------------------------------------------- a small PDE written three ways
N = 6
X = np.linspace(0.0, 1.0, N, endpoint=False)


def _brusselator(laplacian):
    def brusselator(t, u, p):
        U, V = u[0], u[1]
        return np.array([p.B + U ** 2 * V - (p.A + 1) * U + p.alpha * laplacian(U),
                         p.A * U - U ** 2 * V + p.alpha * laplacian(V)])
    return pn.dynamics(brusselator, state=(2, N), params={"A": 1.0, "B": 3.4, "alpha": 0.02})


BRUSSELATORS = {  # the periodic Laplacian as users write it: np.roll, a wrapped np.diff, reversed slices
    "roll": _brusselator(lambda w: (np.roll(w, 1) + np.roll(w, -1) - 2 * w) * N ** 2),
    "diff": _brusselator(lambda w: np.diff(np.concatenate([w[-1:], w, w[:1]]), n=2) * N ** 2),
    "flip": _brusselator(lambda w: (np.concatenate([w[-1:], w[:-1]]) + np.concatenate([w[1:], w[:1]])[::-1][::-1]
                                    - 2 * w) * N ** 2),
}
U0 = np.stack([1 + np.sin(2 * np.pi * X), np.full(N, 3.0)])


def test_brusselator_formulations_agree_and_match_the_reference():
    """The three Laplacians trace to different graphs with the same values (the NumPy reference), and np.array of
    two traced rows becomes one stack."""
    params = np.array([1.0, 3.4, 0.02])
    expected = BRUSSELATORS["roll"].fn(0.0, U0, pn._trace.Namespace({"A": 1.0, "B": 3.4, "alpha": 0.02}, {}))
    for name, dyn in BRUSSELATORS.items():
        np.testing.assert_allclose(dyn.evaluate(params, 0.0, U0), expected, rtol=1e-14, atol=1e-12, err_msg=name)
    assert sum(node.op == "take" for node in BRUSSELATORS["roll"].graph.nodes) == 4


def test_brusselator_gradients_against_finite_differences(backend):
    """SciMLSensitivity-style: a (2, N) PDE state, d loss / d (A, B, alpha) by Direct and Backsolve against central
    differences of two solves."""
    control = pn.StepControl(rtol=1e-10, atol=1e-10)
    dyn, ts = BRUSSELATORS["roll"], np.linspace(0.0, 1.0, 4)
    plain = model(dyn, backend=backend, control=control)
    target = 0.9 * plain.solve(plain.init(0), U0, ts).ys

    def loss(params):
        return np.mean((plain.solve(params, U0, ts).ys - target) ** 2)
    p0 = plain.init(0)
    fd = np.array([(loss(p0 + 1e-6 * e) - loss(p0 - 1e-6 * e)) / 2e-6 for e in np.eye(3)])
    for adjoint in (pn.DirectAdjoint(), pn.BacksolveAdjoint()):
        res = model(dyn, backend=backend, control=control, adjoint=adjoint).value_and_grad(
            p0, U0, ts, loss=pn.MSE(target))
        assert np.max(np.abs(res.grad_params - fd)) < 1e-6 * np.max(np.abs(fd)), adjoint.name


# diffrax's ``test_ode_order`` (test/test_integrate.py): ``y' = A y`` with ``A = 0.5 * randn(10, 10)``, ``y0 ~
# randn(10)``, ``t`` in [0, 4], the exact ``expm(4 A) y0``; the slope of log2(error) against log2(step) must lie
# within 0.9 of the method's order. diffrax runs adaptive methods at a constant step there; here the same
# constant step comes from ``step_ts`` (every step clipped onto the next grid time) with a loose tolerance that
# never rejects, which every backend honours (diffrax ClipStepSizeController, torchdiffeq step_t, OrdinaryDiffEq
# tstops). The problem is linear, so an implicit method's chord iteration is exact whatever its tolerance.
_ORDER_RNG = np.random.default_rng(5678)
_ORDER_A = 0.5 * _ORDER_RNG.standard_normal((10, 10))
_ORDER_Y0 = _ORDER_RNG.standard_normal(10)


@pn.dynamics(state=10, constants={"A": _ORDER_A})
def linear_system(t, y, p):
    return p.A @ y


_ORDER_SOLVERS = {"Bosh3": [-3, -4, -5], "Dopri5": [-3, -4, -5], "Tsit5": [-4, -5, -6], "Dopri8": [-1, -2, -3],
                  "Kvaerno5": [-2, -3, -4], "KenCarp4": [-2, -3, -4]}
"""log2 of the steps per method: where its error is asymptotic and above diffrax's round-off cut-off (measured:
Tsit5's first halvings gain more than its order, Dopri8 reaches round-off after two)."""


@pytest.mark.parametrize("solver_name", sorted(_ORDER_SOLVERS))
def test_diffrax_order_test_for_adaptive_solvers(backend, solver_name):
    from scipy.linalg import expm

    from pyneuralode.backends._registry import REGISTRY
    if solver_name not in REGISTRY[backend].solvers:
        pytest.skip(f"{solver_name} is not on backend {backend!r}")
    solver = getattr(pn, solver_name)()
    exact = expm(4.0 * _ORDER_A) @ _ORDER_Y0
    steps, errors = [], []
    for exponent in _ORDER_SOLVERS[solver_name]:
        h = 2.0 ** exponent
        grid = tuple(np.arange(1, round(4.0 / h)) * h)
        control = pn.StepControl(rtol=1.0, atol=1.0, dt0=h, step_ts=grid, max_steps=10_000)
        sol = pn.ODEModel(linear_system, solver=solver, control=control, backend=backend).solve(
            np.zeros(0), _ORDER_Y0, np.array([0.0, 4.0]))
        # a constant step (torch: also the regression test of torchdiffeq's step_t index, see _methods.py)
        assert sol.stats.steps_accepted == round(4.0 / h) and sol.stats.steps_rejected == 0
        error = float(np.sum(np.abs(sol.ys[-1] - exact)))
        if error < 2.0 ** -28:  # diffrax's cut-off: below it round-off, not the method, sets the error
            break
        steps.append(exponent)
        errors.append(np.log2(error))
    assert len(steps) >= 2, f"{solver_name}: too few step sizes above round-off ({errors})"
    slope = np.polyfit(steps, errors, 1)[0]
    assert abs(slope - solver.order) < 0.9, (solver_name, slope, errors)
