"""JAX-specific proofs: NFE against independent host counters, the native escape hatch, float64 switching."""

from __future__ import annotations

import re

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
    # Dopri5 with a given dt0: 1 first stage, evaluated once and reused by the retries of a rejected first step,
    # + 6 per step, rejected or not
    assert sol.stats.nfe_forward == counters.forward.count == 1 + 6 * sol.stats.steps
    # torchdiffeq evaluates the first stage once too: the same steps, the same count
    torch_sol = pn.ODEModel(spiral_field(), control=control, backend="torch").solve(model.init(0), Y0, TS)
    assert torch_sol.stats == sol.stats


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
    with jax.enable_x64(True):  # a float64 native object runs in the caller's JAX, which must have x64 on
        native = eqx.tree_at(lambda n: n.params, model.native(), jnp.asarray(params))
        ys = native(jnp.asarray(Y0), jnp.asarray(TS))
        grad = jax.grad(lambda n: jnp.mean(jnp.abs(n(jnp.asarray(Y0), jnp.asarray(TS)))))(native)
    np.testing.assert_allclose(np.asarray(ys), model.solve(params, Y0, TS).ys, rtol=1e-12, atol=1e-12)
    res = model.value_and_grad(params, Y0, TS, loss=pn.L1(np.zeros((len(TS), *Y0.shape))))
    assert rel_err(grad.params, res.grad_params) < 1e-10


def test_native_call_raises_a_failed_solve_and_solve_reports_it():
    """``ode(y0, ts)`` handed back ``inf`` rows for a solve that ran out of steps, silently (a new user's report);
    it now raises with model.solve's words, as the torch native() does (diffrax's throw=True), jitted too, while
    ``ode.solve`` keeps returning the flags (throw=False)."""
    model = pn.ODEModel(pn.Linear(1, 1, bias=False), control=pn.StepControl(rtol=1e-10, atol=1e-10, max_steps=20))
    with pytest.raises(pn.MaxStepsError) as expected:
        model.solve(np.array([-1.0]), np.ones((1, 1)), np.array([0.0, 10.0]))
    with jax.enable_x64(True):
        ode, y0, ts = model.native(np.array([-1.0])), jnp.ones((1, 1)), jnp.array([0.0, 10.0])
        for call in (ode, eqx.filter_jit(ode)):
            with pytest.raises(eqx.EquinoxRuntimeError, match=re.escape(str(expected.value))):
                call(y0, ts)
        ys, stats = ode.solve(y0, ts)
    assert int(stats["failed"]) != 0 and bool(stats["max_steps"])


def test_vector_field_equals_numpy_evaluation():
    field = spiral_field()
    model = pn.ODEModel(field, control=LOOSE)
    params = model.init(3)
    w1, b1, w2, b2 = pn.unflatten(field, params)
    y = np.random.default_rng(0).standard_normal((7, 2))
    expected = np.tanh(y**3 @ w1.T + b1) @ w2.T + b2
    with jax.enable_x64(True):
        got = model.native(params).vector_field(0.0, jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-13, atol=1e-14)


def test_time_input_is_last_feature():
    field = pn.MLP([2, 2], activation=None, time_input=True)
    model = pn.ODEModel(field, control=LOOSE)
    params = model.init(0)
    w, b = pn.unflatten(field, params)
    assert w.shape == (2, 3)
    y = np.array([[0.3, -0.7]])
    with jax.enable_x64(True):
        got = model.native(params).vector_field(jnp.asarray(2.5), jnp.asarray(y))
    np.testing.assert_allclose(np.asarray(got), np.concatenate([y, [[2.5]]], 1) @ w.T + b, rtol=1e-14)


def test_float32_model_computes_in_float32():
    model = pn.ODEModel(spiral_field(), control=LOOSE, dtype="float32")
    sol = model.solve(model.init(0), Y0, TS)
    assert sol.ys.dtype == np.float32 and model.init(0).dtype == np.float32


def _float64(fn):
    """Run ``fn`` with float64 enabled, restoring the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        return fn()
    finally:
        jax.config.update("jax_enable_x64", previous)


def test_group_norm_vjp_matches_autodiff_of_the_definition():
    from pyneuralode.backends.jax._group_norm import group_norm

    def reference(y, w, b, groups):
        g = y.reshape(y.shape[0], groups, -1)
        mean = g.mean(-1, keepdims=True)
        normed = ((g - mean) / jnp.sqrt(((g - mean) ** 2).mean(-1, keepdims=True) + 1e-5)).reshape(y.shape)
        shape = (1, y.shape[1]) + (1,) * (y.ndim - 2)
        return normed * w.reshape(shape) + b.reshape(shape)

    def check():
        rng = np.random.default_rng(0)
        for shape, groups in [((3, 6, 4, 5), 3), ((2, 4, 7), 2), ((2, 6, 3, 3), 1), ((2, 4, 2, 2), 4)]:
            y = jnp.asarray(rng.standard_normal(shape) * 3 + 2)
            w, b = (jnp.asarray(rng.standard_normal(shape[1])) for _ in range(2))
            cotangent = jnp.asarray(rng.standard_normal(shape))
            out, vjp = jax.vjp(lambda *a, g=groups: group_norm(*a, groups=g, eps=1e-5), y, w, b)
            ref_out, ref_vjp = jax.vjp(lambda *a, g=groups: reference(*a, g), y, w, b)
            assert rel_err(out, ref_out) < 1e-12
            for got, want in zip(vjp(cotangent), ref_vjp(cotangent)):
                assert rel_err(got, want) < 1e-12
    _float64(check)


@pytest.mark.parametrize("size,kernel,stride,padding", [(26, 4, 2, 1), (13, 4, 2, 1), (9, 3, 2, 1), (10, 3, 3, 0),
                                                        (11, 5, 2, 2), (8, 1, 2, 0)])
def test_strided_conv_space_to_depth_matches_lax(size, kernel, stride, padding):
    from jax import lax

    from pyneuralode.backends.jax._conv import conv2d_nhwc

    def check():
        rng = np.random.default_rng(1)
        z = jnp.asarray(rng.standard_normal((2, size, size + 1, 3)))
        w = jnp.asarray(rng.standard_normal((kernel, kernel, 3, 4)))
        ref = lambda z, w: lax.conv_general_dilated(z, w, (stride,) * 2, [(padding,) * 2] * 2,
                                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
        out, vjp = jax.vjp(lambda z, w: conv2d_nhwc(z, w, stride=(stride,) * 2, padding=(padding,) * 2), z, w)
        ref_out, ref_vjp = jax.vjp(ref, z, w)
        assert out.shape == ref_out.shape and rel_err(out, ref_out) < 1e-12
        cotangent = jnp.asarray(rng.standard_normal(out.shape))
        for got, want in zip(vjp(cotangent), ref_vjp(cotangent)):
            assert rel_err(got, want) < 1e-12
    _float64(check)


def test_default_checkpoints_cap_large_states_only():
    from pyneuralode.backends.jax._program import MIN_CHECKPOINTS, default_checkpoints
    assert default_checkpoints(4096, jnp.zeros((128, 2), jnp.float32)) == 90  # diffrax's own default for small states
    assert default_checkpoints(4096, jnp.zeros((128, 64, 6, 6), jnp.float32)) == 14  # MNIST ODE-Net: 32 MiB / 2.4 MB
    assert default_checkpoints(4096, jnp.zeros((4096, 64, 32, 32), jnp.float32)) == MIN_CHECKPOINTS
    assert default_checkpoints(4, jnp.zeros((128, 64, 6, 6))) == 2  # never above diffrax's default
    assert default_checkpoints(1, jnp.zeros(2)) == 1


def test_xla_cpu_flag_respects_the_user(monkeypatch):
    from pyneuralode.backends.jax import _xla_cpu
    monkeypatch.setenv("XLA_FLAGS", f"{_xla_cpu.FLAG_NAME}=dot")
    assert not _xla_cpu.configure()  # the user's own choice wins
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("PYNEURALODE_XLA_CPU_CONV", "ynn")
    assert not _xla_cpu.configure()  # opted out
    monkeypatch.delenv("PYNEURALODE_XLA_CPU_CONV")
    assert not _xla_cpu.configure()  # JAX is already running in this test session: too late, left alone
    assert _xla_cpu.FLAG_NAME not in __import__("os").environ["XLA_FLAGS"]
