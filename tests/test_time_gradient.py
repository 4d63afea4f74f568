"""Gradients with respect to the save times: ``value_and_grad(..., grad_ts=True)`` on every backend.

Checked against the closed form on ``y' = a y``, central finite differences of the solve on a forced nonlinear
field (every adjoint, both directions, per-sample times, an augmented model), torchdiffeq's own
``odeint_adjoint`` gradient in ``t`` (an independent implementation), and the refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

from helpers import model

TIGHT = pn.StepControl(rtol=1e-11, atol=1e-11)
TS = np.array([0.1, 0.5, 1.2, 2.0])
Y0 = np.array([[1.0, 0.5], [0.2, -0.3]])
TARGET = np.full((4, 2, 2), 0.1)


@pn.dynamics(state=1, params={"a": -0.4})
def growth(t, u, p):
    return p.a * u


@pn.dynamics(state=2, params={"a": 0.7, "w": 1.3})
def forced(t, u, p):
    """A damped rotation with forcing in t: the solution's speed depends on t, u and the parameters."""
    return np.stack([-p.a * u[0] + p.w * u[1] + np.sin(3 * t), -p.w * u[0] - p.a * u[1] + u[0] * u[1]])


def _finite_differences(m, params, y0, ts, loss, eps=1e-6):
    """Central differences of ``loss(solve(ts))`` in each save time (each sample's row for per-sample times)."""
    out = np.zeros(ts.shape)
    for index in np.ndindex(ts.shape):
        up, down = ts.copy(), ts.copy()
        up[index] += eps
        down[index] -= eps
        if ts.ndim == 2 and index[1] == 0:  # per-sample times share their start: move it for every sample
            up[:, 0], down[:, 0] = up[index], down[index]
        out[index] = (loss(m.solve(params, y0, up).ys) - loss(m.solve(params, y0, down).ys)) / (2 * eps)
    return out


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
def test_matches_the_closed_form_on_exponential_growth(backend, batched, reverse):
    """y_i = y0 exp(a (t_i - t_0)) and L = mean(y_i^2): dL/dt_i = 2 a y_i^2 / N for i >= 1 and
    dL/dt_0 = -sum_{i>=1} 2 a y_i^2 / N."""
    ts = TS[::-1].copy() if reverse else TS
    y0 = np.array([[1.5], [-0.5]]) if batched else np.array([1.5])
    m = model(growth, backend=backend, control=TIGHT)
    a = m.init(0)[0]
    res = m.value_and_grad(m.init(0), y0, ts, loss=pn.MSE(np.zeros((len(ts), *y0.shape))), grad_ts=True)
    ys = y0 * np.exp(a * (ts - ts[0])).reshape(-1, *[1] * y0.ndim)
    per_time = (2 * a * ys ** 2 / ys.size).reshape(len(ts), -1).sum(axis=1)
    expected = np.concatenate([[-per_time[1:].sum()], per_time[1:]])
    assert res.grad_ts.shape == ts.shape
    np.testing.assert_allclose(res.grad_ts, expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=repr)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_matches_finite_differences_of_the_solve(backend, adjoint, reverse):
    ts = TS[::-1].copy() if reverse else TS
    m = model(forced, backend=backend, control=TIGHT, adjoint=adjoint)
    params, loss = m.init(0), pn.MSE(TARGET)
    res = m.value_and_grad(params, Y0, ts, loss=loss, grad_ts=True)
    np.testing.assert_allclose(res.grad_ts, _finite_differences(m, params, Y0, ts, loss), rtol=1e-6, atol=1e-8)


def test_per_sample_times_give_each_sample_its_own_gradient(backend):
    ts = np.array([[0.1, 0.4, 1.0, 2.0], [0.1, 0.7, 1.5, 1.9]])
    m = model(forced, backend=backend, control=TIGHT)
    params, loss = m.init(0), pn.MSE(TARGET)
    res = m.value_and_grad(params, Y0, ts, loss=loss, grad_ts=True)
    assert res.grad_ts.shape == ts.shape
    fd = _finite_differences(m, params, Y0, ts, loss)
    np.testing.assert_allclose(res.grad_ts[:, 1:], fd[:, 1:], rtol=1e-6, atol=1e-8)
    # the shared start: each sample's share in column 0, their sum the start's derivative
    np.testing.assert_allclose(res.grad_ts[:, 0].sum(), fd[0, 0], rtol=1e-6, atol=1e-8)
    assert abs(res.grad_ts[0, 0] - res.grad_ts[1, 0]) > 1e-3


def test_augmented_model(backend):
    """The time derivative moves the zero-started augmented features too; the loss sees only the first two."""
    m = pn.ODEModel(pn.MLP([3, 8, 3], activation="tanh"), augment=1, control=TIGHT, backend=backend,
                    dtype="float64")
    params, loss = m.init(1), pn.MSE(TARGET)
    res = m.value_and_grad(params, Y0, TS, loss=loss, grad_ts=True)
    np.testing.assert_allclose(res.grad_ts, _finite_differences(m, params, Y0, TS, loss), rtol=1e-6, atol=1e-8)


def test_agrees_with_torchdiffeq_odeint_adjoint():
    """torchdiffeq's adjoint computes its gradient in t by its own code; the same field written in torch."""
    torch = pytest.importorskip("torch")
    torchdiffeq = pytest.importorskip("torchdiffeq")
    m = model(forced, backend="torch", control=TIGHT)
    a, w = m.init(0)
    res = m.value_and_grad(m.init(0), Y0, TS, loss=pn.MSE(TARGET), grad_ts=True)

    class Forced(torch.nn.Module):
        def forward(self, t, u):
            x, y = u[..., 0], u[..., 1]
            return torch.stack([-a * x + w * y + torch.sin(3 * t), -w * x - a * y + x * y], dim=-1)

    ts = torch.tensor(TS, dtype=torch.float64, requires_grad=True)
    ys = torchdiffeq.odeint_adjoint(Forced(), torch.tensor(Y0), ts, rtol=1e-11, atol=1e-11, adjoint_params=())
    torch.mean((ys - torch.tensor(TARGET)) ** 2).backward()
    np.testing.assert_allclose(res.grad_ts, ts.grad.numpy(), rtol=1e-7, atol=1e-10)


def test_single_save_time_has_zero_gradient(backend):
    m = model(forced, backend=backend, control=TIGHT)
    res = m.value_and_grad(m.init(0), Y0, TS[:1], loss=pn.MSE(TARGET[:1]), grad_ts=True)
    np.testing.assert_allclose(res.grad_ts, [0.0], atol=1e-15)


def test_off_by_default_and_refuses_a_non_boolean(backend):
    m = model(forced, backend=backend, control=TIGHT)
    assert m.value_and_grad(m.init(0), Y0, TS, loss=pn.MSE(TARGET)).grad_ts is None
    with pytest.raises(pn.SpecError, match="grad_ts must be True or False, not 'yes'"):
        m.value_and_grad(m.init(0), Y0, TS, loss=pn.MSE(TARGET), grad_ts="yes")
