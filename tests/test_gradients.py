"""Gradients: against central finite differences, across adjoints, dtypes, batching and reverse time."""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends._registry import require_support

from helpers import model, rel_err, spiral_batch, spiral_field

TIGHT = pn.StepControl(rtol=1e-10, atol=1e-10, max_steps=20_000)
ADJOINTS = {"DirectAdjoint": pn.DirectAdjoint(), "CheckpointAdjoint": pn.CheckpointAdjoint(),
            "BacksolveAdjoint": pn.BacksolveAdjoint(), "BacksolveSeminorm": pn.BacksolveAdjoint(seminorm=True)}


def _adjoint_or_skip(backend, key):
    """The adjoint, or a skip with the registry's own reason when the backend refuses it (name or option value)."""
    adjoint = ADJOINTS[key]
    try:
        require_support(backend, adjoint=adjoint)
    except pn.NotSupportedError as err:
        pytest.skip(str(err))
    return adjoint


def _target(m, params, y0, ts):
    return m.solve(params, y0, ts).ys * 0.9 + 0.05  # a target that leaves every residual away from zero


def _directional_fd(m, params, y0, ts, loss, direction_p, direction_y, eps=1e-6):
    def value(p, y):
        return loss(m.solve(p, y, ts).ys)
    return (value(params + eps * direction_p, y0 + eps * direction_y)
            - value(params - eps * direction_p, y0 - eps * direction_y)) / (2 * eps)


@pytest.mark.parametrize("adjoint_key", ["DirectAdjoint", "BacksolveAdjoint"])
def test_gradient_matches_finite_differences(backend, adjoint_key):
    adjoint = _adjoint_or_skip(backend, adjoint_key)
    m = model(spiral_field(), backend=backend, control=TIGHT, adjoint=adjoint)
    params = m.init(seed=1)
    y0, ts = spiral_batch()
    loss = pn.MSE(_target(m, params, y0, ts))
    res = m.value_and_grad(params, y0, ts, loss=loss)
    assert res.grad_params.shape == params.shape and res.grad_y0.shape == y0.shape
    assert res.value == pytest.approx(loss(m.solve(params, y0, ts).ys), rel=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(3):
        dp, dy = rng.standard_normal(params.shape), rng.standard_normal(y0.shape)
        fd = _directional_fd(m, params, y0, ts, loss, dp, dy)
        analytic = res.grad_params @ dp + np.sum(res.grad_y0 * dy)
        assert analytic == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("adjoint_key", ["CheckpointAdjoint", "BacksolveAdjoint", "BacksolveSeminorm"])
def test_every_adjoint_matches_direct(backend, adjoint_key):
    adjoint = _adjoint_or_skip(backend, adjoint_key)
    y0, ts = spiral_batch()
    direct = model(spiral_field(), backend=backend, control=TIGHT, adjoint=pn.DirectAdjoint())
    other = model(spiral_field(), backend=backend, control=TIGHT, adjoint=adjoint)
    params = direct.init(seed=1)
    loss = pn.MSE(_target(direct, params, y0, ts))
    a = direct.value_and_grad(params, y0, ts, loss=loss)
    b = other.value_and_grad(params, y0, ts, loss=loss)
    assert b.value == pytest.approx(a.value, rel=1e-12)
    assert rel_err(b.grad_params, a.grad_params) < 1e-7
    assert rel_err(b.grad_y0, a.grad_y0) < 1e-7
    assert b.stats.nfe_backward > 0


def test_reverse_time_gradient_matches_finite_differences(backend):
    m = model(spiral_field(), backend=backend, control=TIGHT, adjoint=pn.DirectAdjoint())
    params = m.init(seed=2)
    y0, ts = spiral_batch()
    ts = ts[::-1].copy()
    loss = pn.MSE(_target(m, params, y0, ts))
    res = m.value_and_grad(params, y0, ts, loss=loss)
    rng = np.random.default_rng(1)
    dp, dy = rng.standard_normal(params.shape), rng.standard_normal(y0.shape)
    fd = _directional_fd(m, params, y0, ts, loss, dp, dy)
    assert res.grad_params @ dp + np.sum(res.grad_y0 * dy) == pytest.approx(fd, rel=1e-6)


def test_float32_gradient_close_to_float64(backend):
    y0, ts = spiral_batch()
    control = pn.StepControl(rtol=1e-6, atol=1e-7)
    m64 = model(spiral_field(), backend=backend, control=control, adjoint=pn.DirectAdjoint())
    m32 = model(spiral_field(), backend=backend, control=control, adjoint=pn.DirectAdjoint(), dtype="float32")
    params = m64.init(seed=1)
    loss = pn.L1(_target(m64, params, y0, ts))
    a = m64.value_and_grad(params, y0, ts, loss=loss)
    b = m32.value_and_grad(params.astype(np.float32), y0, ts, loss=loss)
    assert b.grad_params.dtype == np.float32
    assert rel_err(b.grad_params, a.grad_params) < 1e-3
    assert b.value == pytest.approx(a.value, rel=1e-4)


def test_unbatched_gradient_equals_batch_of_one(backend):
    m = model(spiral_field(), backend=backend, control=TIGHT, adjoint=pn.DirectAdjoint())
    params = m.init(seed=1)
    y0, ts = spiral_batch(batch=1)
    loss_b = pn.MSE(_target(m, params, y0, ts))
    loss_s = pn.MSE(loss_b.target[:, 0])
    a = m.value_and_grad(params, y0, ts, loss=loss_b)
    b = m.value_and_grad(params, y0[0], ts, loss=loss_s)
    assert b.grad_y0.shape == (2,)
    np.testing.assert_allclose(b.grad_params, a.grad_params, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.grad_y0, a.grad_y0[0], rtol=1e-12, atol=1e-15)


def test_seminorm_needs_no_more_backward_evaluations(backend):
    """torchdiffeq's norm test (peers.md §6): seminorm backward NFE <= default-norm backward NFE."""
    _adjoint_or_skip(backend, "BacksolveSeminorm")
    field = pn.MLP([2, 256, 2], activation="tanh", time_input=True)
    control = pn.StepControl(rtol=1e-8, atol=1e-8)
    full = model(field, backend=backend, control=control, adjoint=pn.BacksolveAdjoint())
    semi = model(field, backend=backend, control=control, adjoint=pn.BacksolveAdjoint(seminorm=True))
    params = full.init(seed=0)
    y0, ts = np.array([[1.0, 2.0]]), np.array([0.0, 1.0])
    loss = pn.L1(np.zeros((2, 1, 2)))
    a = full.value_and_grad(params, y0, ts, loss=loss)
    b = semi.value_and_grad(params, y0, ts, loss=loss)
    assert b.stats.nfe_backward <= a.stats.nfe_backward
    assert rel_err(b.grad_params, a.grad_params) < 1e-5
