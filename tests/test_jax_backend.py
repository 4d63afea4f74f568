"""JAX-specific proofs: NFE against independent host counters, the native escape hatch, float64 switching."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends.jax._counting import HostCounter
from pyneuralode.backends.jax._program import JaxProgram

from helpers import rel_err, spiral_batch, spiral_field

Y0, TS = spiral_batch()
LOOSE = pn.StepControl(rtol=1e-3, atol=1e-4)


class Counters:
    """Independent counters: a host callback per forward evaluation and one per VJP of the field."""

    def __init__(self):
        self.forward, self.vjp = HostCounter(), HostCounter()

    def instrument(self, field):
        forward_counted = self.forward.wrap(field)

        @jax.custom_vjp
        def counted(params, t, y):
            return forward_counted(params, t, y)

        def fwd(params, t, y):
            out, vjp = jax.vjp(forward_counted, params, t, y)
            return out, vjp

        def bwd(vjp, cotangent):
            jax.debug.callback(self.vjp._tick, cotangent)
            return vjp(cotangent)

        counted.defvjp(fwd, bwd)
        return counted


def _program(**kwargs):
    counters = Counters()
    model = pn.ODEModel(spiral_field(), **{"control": LOOSE, **kwargs})
    return model, JaxProgram(model, instrument=counters.instrument), counters


@pytest.mark.parametrize("solver, control", [
    (pn.Dopri5(), LOOSE), (pn.Dopri5(), pn.StepControl(rtol=1e-3, atol=1e-4, dt0=0.01)),
    (pn.Tsit5(), LOOSE), (pn.Bosh3(), LOOSE), (pn.Dopri8(), pn.StepControl(rtol=1e-8, atol=1e-8)),
    (pn.Euler(), pn.StepControl(dt=0.05)), (pn.Midpoint(), pn.StepControl(dt=0.05)),
    (pn.Heun(), pn.StepControl(dt=0.05)), (pn.RK4(), pn.StepControl(dt=0.05)),
], ids=lambda v: repr(v) if not isinstance(v, pn.StepControl) else f"dt0={v.dt0},dt={v.dt}")
def test_forward_nfe_equals_independent_counter(solver, control):
    model, program, counters = _program(solver=solver, control=control)
    sol = program.solve(model.init(0), Y0, TS)
    assert sol.stats.nfe_forward == counters.forward.count
    assert sol.stats.steps_accepted > 0


def test_forward_nfe_counts_rejected_steps():
    """A large first step is rejected; rejected steps cost evaluations too."""
    control = pn.StepControl(rtol=1e-8, atol=1e-8, dt0=1.0)
    model, program, counters = _program(control=control)
    sol = program.solve(model.init(0), Y0, TS)
    assert sol.stats.steps_rejected > 0
    # Dopri5 with a given dt0: 1 first stage + 6 per step + 1 per rejected step (the first stage is redone)
    assert sol.stats.nfe_forward == counters.forward.count == 1 + 6 * sol.stats.steps + sol.stats.steps_rejected


@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.CheckpointAdjoint()], ids=repr)
def test_backward_nfe_equals_vjp_counter(adjoint):
    model, program, counters = _program(adjoint=adjoint)
    target = np.zeros((len(TS), *Y0.shape))
    res = program.value_and_grad(model.init(0), Y0, TS, pn.L1(target))
    assert res.stats.nfe_backward == counters.vjp.count > 0


def test_backsolve_backward_nfe_equals_counter():
    model, program, counters = _program(adjoint=pn.BacksolveAdjoint())
    target = np.zeros((len(TS), *Y0.shape))
    res = program.value_and_grad(model.init(0), Y0, TS, pn.L1(target))
    # every augmented-dynamics evaluation is one VJP of the field (and one forward evaluation inside it)
    assert res.stats.nfe_backward == counters.vjp.count > 0
    assert counters.forward.count == res.stats.nfe_forward + res.stats.nfe_backward
    assert res.stats.backward_steps_accepted >= len(TS) - 1


def test_native_module_is_differentiable_and_matches_solve():
    model = pn.ODEModel(spiral_field(), control=LOOSE)
    params = model.init(0)
    native = eqx.tree_at(lambda n: n.params, model.native(), jnp.asarray(params))
    ys = native(jnp.asarray(Y0), jnp.asarray(TS))
    np.testing.assert_allclose(np.asarray(ys), model.solve(params, Y0, TS).ys, rtol=1e-12, atol=1e-12)
    grad = jax.grad(lambda n: jnp.mean(jnp.abs(n(jnp.asarray(Y0), jnp.asarray(TS)))))(native)
    res = model.value_and_grad(params, Y0, TS, loss=pn.L1(np.zeros((len(TS), *Y0.shape))))
    assert rel_err(grad.params, res.grad_params) < 1e-10


def test_vector_field_equals_numpy_evaluation():
    field = spiral_field()
    model = pn.ODEModel(field, control=LOOSE)
    params = model.init(3)
    w1, b1, w2, b2 = pn.unflatten(field, params)
    y = np.random.default_rng(0).standard_normal((7, 2))
    expected = np.tanh(y**3 @ w1.T + b1) @ w2.T + b2
    native = eqx.tree_at(lambda n: n.params, model.native(), jnp.asarray(params))
    got = native.vector_field(0.0, jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-13, atol=1e-14)


def test_time_input_is_last_feature():
    field = pn.MLP([2, 3], activation=None, time_input=True)
    model = pn.ODEModel(field, control=LOOSE)
    params = model.init(0)
    w, b = pn.unflatten(field, params)
    assert w.shape == (3, 3)
    y = np.array([[0.3, -0.7]])
    got = pn.ODEModel(field).native().program.field(jnp.asarray(params), jnp.asarray(2.5), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), np.concatenate([y, [[2.5]]], 1) @ w.T + b, rtol=1e-14)


def test_float32_model_computes_in_float32():
    model = pn.ODEModel(spiral_field(), control=LOOSE, dtype="float32")
    sol = model.solve(model.init(0), Y0, TS)
    assert sol.ys.dtype == np.float32 and model.init(0).dtype == np.float32
