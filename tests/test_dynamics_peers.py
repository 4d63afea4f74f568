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
