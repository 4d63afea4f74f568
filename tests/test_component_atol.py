"""One absolute tolerance per state component: ``pn.StepControl(atol=(a_1, ..., a_n))``.

A step's error is measured against ``atol[i] + rtol |y[i]|`` component by component (SciPy's ``solve_ivp``,
OrdinaryDiffEq's ``abstol`` vector, torchdiffeq's tensor ``atol``). Checked here: the same steps and values as raw
diffrax given the same array ``atol`` (so the array reaches the step-size controller, not just its smallest
entry); equal entries are exactly the scalar; JAX and torch take the same steps with the same values and
gradients; Robertson's kinetics with per-species tolerances against SciPy's Radau; and the refusals, each naming
what to do.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

from helpers import unavailable_reason


@pn.dynamics(state=2, params={"w": 1.0})
def two_scales(t, u, p):  # a harmonic oscillator whose components differ in scale by 1000
    return np.stack([1e-3 * u[1], -1e3 * p.w * u[0]])


Y0 = np.array([[1e-3, 1.0]])
TS = np.linspace(0.0, 2.0, 5)
ATOL = (1e-10, 1e-6)


def _model(backend, atol, **control):
    return pn.ODEModel(two_scales, solver=pn.Dopri5(),
                       control=pn.StepControl(rtol=1e-7, atol=atol, **control), backend=backend)


def test_the_array_reaches_the_controller_as_raw_diffrax_takes_it():
    """pyneuralode's steps and values equal raw diffrax's with ``PIDController(atol=array)`` (fixed first step on
    both); the tight first component changes the steps compared with its largest entry alone."""
    if unavailable_reason("jax"):
        pytest.skip(unavailable_reason("jax"))
    import diffrax
    import jax
    import jax.numpy as jnp

    ours = _model("jax", ATOL, dt0=0.01).solve(np.array([1.0]), Y0, TS)
    with jax.enable_x64(True):
        raw = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: jnp.stack([1e-3 * y[..., 1], -1e3 * y[..., 0]], axis=-1)),
            diffrax.Dopri5(), 0.0, 2.0, 0.01, jnp.asarray(Y0), saveat=diffrax.SaveAt(ts=jnp.asarray(TS)),
            stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=jnp.asarray(ATOL), pcoeff=0.0, icoeff=1.0,
                                                      dcoeff=0.0))
        raw_ys, raw_steps = np.asarray(raw.ys), int(raw.stats["num_accepted_steps"])
    assert ours.stats.steps_accepted == raw_steps
    np.testing.assert_allclose(ours.ys, raw_ys, rtol=0, atol=1e-15)
    loose = _model("jax", ATOL[1], dt0=0.01).solve(np.array([1.0]), Y0, TS)
    assert loose.stats.steps_accepted < ours.stats.steps_accepted


def test_equal_entries_are_the_scalar(backend):
    a = _model(backend, (1e-8, 1e-8)).solve(np.array([1.0]), Y0, TS)
    b = _model(backend, 1e-8).solve(np.array([1.0]), Y0, TS)
    assert a.stats == b.stats
    np.testing.assert_array_equal(a.ys, b.ys)


def test_jax_and_torch_take_the_same_steps_with_the_same_gradients():
    for name in ("jax", "torch"):
        if unavailable_reason(name):
            pytest.skip(unavailable_reason(name))
    results = {}
    for name in ("jax", "torch"):
        for adjoint in (pn.DirectAdjoint(), pn.BacksolveAdjoint()):
            model = _model(name, ATOL).replace(adjoint=adjoint)
            target = np.zeros((len(TS), *Y0.shape))
            results[name, adjoint.name] = model.value_and_grad(np.array([1.0]), Y0, TS, loss=pn.MSE(target))
    for adjoint in ("DirectAdjoint", "BacksolveAdjoint"):
        a, b = results["jax", adjoint], results["torch", adjoint]
        assert a.stats.nfe_forward == b.stats.nfe_forward and a.stats.steps_accepted == b.stats.steps_accepted
        np.testing.assert_allclose(a.ys, b.ys, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(a.grad_params, b.grad_params, rtol=1e-6)
        np.testing.assert_allclose(a.grad_y0, b.grad_y0, rtol=1e-6)


def test_robertson_with_per_species_tolerances_against_radau():
    """Robertson's kinetics unscaled, y2 ~ 1e-5 .. 1e-8 given its own atol 1e-14 (the usual per-species setting),
    against SciPy's Radau at rtol 1e-12."""
    if unavailable_reason("jax"):
        pytest.skip(unavailable_reason("jax"))
    from scipy.integrate import solve_ivp

    @pn.dynamics(state=3, params={"k1": 0.04, "k2": 3e7, "k3": 1e4})
    def robertson(t, u, p):
        return np.stack([-p.k1 * u[0] + p.k3 * u[1] * u[2], p.k1 * u[0] - p.k3 * u[1] * u[2] - p.k2 * u[1] ** 2,
                         p.k2 * u[1] ** 2])

    ts = np.concatenate([[0.0], np.logspace(-5, 5, 11)])
    model = pn.ODEModel(robertson, solver=pn.Kvaerno5(),
                        control=pn.StepControl(rtol=1e-6, atol=(1e-8, 1e-14, 1e-8), max_steps=20_000))
    ys = model.solve(model.init(0), np.array([1.0, 0.0, 0.0]), ts).ys

    def rates(t, y):
        return [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                3e7 * y[1] ** 2]
    ref = solve_ivp(rates, (0.0, 1e5), [1.0, 0.0, 0.0], method="Radau", rtol=1e-12, atol=1e-14, t_eval=ts).y.T
    assert np.max(np.abs(ys[1:, 1] - ref[1:, 1]) / ref[1:, 1]) < 1e-4   # y2 to its relative tolerance's order
    np.testing.assert_allclose(ys[:, [0, 2]], ref[:, [0, 2]], atol=1e-6)


@pytest.mark.parametrize("make, error, message", [
    (lambda: pn.StepControl(atol=(1e-8, -1.0)), pn.SpecError,
     r"StepControl atol must be a finite number > 0, or an array of them with the state's shape"),
    (lambda: _model("jax", (1e-8, 1e-8, 1e-8)), pn.SpecError,
     r"StepControl atol has shape \(3,\) but the state has shape \(2,\): give one tolerance per state component"),
    (lambda: _model("julia", ATOL), pn.NotSupportedError,
     r"A per-component StepControl atol is not available on backend 'julia' yet: use backend='jax' or 'torch'"),
    (lambda: pn.ODEBlock(pn.MLP([2, 2]), control=pn.StepControl(atol=ATOL)), pn.SpecError,
     r"A per-component StepControl atol needs a state of known shape; an ODEBlock has none"),
    (lambda: pn.CNF(pn.MLP([2, 2]), control=pn.StepControl(atol=ATOL)), pn.SpecError,
     r"A per-component StepControl atol needs a state of known shape; a pn.CNF has none"),
])
def test_refusals_name_the_fix(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_torch_events_need_one_atol():
    if unavailable_reason("torch"):
        pytest.skip(unavailable_reason("torch"))
    with pytest.raises(pn.NotSupportedError, match="Events on backend 'torch' need one StepControl atol"):
        _model("torch", ATOL).solve_event(np.array([1.0]), Y0[0], event=pn.Event(lambda t, u, p: u[1] + 0.5),
                                          t0=0.0, t1=5.0)
