"""API promises found broken by a bad-input campaign: family errors for misuse, one loss shape on every
backend, fields checked at construction, native objects that start where the API starts and count what the API
counts, float64 without global side effects, and compare's round-off floor in float32."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import pyneuralode as pn

from helpers import model, rel_err, spiral_batch, spiral_field

Y0, TS = spiral_batch()
TIGHT = pn.StepControl(rtol=1e-10, atol=1e-10)
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- misuse is a family error
@pytest.mark.parametrize("call, name, hint", [
    (lambda: pn.StepControl(rtoll=1e-3), "StepControl", "did you mean 'rtol'"),
    (lambda: pn.BacksolveAdjoint(semi_norm=True), "BacksolveAdjoint", "did you mean 'seminorm'"),
    (lambda: pn.ODEModel(spiral_field(), solverr=pn.Dopri5()), "ODEModel", "did you mean 'solver'"),
    (lambda: pn.MLP([2, 2], activaton="tanh"), "MLP", "did you mean 'activation'"),
    (lambda: pn.Adam(learning_rate=1e-3), "Adam", "its options are b1, b2, eps, lr"),
    (lambda: pn.Dopri5(order=5), "Dopri5", "it takes no options"),
    (lambda: pn.NLL(kinetics=0.1), "NLL", "did you mean 'kinetic'"),
    (lambda: pn.ODEModel(spiral_field()).replace(dtyp="float32"), "ODEModel", "did you mean 'dtype'"),
    (lambda: pn.datasets.toy_2d("8gaussians", 4, 0, dtpe="float32"), "toy_2d", "did you mean 'dtype'"),
    (lambda: pn.compare(None, params=None, y0=None, ts=None, loss=None, repeat=1), "compare",
     "did you mean 'repeats'"),
    (lambda: pn.ODEModel(spiral_field()).value_and_grad(None, Y0, TS, losss=None), "ODEModel.value_and_grad",
     "did you mean 'loss'"),
    (lambda: pn.Trainer(None, optimizer=pn.Adam(), los=pn.L1), "Trainer", "did you mean 'loss'"),
])
def test_unknown_keyword_options_are_spec_errors_and_type_errors(call, name, hint):
    with pytest.raises(pn.UnknownOptionError, match=rf"^{name} got an unknown option '\w+': .*{hint}") as info:
        call()
    assert isinstance(info.value, pn.SpecError) and isinstance(info.value, TypeError)


def test_negative_seed_is_a_spec_error():
    with pytest.raises(pn.SpecError, match=r"seed must be an integer >= 0 .*got -1"):
        pn.ODEModel(spiral_field()).init(-1)


def test_numpy_numbers_are_accepted_as_options():
    control = pn.StepControl(max_steps=np.int64(100), rtol=np.float32(1e-3), dt0=np.float64(0.1))
    assert control.max_steps == 100 and type(control.max_steps) is int and type(control.rtol) is float
    assert pn.CheckpointAdjoint(checkpoints=np.int32(8)).checkpoints == 8
    with pytest.raises(pn.SpecError, match="max_steps must be a positive integer"):
        pn.StepControl(max_steps=np.float64(100))


# ----------------------------------------------------------------------------- fields
def test_a_field_that_changes_the_state_size_is_refused_at_construction():
    with pytest.raises(pn.SpecError, match=r"The ODEModel field maps shape \(2,\) to \(3,\): an ODE's vector field "
                                           r"must return the shape of its state .*pn.MLP\(\[2, 8, 2\]\)"):
        pn.ODEModel(pn.MLP([2, 8, 3]))


@pytest.mark.parametrize("field_backend", ["jax", "torch"])
def test_residual_field_solves_exactly(field_backend):
    """``f(y) = y + w·y``: ``y(t) = y0·exp((1 + w)·t)``."""
    m = model(pn.Residual(pn.Linear(1, 1, bias=False)), backend=field_backend, control=TIGHT)
    ts = np.linspace(0.0, 1.0, 4)
    sol = m.solve(np.array([-0.5]), np.array([2.0]), ts)
    np.testing.assert_allclose(sol.ys[:, 0], 2.0 * np.exp(0.5 * ts), rtol=1e-8)


def test_unsupported_field_layers_are_refused_with_the_same_words():
    field = pn.ODEBlock(pn.MLP([2, 4, 2]))
    messages = []
    for name in ("jax", "torch"):
        with pytest.raises(pn.NotSupportedError) as info:
            pn.ODEModel(field, backend=name).program
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # one lowering of layers into the graph, for every backend
    assert messages[0].startswith("ODEBlock layers are not available inside a vector field: a field is built from ")
    assert "Residual" in messages[0] and "jax" not in messages[0] and "torch" not in messages[0]


# ----------------------------------------------------------------------------- custom losses see one shape
class FirstComponent(pn.AbstractLoss):
    """Squared error of the first state component only: row structure matters, a mean would hide it."""

    @staticmethod
    def pointwise(xp, diff):
        return diff * diff

    @classmethod
    def evaluate(cls, xp, ys, data):
        return (cls.pointwise(xp, ys - data["target"])[:, 0]).sum()


def test_custom_loss_sees_the_documented_shape_on_every_backend():
    y0, ts = np.array([1.5, -0.5]), np.linspace(0.0, 0.5, 4)  # unbatched
    target = np.zeros((len(ts), 2))
    results = {}
    for name in ("jax", "torch"):
        m = model(spiral_field(), backend=name, control=TIGHT)
        params = m.init(0)
        res = m.value_and_grad(params, y0, ts, loss=FirstComponent(target))
        ys = m.solve(params, y0, ts).ys
        assert res.value == pytest.approx(float((ys[:, 0] ** 2).sum()), rel=1e-12)  # numpy, documented shape
        results[name] = res
        # the gradient with respect to y0 by central differences
        h, fd = 1e-6, np.zeros(2)
        for i in range(2):
            e = np.eye(2)[i] * h
            fd[i] = ((m.solve(params, y0 + e, ts).ys[:, 0] ** 2).sum()
                     - (m.solve(params, y0 - e, ts).ys[:, 0] ** 2).sum()) / (2 * h)
        assert rel_err(res.grad_y0, fd) < 1e-6
    assert rel_err(results["jax"].grad_params, results["torch"].grad_params) < 1e-7


def test_trainer_uses_the_documented_shape_for_custom_losses(backend):
    if backend == "julia":
        pytest.skip("backend 'julia' differentiates pn.L1, pn.MSE and pn.loss functions; an AbstractLoss subclass "
                    "with its own xp kernel is NotSupportedError there")
    y0, ts = np.array([1.5, -0.5]), np.linspace(0.0, 0.5, 4)
    m = model(spiral_field(), backend=backend, control=TIGHT)
    params = m.init(0)
    trainer = pn.Trainer(m, optimizer=pn.SGD(lr=1e-3, momentum=0.0), loss=FirstComponent)
    trainer.init(params)
    target = np.zeros((len(ts), 2))
    info = trainer.step(y0, ts, target)
    res = m.value_and_grad(params, y0, ts, loss=FirstComponent(target))
    assert info.loss == pytest.approx(res.value, rel=1e-12)
    np.testing.assert_allclose(trainer.params, params - 1e-3 * res.grad_params, rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------- native objects
class _Hooks:
    """Independent counters on a torch module: forward calls and backward (VJP) executions."""

    def __init__(self, module):
        self.calls = self.vjps = 0
        self._handles = [module.register_forward_hook(lambda *a: self._call()),
                         module.register_full_backward_hook(lambda *a: self._vjp())]

    def _call(self):
        self.calls += 1

    def _vjp(self):
        self.vjps += 1

    def close(self):
        for h in self._handles:
            h.remove()


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # y0 needs no gradient: hooks still count
@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=lambda a: a.name)
def test_torch_native_ode_starts_from_init_and_counts_like_value_and_grad(adjoint):
    import torch

    m = model(spiral_field(), backend="torch", control=pn.StepControl(rtol=1e-6, atol=1e-8), adjoint=adjoint)
    ode = m.native()
    np.testing.assert_array_equal(ode.params(), m.init(0))
    params = m.init(3)
    ode.load_params(params)
    np.testing.assert_array_equal(ode.params(), params)
    target = np.zeros((len(TS), *Y0.shape))
    res = m.value_and_grad(params, Y0, TS, loss=pn.MSE(target))
    hooks = _Hooks(ode.vector_field)
    try:
        ys = ode(torch.as_tensor(Y0), torch.as_tensor(TS))
        forward_calls = hooks.calls
        assert ode.stats.nfe_forward == res.stats.nfe_forward == forward_calls
        (ys**2).mean().backward()
    finally:
        hooks.close()
    st = ode.stats
    assert (st.nfe_forward, st.nfe_backward) == (res.stats.nfe_forward, res.stats.nfe_backward)
    assert (st.steps_accepted, st.backward_steps_accepted) == (res.stats.steps_accepted,
                                                                res.stats.backward_steps_accepted)
    assert st.nfe_backward == hooks.vjps  # one VJP of the field per backward evaluation, counted independently
    grad = np.concatenate([p.grad.numpy().ravel() for p in ode.vector_field.flat_parameters()])
    assert rel_err(grad, res.grad_params) < 1e-6


def test_torch_native_network_counts_backsolve_backward_work_as_backward():
    import torch

    spec = pn.Sequential(pn.ODEBlock(pn.MLP([3, 8, 3]), control=pn.StepControl(rtol=1e-6, atol=1e-8),
                                     adjoint=pn.BacksolveAdjoint()), pn.Linear(3, 2))
    net = pn.Network(spec, backend="torch", dtype="float64")
    x, labels = np.random.default_rng(0).standard_normal((4, 3)), np.array([0, 1, 1, 0])
    native = net.native()
    np.testing.assert_array_equal(native.params(), net.init(0))
    res = net.value_and_grad(net.init(0), x, labels)
    torch.nn.functional.cross_entropy(native(torch.as_tensor(x)), torch.as_tensor(labels)).backward()
    assert (native.stats.nfe_forward, native.stats.nfe_backward) == (res.stats.nfe_forward, res.stats.nfe_backward)
    assert native.stats.nfe_backward > 0


def test_jax_native_ode_starts_from_init_and_counts_like_value_and_grad():
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    m = model(spiral_field(), backend="jax", control=pn.StepControl(rtol=1e-6, atol=1e-8),
              adjoint=pn.BacksolveAdjoint())
    # float64 in the caller's float32 JAX: refused with the fix (x64 off here whatever earlier tests switched on)
    with jax.enable_x64(False), pytest.raises(pn.SpecError, match=r"jax.config.update\('jax_enable_x64', True\)"):
        m.native()
    target = np.zeros((len(TS), *Y0.shape))
    params = m.init(3)
    res = m.value_and_grad(params, Y0, TS, loss=pn.MSE(target))
    with jax.enable_x64(True):
        ode = m.native()
        np.testing.assert_array_equal(np.asarray(ode.params), m.init(0))
        ode = ode.with_params(params)

        def loss(ode):
            ys, stats = ode.solve(jnp.asarray(Y0), jnp.asarray(TS))
            return jnp.mean(ys**2), stats

        (value, stats), grads = eqx.filter_value_and_grad(loss, has_aux=True)(ode)
        backward = pn.backends.jax.backward_counts(grads.probe)
    assert float(value) == pytest.approx(res.value, rel=1e-12)
    assert int(stats["nfe_forward"]) == res.stats.nfe_forward and not bool(stats["max_steps"])
    assert int(backward["nfe_backward"]) == res.stats.nfe_backward
    assert int(backward["backward_steps_accepted"]) == res.stats.backward_steps_accepted
    assert rel_err(np.asarray(grads.params), res.grad_params) < 1e-10


# ----------------------------------------------------------------------------- float64 without global state
def _assert_fresh_process_prints_ok(script: str) -> None:
    """Run ``script`` in a fresh Python (this checkout importable, x64 not forced on) and require it to print ok."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_float64_model_leaves_the_process_x64_flag_alone():
    """In a fresh process: a float64 model runs in float64, and afterwards the user's JAX is float32 as
    before (``jnp.arange``, a raw float32 diffrax solve), while the model keeps computing in float64."""
    script = textwrap.dedent("""
        import diffrax, jax, jax.numpy as jnp, numpy as np
        import pyneuralode as pn
        m = pn.ODEModel(pn.Linear(1, 1, bias=False), control=pn.StepControl(rtol=1e-12, atol=1e-12))
        ts = np.linspace(0.0, 1.0, 3)
        def err():
            return float(np.max(np.abs(m.solve(np.array([-1.0]), np.array([1.0]), ts).ys[:, 0] - np.exp(-ts))))
        assert err() < 1e-10, err()
        assert jax.config.jax_enable_x64 is False
        assert jnp.arange(3.0).dtype == jnp.float32
        term = diffrax.ODETerm(lambda t, y, args: -y)
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.1, jnp.ones(2))
        assert sol.ys.dtype == jnp.float32 and abs(float(sol.ys[0, 0]) - np.exp(-1)) < 1e-4
        assert err() < 1e-10, err()  # and the model is still float64 afterwards
        print("ok")
    """)
    _assert_fresh_process_prints_ok(script)


def test_numpy_array_met_by_float32_jax_code_is_safe_in_a_float64_model():
    """In a fresh process: the user's float32 diffrax code saves at a NumPy ``ts``; a float64 model first compiled
    afterwards is given the same array. JAX 0.10.2 hands back the float32 device buffer it made for that object,
    and the float64 program failed on the type mismatch (a segmentation fault in the sharded ensemble path)
    until pyneuralode copied every input it is given."""
    script = textwrap.dedent("""
        import diffrax, jax, jax.numpy as jnp, numpy as np
        import pyneuralode as pn
        ts = np.linspace(0.0, 2.0, 20)
        m = pn.ODEModel(pn.MLP([2, 8, 2]), backend="jax")
        p, y0 = m.init(0), np.array([0.5, -0.2])
        m.solve(p, y0, ts.copy())
        def user_float32_solve(y):
            return diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, a: -y), diffrax.Tsit5(), 0.0, 2.0, 0.1, y,
                                       saveat=diffrax.SaveAt(ts=jnp.asarray(ts))).ys
        jax.jit(user_float32_solve)(jnp.ones(2, jnp.float32)).block_until_ready()
        m2 = m.replace(solver=pn.Bosh3())
        again = m2.solve(p, y0, ts).ys
        assert np.array_equal(again, m2.solve(p, y0, ts.copy()).ys)
        print("ok")
    """)
    _assert_fresh_process_prints_ok(script)


# ----------------------------------------------------------------------------- smaller promises
def test_compare_round_off_floor_is_positive_in_float32():
    m = model(spiral_field(), backend="jax", dtype="float32", control=pn.StepControl(rtol=1e-4, atol=1e-6))
    params = m.init(0)
    target = np.zeros((len(TS), *Y0.shape), np.float32)
    report = pn.compare(m, backends=("jax",), params=params, y0=Y0.astype(np.float32),
                        ts=TS.astype(np.float32), loss=pn.L1(target), repeats=1)
    assert report.results[0].grad_round_off > 0


def test_read_only_inputs_do_not_warn_on_torch():
    m = model(spiral_field(), backend="torch", control=pn.StepControl(rtol=1e-4, atol=1e-6))
    params, y0, ts = m.init(0), Y0.copy(), TS.copy()
    for a in (params, y0, ts):
        a.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = m.solve(params, y0, ts)
        m.value_and_grad(params, y0, ts, loss=pn.L1(sol.ys))


def test_package_docs_cite_no_file_users_do_not_have():
    cited = []
    for path in (ROOT / "pyneuralode").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(s in line for s in ("DESIGN.md", "peers.md", "julia-api.md", "julia-review.md", "style.md",
                                       "xla-cpu-conv.md", "shared/reference")):
                cited.append(f"{path.relative_to(ROOT)}:{number}")
    assert not cited
