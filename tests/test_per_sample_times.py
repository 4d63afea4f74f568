"""``ODEModel.solve`` with per-sample times ``ts`` of shape ``(batch, T)``: one solve at the union of the times,
each sample read at its own — checked against each sample solved alone at its own times."""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

MODEL = pn.ODEModel(pn.MLP([2, 8, 2]), control=pn.StepControl(rtol=1e-11, atol=1e-11))
Y0 = np.array([[0.5, -0.2], [1.0, 0.3], [-0.4, 0.8]])
TS = np.array([[0.0, 0.3, 1.1], [0.0, 0.7, 0.9], [0.0, 0.2, 1.5]])


def test_each_sample_gets_its_states_at_its_own_times(backend):
    model = MODEL.replace(backend=backend)
    params = model.init(0)
    sol = model.solve(params, Y0, TS)
    assert sol.ys.shape == (3, 3, 2) and sol.ts is not None
    for b in range(3):
        alone = model.solve(params, Y0[b], TS[b]).ys
        np.testing.assert_allclose(sol.ys[:, b], alone, rtol=0, atol=1e-8)
    backwards = model.solve(params, Y0, -TS)   # decreasing times, the same rule
    np.testing.assert_allclose(backwards.ys[:, 1], model.solve(params, Y0[1], -TS[1]).ys, rtol=0, atol=1e-8)


@pytest.mark.parametrize("y0, ts, message", [
    (Y0[0], TS, r"need a batched y0 with 3 samples"),
    (Y0[:2], TS, r"need a batched y0 with 3 samples"),
    (Y0, TS + np.array([[0.0], [0.1], [0.0]]), r"must all start at the time of y0"),
    (Y0, TS * np.array([[1.0], [-1.0], [1.0]]), r"must all run the same way"),
    (Y0, TS[:, [0, 2, 1]], "strictly monotonic"),
])
def test_bad_per_sample_times_name_the_fix(y0, ts, message):
    with pytest.raises(pn.SpecError, match=message):
        MODEL.solve(MODEL.init(0), y0, ts)


def _alone(model, params, b, target, weights=None):
    """Sample b solved alone at its own times: its loss sum and gradients of that sum (weighted entries)."""
    w = np.ones(target[:, b].shape) if weights is None else weights[:, b]
    res = model.value_and_grad(params, Y0[b], TS[b], loss=pn.MSE(target[:, b], weights=w))
    return res.value * w.sum(), res.grad_params * w.sum(), res.grad_y0 * w.sum(), w.sum()


@pytest.mark.parametrize("masked", [False, True], ids=["all-observed", "masked"])
def test_value_and_grad_with_per_sample_times_is_the_loss_of_each_sample_at_its_own_times(backend, masked):
    """One solve at the union, the loss moved onto it with zero weights: value and gradients equal the
    weighted mean over the samples solved alone (each at its own times and steps, so equal to the tolerance)."""
    model = MODEL.replace(backend=backend)
    params = model.init(0)
    target = np.random.default_rng(1).normal(size=(3, 3, 2))
    mask = np.ones(target.shape, bool)
    if masked:
        mask[1, 0] = mask[2, 2, 1] = False
        target[~mask] = np.nan                       # unobserved: NaN allowed where the mask is False
    res = model.value_and_grad(params, Y0, TS, loss=pn.MSE(target, mask=mask) if masked else pn.MSE(target))
    parts = [_alone(model, params, b, np.nan_to_num(target), mask.astype(float)) for b in range(3)]
    total = sum(p[3] for p in parts)
    assert res.value == pytest.approx(sum(p[0] for p in parts) / total, rel=1e-7)
    np.testing.assert_allclose(res.grad_params, sum(p[1] for p in parts) / total, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.grad_y0, np.stack([p[2] for p in parts]) / total, rtol=1e-6, atol=1e-9)
    assert res.ys is None or res.ys.shape == (3, 3, 2)


def test_per_sample_value_and_grad_errors_name_the_fix():
    params = MODEL.init(0)
    with pytest.raises(pn.SpecError, match=r"MSE target has shape \(3, 2\) but the solution has shape \(3, 3, 2\)"):
        MODEL.value_and_grad(params, Y0, TS, loss=pn.MSE(np.zeros((3, 2))))

    @pn.loss
    def total(ys, target):
        return np.sum((ys - target) ** 2)

    with pytest.raises(pn.NotSupportedError, match=r"total: a pn.loss of your own cannot take per-sample times .*"
                                                   r"use pn.MSE/pn.L1, which take per-sample times"):
        MODEL.value_and_grad(params, Y0, TS, loss=total(np.zeros((3, 3, 2))))


def test_trainer_step_with_per_sample_times_is_the_masked_union_step(backend):
    """Trainer.step takes per-sample times too: its loss is value_and_grad's and one plain SGD step moves the
    parameters by -lr times value_and_grad's gradient."""
    model = MODEL.replace(backend=backend)
    params = model.init(0)
    target = np.random.default_rng(2).normal(size=(3, 3, 2))
    trainer = pn.Trainer(model, optimizer=pn.SGD(lr=0.1, momentum=0.0), loss=pn.MSE)
    trainer.init(params)
    info = trainer.step(Y0, TS, target)
    res = model.value_and_grad(params, Y0, TS, loss=pn.MSE(target))
    assert info.loss == pytest.approx(res.value, rel=1e-12)
    np.testing.assert_allclose(trainer.params, params - 0.1 * res.grad_params, rtol=1e-10, atol=1e-13)
