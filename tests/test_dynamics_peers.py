"""The peers' own test problems written as a new user would write them with ``pn.dynamics``, and what broke.

Each test pins a bug found by porting torchdiffeq's, diffrax's and SciMLSensitivity's test problems (peers.md §6)
or a NumPy idiom users write without thinking: analytic solutions, gradients against closed forms or finite
differences, and the exact error where something cannot be traced.
"""

from __future__ import annotations

import math

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
