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


def test_value_and_grad_refuses_per_sample_times_naming_the_routes():
    with pytest.raises(pn.NotSupportedError, match="needs masked losses. Train irregularly-sampled series with "
                                                   "pn.LatentODE"):
        MODEL.value_and_grad(MODEL.init(0), Y0, TS, loss=pn.MSE(np.zeros((3, 3, 2))))
