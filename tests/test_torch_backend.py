"""The PyTorch/torchdiffeq backend on its own: compilation, numbers, gradients, exact counts and failures.

Cross-backend contracts live in ``test_contract_*.py``; this file proves what only the torch backend can show
(its native module, its counters against torch's own hooks, its step sequence against plain diffrax).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")

import pyneuralode as pn  # noqa: E402
from pyneuralode.backends.torch import VectorField, flat_values, load_flat  # noqa: E402

SPIRAL = pn.MLP([2, 50, 2], activation="tanh", input_transform="cube")
SMALL = pn.MLP([2, 8, 2], activation="tanh", time_input=True)
TS = np.linspace(0.0, 0.5, 5)
Y0 = np.array([[1.0, 0.3], [-0.4, 0.8], [0.2, -1.1]])


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def make(field=SMALL, *, solver=None, control=None, adjoint=None, dtype="float64"):
    return pn.ODEModel(field, solver=solver or pn.Dopri5(), control=control or pn.StepControl(rtol=1e-8, atol=1e-10),
                       adjoint=adjoint or pn.DirectAdjoint(), backend="torch", dtype=dtype)


def target_for(model, params, y0, ts, seed=1):
    ys = model.solve(params, y0, ts).ys
    return ys + 0.1 * np.random.default_rng(seed).standard_normal(ys.shape)  # no zero differences under L1


# ----------------------------------------------------------------------------- compilation and layout
def test_native_module_holds_the_flat_vector_in_canonical_order():
    model = make(SPIRAL)
    params = model.init(seed=3)
    module = model.program.field
    assert isinstance(module, torch.nn.Module)
    load_flat(module, params)
    np.testing.assert_array_equal(flat_values(module), params)
    for tensor, expected in zip(module.flat_parameters(), pn.unflatten(SPIRAL, params)):
        assert tuple(tensor.shape) == expected.shape
        np.testing.assert_array_equal(tensor.detach().numpy(), expected)
    assert sum(p.numel() for p in module.parameters()) == model.num_params


def test_native_solves_in_the_model_dtype_whatever_y0s_dtype():
    """A float64 model handed a float32 ``y0`` solved in float32 (error 7e-8 at rtol 1e-12, 1574 evaluations with
    188 rejected steps, a new user's report); it now takes ``y0`` in float64, as JAX's native() and model.solve do,
    and the gradient still reaches the float32 input."""
    model = make(pn.Linear(1, 1, bias=False), control=pn.StepControl(rtol=1e-12, atol=1e-12))
    ode = model.native(np.array([-0.4]))
    y0 = torch.tensor([[1.0]], dtype=torch.float32, requires_grad=True)
    ys = ode(y0, torch.linspace(0.0, 1.0, 3))
    assert ys.dtype == torch.float64
    np.testing.assert_allclose(ys.detach().numpy()[:, 0, 0], np.exp(-0.4 * np.linspace(0.0, 1.0, 3)), rtol=1e-11)
    assert ode.stats == model.solve(np.array([-0.4]), np.array([[1.0]]), np.linspace(0.0, 1.0, 3)).stats
    ys[-1].sum().backward()
    assert y0.grad.dtype == torch.float32 and abs(float(y0.grad) - np.exp(-0.4)) < 1e-6


def test_tsit5_is_diffraxs_tableau_and_takes_jaxs_steps():
    """torchdiffeq has no Tsit5 (the new user's README snippet failed on torch); pyneuralode runs Tsitouras' pair on
    torchdiffeq's adaptive loop. Its tableau equals diffrax's bit for bit; its continuous extension, expanded into
    powers, equals diffrax's factored one at x = 1 (the step's b weights) and at interior points; and a solve takes
    JAX's steps, with outputs (interpolated at the save times) and gradients equal to round-off."""
    tsit5 = pytest.importorskip("diffrax._solver.tsit5")
    import jax
    import jax.numpy as jnp
    from pyneuralode.backends.torch._methods import PNTsit5
    table = tsit5._tsit5_tableau
    assert all(np.array_equal(np.asarray(a), b.numpy()) for a, b in zip(table.a_lower, PNTsit5.tableau.beta))
    for ours, theirs in ((PNTsit5.tableau.alpha, table.c), (PNTsit5.tableau.c_sol, table.b_sol),
                         (PNTsit5.tableau.c_error, table.b_error)):
        np.testing.assert_array_equal(ours.numpy(), theirs)
    k = np.eye(7)[:, None, :]  # one stage at a time: y(x) - y0 = dt * b_i(x) with dt = 1
    for x in (0.3, 0.77, 1.0):
        with jax.enable_x64(True):
            theirs = tsit5._Tsit5Interpolation(t0=0.0, t1=1.0, y0=jnp.zeros((7, 1)), y1=None,
                                               k=jnp.asarray(np.moveaxis(k, -1, 0))).evaluate(x)
        ours = (PNTsit5._dense.numpy() * x ** np.arange(1, 5)).sum(1)
        np.testing.assert_allclose(ours, np.asarray(theirs)[:, 0], rtol=0, atol=2e-14)  # weights up to ~47
    ts, y0 = np.linspace(0.0, 2.0, 7), np.array([[1.0, 0.3], [-0.5, 0.8]])
    loss = pn.MSE(np.zeros((7, 2, 2)))
    out = {}
    for backend in ("jax", "torch"):
        m = pn.ODEModel(SMALL, solver=pn.Tsit5(), control=pn.StepControl(rtol=1e-8, atol=1e-8), backend=backend)
        out[backend] = (m.solve(m.init(0), y0, ts), m.value_and_grad(m.init(0), y0, ts, loss=loss))
    (sol_j, res_j), (sol_t, res_t) = out["jax"], out["torch"]
    assert sol_t.stats == sol_j.stats
    assert rel(sol_t.ys, sol_j.ys) < 1e-13 and rel(res_t.grad_params, res_j.grad_params) < 1e-12


def _numpy_activation(name, x):
    return {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0), "softplus": lambda v: np.logaddexp(v, 0),
            "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "elu": lambda v: np.where(v > 0, v, np.expm1(v)),
            "silu": lambda v: v / (1 + np.exp(-v)), "cube": lambda v: v**3, "rbf": lambda v: np.exp(-v * v),
            "identity": lambda v: v}[name](x)


@pytest.mark.parametrize("activation", pn.ACTIVATIONS)
def test_vector_field_equals_numpy_evaluation_of_the_spec(activation):
    spec = pn.Sequential(pn.Linear(3, 4, time_input=True), pn.Activation(activation), pn.Linear(4, 3, bias=False))
    params = pn.init_params(spec, seed=7)
    w1, b1, w2 = pn.unflatten(spec, params)
    module = VectorField(spec, dtype=torch.float64, device=torch.device("cpu"))
    load_flat(module, params)
    t = 0.7
    y = np.random.default_rng(0).normal(size=(5, 3)) * 3  # large enough to reach softplus's linear regime
    expected = _numpy_activation(activation, np.concatenate([y, np.full((5, 1), t)], 1) @ w1.T + b1) @ w2.T
    with torch.no_grad():
        batched = module(torch.tensor(t, dtype=torch.float64), torch.tensor(y)).numpy()
        single = module(torch.tensor(t, dtype=torch.float64), torch.tensor(y[0])).numpy()
    np.testing.assert_allclose(batched, expected, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(single, expected[0], rtol=1e-13, atol=1e-14)


# ----------------------------------------------------------------------------- numbers
EXP_SPEC = pn.Linear(1, 1, bias=False)  # dy/dt = -0.1 y


@pytest.mark.parametrize("solver,control,bound", [
    (pn.Dopri5(), pn.StepControl(rtol=1e-10, atol=1e-12), 1e-9),
    # one Dopri8 step spans several save times here: the bound is its (diffrax) dense output's accuracy
    (pn.Dopri8(), pn.StepControl(rtol=1e-10, atol=1e-12), 2e-8),
    (pn.Bosh3(), pn.StepControl(rtol=1e-8, atol=1e-10), 1e-6),
    (pn.RK4(), pn.StepControl(dt=0.05), 1e-9),
    (pn.Heun(), pn.StepControl(dt=0.01), 1e-5),
    (pn.Midpoint(), pn.StepControl(dt=0.01), 1e-5),
    (pn.Euler(), pn.StepControl(dt=0.002), 1e-3),
])
@pytest.mark.parametrize("reverse", [False, True])
def test_solve_matches_the_analytic_solution(solver, control, bound, reverse):
    ts = np.linspace(1.0, 8.0, 10)[::-1 if reverse else 1]
    model = make(EXP_SPEC, solver=solver, control=control)
    sol = model.solve(np.array([-0.1]), np.exp(-0.1 * ts[:1]), ts)
    assert sol.ys.shape == (10, 1)
    assert rel(sol.ys[:, 0], np.exp(-0.1 * ts)) < bound
    if not solver.adaptive:  # the shared grid: ceil(|Δt| / dt) equal steps per save interval
        assert sol.stats.steps_accepted == 9 * int(np.ceil((7 / 9) / control.dt - 1e-9))


def test_float32_runs_in_float32_and_stays_accurate():
    model = make(EXP_SPEC, control=pn.StepControl(rtol=1e-5, atol=1e-6), dtype="float32")
    ts = np.linspace(1.0, 8.0, 10)
    sol = model.solve(np.array([-0.1], np.float32), np.exp(-0.1 * ts[:1]), ts)
    assert sol.ys.dtype == np.float32 and model.native().vector_field.flat_parameters()[0].dtype == torch.float32
    assert rel(sol.ys[:, 0], np.exp(-0.1 * ts)) < 1e-4
    res = model.value_and_grad(np.array([-0.1]), np.exp(-0.1 * ts[:1]), ts, loss=pn.MSE(np.zeros((10, 1))))
    assert res.grad_params.dtype == np.float32 and res.grad_y0.dtype == np.float32


def test_batched_solve_equals_row_by_row_solves():
    model = make(SMALL, solver=pn.RK4(), control=pn.StepControl(dt=0.02))  # fixed steps: rows are independent
    params = model.init(seed=1)
    batched = model.solve(params, Y0, TS).ys
    assert batched.shape == (len(TS), *Y0.shape)
    for i, row in enumerate(Y0):
        np.testing.assert_allclose(batched[:, i], model.solve(params, row, TS).ys, rtol=1e-14, atol=1e-15)


def test_single_time_returns_y0_with_no_work():
    model = make(SMALL)
    params = model.init()
    sol = model.solve(params, Y0, TS[:1])
    np.testing.assert_array_equal(sol.ys, Y0[None])
    assert sol.stats.nfe_forward == 0
    res = model.value_and_grad(params, Y0, TS[:1], loss=pn.MSE(np.zeros((1, *Y0.shape))))
    np.testing.assert_allclose(res.grad_y0, 2 * Y0 / Y0.size, rtol=1e-15)
    assert not res.grad_params.any() and res.stats.nfe_forward == 0


# ----------------------------------------------------------------------------- gradients
def _central_differences(fn, x, idx, h=1e-6):
    out = []
    for i in idx:
        e = np.zeros_like(x)
        e.flat[i] = h
        out.append((fn(x + e) - fn(x - e)) / (2 * h))
    return np.array(out)


@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint(rtol=1e-11, atol=1e-12)])
def test_gradients_match_central_finite_differences(adjoint):
    control = pn.StepControl(rtol=1e-11, atol=1e-12)
    model = make(SMALL, control=control, adjoint=adjoint)
    params = model.init(seed=2)
    loss = pn.MSE(target_for(model, params, Y0, TS))
    res = model.value_and_grad(params, Y0, TS, loss=loss)
    assert res.value == pytest.approx(loss(model.solve(params, Y0, TS).ys), rel=1e-12)
    idx = np.arange(0, model.num_params, 7)
    fd_p = _central_differences(lambda p: loss(model.solve(p, Y0, TS).ys), params, idx)
    fd_y = _central_differences(lambda y: loss(model.solve(params, y, TS).ys), Y0, range(Y0.size))
    assert rel(res.grad_params[idx], fd_p) < 1e-6
    assert rel(res.grad_y0.ravel(), fd_y) < 1e-6


def test_backsolve_agrees_with_direct_at_tight_tolerance():
    control = pn.StepControl(rtol=1e-10, atol=1e-10)
    direct = make(SPIRAL, control=control)
    params = direct.init(seed=0)
    loss = pn.L1(target_for(direct, params, Y0, TS))
    a = direct.value_and_grad(params, Y0, TS, loss=loss)
    b = direct.replace(adjoint=pn.BacksolveAdjoint()).value_and_grad(params, Y0, TS, loss=loss)
    assert a.value == b.value
    assert rel(b.grad_params, a.grad_params) < 1e-7
    assert rel(b.grad_y0, a.grad_y0) < 1e-7


# ----------------------------------------------------------------------------- exact counts
class _HookCounter:
    """Counts with torch's own module hooks — a mechanism independent of the backend's counters."""

    def __init__(self, module):
        self.calls = 0
        self.vjps = 0
        self._handles = [module.register_forward_hook(self._on_forward),
                         module.register_full_backward_hook(self._on_backward)]

    def _on_forward(self, module, args, out):
        self.calls += 1

    def _on_backward(self, module, grad_in, grad_out):
        self.vjps += 1

    def close(self):
        for h in self._handles:
            h.remove()


@pytest.mark.parametrize("solver,stages", [(pn.Dopri5(), 6), (pn.Bosh3(), 3)])
def test_forward_and_direct_backward_nfe_are_exact(solver, stages):
    model = make(SPIRAL, solver=solver, control=pn.StepControl(rtol=1e-7, atol=1e-9))
    params = model.init(seed=0)
    loss = pn.L1(target_for(model, params, Y0, TS))
    hooks = _HookCounter(model.program.field)  # the field model.solve/value_and_grad use
    try:
        sol = model.solve(params, Y0, TS)
        assert sol.stats.nfe_forward == hooks.calls
        hooks.calls = 0
        res = model.value_and_grad(params, Y0, TS, loss=loss)
    finally:
        hooks.close()
    st = res.stats
    assert st.nfe_forward == hooks.calls and st.nfe_backward == hooks.vjps
    # FSAL methods: f(t0) and the initial-step probe, then `stages` new evaluations per attempted step ...
    assert st.nfe_forward == 2 + stages * (st.steps_accepted + st.steps_rejected)
    # ... while backprop runs one VJP per evaluation that reaches the loss: f(t0) and the accepted steps' stages.
    assert st.nfe_backward == 1 + stages * st.steps_accepted


@pytest.mark.parametrize("solver,control,per_step", [(pn.RK4(), pn.StepControl(dt=0.05), 4),
                                                     (pn.Euler(), pn.StepControl(dt=0.05), 1)])
def test_fixed_step_counts_are_exact(solver, control, per_step):
    model = make(SMALL, solver=solver, control=control)
    params = model.init()
    loss = pn.L1(target_for(model, params, Y0, TS))
    hooks = _HookCounter(model.program.field)  # the field model.solve/value_and_grad use
    try:
        res = model.value_and_grad(params, Y0, TS, loss=loss)
    finally:
        hooks.close()
    steps = len(TS[1:]) * int(np.ceil(0.125 / 0.05))
    assert res.stats.steps_accepted == steps and res.stats.steps_rejected == 0
    assert res.stats.nfe_forward == per_step * steps == hooks.calls
    assert res.stats.nfe_backward == per_step * steps == hooks.vjps


def test_backsolve_backward_nfe_counts_augmented_evaluations():
    model = make(SPIRAL, control=pn.StepControl(rtol=1e-7, atol=1e-9), adjoint=pn.BacksolveAdjoint())
    params = model.init(seed=0)
    loss = pn.L1(target_for(model, params, Y0, TS))
    hooks = _HookCounter(model.program.field)  # the field model.solve/value_and_grad use
    try:
        res = model.value_and_grad(params, Y0, TS, loss=loss)
    finally:
        hooks.close()
    st = res.stats
    # every augmented-dynamics evaluation calls the field once and takes one VJP of it
    assert st.nfe_forward + st.nfe_backward == hooks.calls
    assert st.nfe_backward == hooks.vjps
    # torchdiffeq solves each save interval separately: 2 evaluations to start each, 6 per attempted step
    intervals = len(TS) - 1
    assert st.nfe_backward == 2 * intervals + 6 * (st.backward_steps_accepted + st.backward_steps_rejected)


def test_seminorm_needs_no_more_backward_evaluations():
    control = pn.StepControl(rtol=1e-8, atol=1e-8)
    model = make(SPIRAL, control=control, adjoint=pn.BacksolveAdjoint())
    params = model.init(seed=0)
    loss = pn.L1(target_for(model, params, Y0, TS))
    full = model.value_and_grad(params, Y0, TS, loss=loss)
    semi = model.replace(adjoint=pn.BacksolveAdjoint(seminorm=True)).value_and_grad(params, Y0, TS, loss=loss)
    assert semi.stats.nfe_backward <= full.stats.nfe_backward
    assert rel(semi.grad_params, full.grad_params) < 1e-5


def test_max_steps_bounds_the_whole_solve_exactly():
    model = make(SPIRAL, solver=pn.Bosh3(), control=pn.StepControl(rtol=1e-8, atol=1e-8))
    params = model.init()
    steps = model.solve(params, Y0, TS).stats.steps
    assert steps > 3 * len(TS)  # many steps per save interval, so a per-interval limit would not fire
    model.replace(control=pn.StepControl(rtol=1e-8, atol=1e-8, max_steps=steps)).solve(params, Y0, TS)
    with pytest.raises(pn.MaxStepsError, match=f"max_steps={steps - 1} "):
        model.replace(control=pn.StepControl(rtol=1e-8, atol=1e-8, max_steps=steps - 1)).solve(params, Y0, TS)
    with pytest.raises(pn.MaxStepsError, match="max_steps=3"):
        make(SMALL, solver=pn.Euler(), control=pn.StepControl(dt=0.01, max_steps=3)).solve(
            make(SMALL).init(), Y0, TS)


# ----------------------------------------------------------------------------- matched step control
def test_steps_match_plain_diffrax_on_the_spiral():
    jax = pytest.importorskip("jax")
    diffrax = pytest.importorskip("diffrax")
    import jax.numpy as jnp
    import optimistix as optx
    from diffrax._step_size_controller.pid import _select_initial_step

    jax.config.update("jax_enable_x64", True)
    # JAX 0.10.2 keeps the conversion of a NumPy constant made while x64 was off (jnp.asarray of diffrax's Dopri5
    # interpolation table, after any float32 JAX test in this process) and hands it out again under x64: the
    # reference's interpolated outputs then carry float32-rounded coefficients (~1e-10). Start from clean caches.
    jax.clear_caches()
    params = pn.init_params(SPIRAL, seed=0)
    w1, b1, w2, b2 = (jnp.asarray(a) for a in pn.unflatten(SPIRAL, params))

    def f(t, y, args):
        return jnp.tanh((y**3) @ w1.T + b1) @ w2.T + b2

    term = diffrax.ODETerm(f)
    ts = np.arange(10) * 0.025
    for name, order in (("Dopri5", 5), ("Bosh3", 3), ("Dopri8", 8)):
        for rtol, atol in ((1e-3, 1e-4), (1e-9, 1e-9)):
            dt0 = _select_initial_step(term, ts[0], jnp.asarray(Y0), None, lambda tm, t, y, a: tm.vf(t, y, a),
                                       order, rtol, atol, optx.rms_norm)
            ref = diffrax.diffeqsolve(
                term, getattr(diffrax, name)(), ts[0], ts[-1], dt0, jnp.asarray(Y0),
                stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0, icoeff=1, dcoeff=0),
                saveat=diffrax.SaveAt(ts=jnp.asarray(ts)), max_steps=4096)
            sol = make(SPIRAL, solver=getattr(pn, name)(), control=pn.StepControl(rtol=rtol, atol=atol)).solve(
                params, Y0, ts)
            assert sol.stats.steps_accepted == int(ref.stats["num_accepted_steps"])
            assert sol.stats.steps_rejected == int(ref.stats["num_rejected_steps"])
            # same steps and the same interpolant (Bosh3: diffrax's cubic Hermite) => the same numbers
            assert rel(sol.ys, np.asarray(ref.ys)) < 1e-12


# ----------------------------------------------------------------------------- failures
def test_blow_up_raises_non_finite_or_solve_error():
    spec = pn.Sequential(pn.Activation("cube"), pn.Linear(1, 1, bias=False))  # dy/dt = y**3 blows up at t=1/(2y0²)
    model = make(spec, control=pn.StepControl(rtol=1e-6, atol=1e-6))
    with pytest.raises(pn.NonFiniteError, match="NaN or infinite"):  # y0**3 overflows at once
        model.solve(np.array([1.0]), np.array([1e120]), np.array([0.0, 2.0]))
    with pytest.raises(pn.NonFiniteError, match="finite-time singularity"):  # finite values, step size -> 0
        model.solve(np.array([1.0]), np.array([1.0]), np.array([0.0, 2.0]))
    fixed = make(spec, solver=pn.RK4(), control=pn.StepControl(dt=0.1))
    with pytest.raises(pn.NonFiniteError):
        fixed.value_and_grad(np.array([1.0]), np.array([3.0]), np.array([0.0, 20.0]), loss=pn.MSE(np.zeros((2, 1))))


def test_unsupported_options_and_devices_are_clear_errors():
    with pytest.raises(pn.NotSupportedError, match="Vern7.*backend='julia'"):
        make(solver=pn.Vern7())
    with pytest.raises(pn.NotSupportedError, match="CheckpointAdjoint"):
        make(adjoint=pn.CheckpointAdjoint())
    if not torch.cuda.is_available():
        model = pn.ODEModel(SMALL, backend="torch", device="cuda")
        with pytest.raises(pn.BackendUnavailable, match="device=None"):
            model.solve(model.init(), Y0, TS)


def test_missing_torch_raises_backend_unavailable_with_the_install_command():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # importlib.util.find_spec now reports torch as absent
        import pyneuralode as pn
        try:
            pn.ODEModel(pn.MLP([2, 2]), backend="torch").solve([0.0] * 6, [1.0, 2.0], [0.0, 1.0])
        except pn.BackendUnavailable as err:
            print("OK", err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("OK"), out.stderr
    assert 'pip install "pyneuralode[torch]"' in out.stdout
