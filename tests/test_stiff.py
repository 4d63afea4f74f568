"""Stiff solvers on Robertson's kinetics: exact NFE without host callbacks, SciPy's Radau as the reference,
gradients w.r.t. log k against central differences, parameter recovery, and the explicit-solver failure.

One compiled model per solver is shared by the tests (module-scoped), on one coarse save grid.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends._registry import REGISTRY
from pyneuralode.backends.jax._counting import HostCounter
from pyneuralode.backends.jax._diffrax import hairer_initial_step, make_solver
from pyneuralode.backends.jax._program import JaxProgram
from pyneuralode.problems import robertson as rob

pytest.importorskip("scipy")

JAX_STIFF = sorted(n for n in pn._solvers.STIFF_SOLVERS if n in REGISTRY["jax"].solvers)
TS = rob.robertson_times(11)                       # 0 and 11 log-spaced saves on [1e-5, 1e5]
SHORT = rob.robertson_times(11, t1=1e-2)           # same shape, a short span for the host-counted tests
Y0 = rob.initial_state()
TRUE = rob.log_rates()
CONTROL = {"ImplicitEuler": pn.StepControl(rtol=1e-5, atol=1e-8, max_steps=100_000)}
DEFAULT = pn.StepControl(rtol=1e-7, atol=1e-10, max_steps=20_000)


def _model(name, **kwargs):
    return pn.ODEModel(rob.robertson_dynamics(), solver=getattr(pn, name)(), control=CONTROL.get(name, DEFAULT),
                       backend="jax", dtype="float64", **kwargs)


@pytest.fixture(scope="module")
def models():
    return {}


def _shared(models, name):
    if name not in models:
        models[name] = _model(name)
    return models[name]


@pytest.fixture(scope="module")
def reference():
    return rob.reference_solution(TS)


def test_robertson_dynamics_is_the_chemistry():
    """The traced field called on numpy (its reference implementation) against the rate equations."""
    y = np.array([0.7, 2e-5, 0.3])
    k1, k2, k3 = rob.RATES
    expected = np.array([-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2],
                         k2 * y[1] ** 2]) / rob.SCALE
    field = rob.robertson_dynamics()
    out = field.evaluate(TRUE, 0.0, y / rob.SCALE)
    np.testing.assert_allclose(out, expected, rtol=1e-13)


@pytest.mark.parametrize("name", JAX_STIFF)
def test_implicit_nfe_is_exact(name):
    """The in-graph count equals an independent host-callback counter (accepted and rejected steps alike)."""
    counter = HostCounter()
    program = JaxProgram(_model(name), instrument=counter.wrap)
    sol = program.solve(TRUE, Y0, SHORT)
    assert sol.stats.steps_accepted > 0
    assert sol.stats.nfe_forward == counter.count


def test_count_evaluations_false_solves_the_same_and_reports_no_count():
    """``count_evaluations=False`` takes the counted solve's steps and values, and its gradient, and reports the
    evaluation count as not taken (``None``; -1 in an ensemble's arrays) rather than estimating it."""
    counted_model = _model("Kvaerno5")
    model = counted_model.replace(solver=pn.Kvaerno5(count_evaluations=False))
    assert repr(model.solver) == "Kvaerno5(count_evaluations=False)"
    loss = pn.MSE(np.full((len(SHORT), 3), 0.3))
    a, b = counted_model.solve(TRUE, Y0, SHORT), model.solve(TRUE, Y0, SHORT)
    assert b.stats.nfe_forward is None and a.stats.nfe_forward > 0
    assert (b.stats.steps_accepted, b.stats.steps_rejected) == (a.stats.steps_accepted, a.stats.steps_rejected)
    np.testing.assert_array_equal(b.ys, a.ys)
    ga, gb = counted_model.value_and_grad(TRUE, Y0, SHORT, loss=loss), model.value_and_grad(TRUE, Y0, SHORT, loss=loss)
    assert gb.stats.nfe_forward is None and gb.value == ga.value
    np.testing.assert_array_equal(gb.grad_params, ga.grad_params)
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-3), loss=pn.MSE)  # the same counts as value_and_grad
    trainer.init(TRUE)
    info = trainer.step(Y0, SHORT, np.full((len(SHORT), 3), 0.3))
    assert info.loss == gb.value and info.stats == gb.stats  # nfe_backward: None under DirectAdjoint, as there
    ens = model.solve_ensemble(np.stack([TRUE, TRUE + 0.01]), Y0, SHORT)
    assert ens.nfe_forward.tolist() == [-1, -1] and ens.stats[0].nfe_forward is None
    assert ens.stats[0].steps == a.stats.steps
    with pytest.raises(pn.SpecError, match="takes True or False"):
        pn.Kvaerno5(count_evaluations="no")


def test_comparison_marks_an_uncounted_nfe_difference():
    """A pair where one side did not count its evaluations prints "–" for the difference, not a number."""
    from pyneuralode._compare import BackendResult, Comparison, pair_differences
    z = np.zeros(2)
    rows = tuple(BackendResult(name, 1.0, nfe, 0, 3, 1, 1e-3, 0.0, z, z, z) for name, nfe in (("a", 40), ("b", None)))
    (pair,) = pair_differences(rows)
    assert pair.nfe_forward is None
    table = str(Comparison("t", rows, (pair,), {}))
    assert "a vs b" in table and table.splitlines()[-1].split()[-2] == "–"


PI = pn.StepControl(rtol=1e-7, atol=1e-10, max_steps=20_000, pcoeff=0.2, icoeff=0.3)


@pytest.mark.parametrize("name, control", [("Kvaerno5", None), ("ImplicitEuler", None), ("Kvaerno5", PI)],
                         ids=["Kvaerno5", "ImplicitEuler", "Kvaerno5-PI"])
def test_counting_changes_no_step_and_no_value(name, control):
    """The counted solve takes diffrax's own steps and returns its values bit for bit (same initial step), with
    the integral controller and with a PI one (``pcoeff``/``icoeff`` reach diffrax's ``PIDController``)."""
    model = _model(name) if control is None else _model(name).replace(control=control)
    program = model.program
    control = model.control
    field = program.field

    @jax.jit
    def raw(params):
        fn = lambda t, y, p: field(p, t, y)  # noqa: E731
        dt0, _ = hairer_initial_step(lambda t, y: fn(t, y, params), ts[0], y0, 1.0, order=model.solver.order,
                                     rtol=control.rtol, atol=control.atol, norm=_rms)
        controller = diffrax.PIDController(rtol=control.rtol, atol=control.atol, pcoeff=control.pcoeff,
                                           icoeff=control.icoeff, dcoeff=0.0, safety=control.safety, factormin=control.factormin,
                                           factormax=control.factormax, norm=_rms)
        sol = diffrax.diffeqsolve(diffrax.ODETerm(fn), make_solver(model.solver), ts[0], ts[-1], dt0, y0,
                                  args=params, saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                  max_steps=control.max_steps, throw=False)
        return sol.ys, sol.stats["num_steps"]

    with jax.enable_x64(True):  # the model is float64; plain JAX code computes in float32 unless told
        y0, ts = jnp.asarray(Y0[None]), jnp.asarray(SHORT)
        ys_raw, steps_raw = raw(jnp.asarray(TRUE))
    sol = model.solve(TRUE, Y0, SHORT)
    assert sol.stats.steps == int(steps_raw)
    # bit for bit at XLA's default optimisation level; `make test` compiles at level 0 (it halves the suite's
    # compile time), where the two programs' arithmetic may be fused differently: a few ulps of the state's
    # scale (the species sum to 1)
    np.testing.assert_allclose(sol.ys, np.asarray(ys_raw)[:, 0], rtol=0, atol=8 * np.finfo(np.float64).eps)


def test_pi_controller_halves_kvaerno5_steps_on_robertson(models, reference):
    """Kvaerno5's integral controller rejects about half its steps on Robertson; a PI controller (pcoeff=0.2,
    icoeff=0.3) takes fewer steps in all and stays within the tolerance of SciPy's Radau reference."""
    integral = _shared(models, "Kvaerno5").solve(TRUE, Y0, TS)
    pi = _model("Kvaerno5").replace(control=PI).solve(TRUE, Y0, TS)
    assert integral.stats.steps_rejected > 0.3 * integral.stats.steps
    assert pi.stats.steps < 0.75 * integral.stats.steps, (pi.stats, integral.stats)
    scale = PI.atol + PI.rtol * np.abs(reference)
    assert np.max(np.abs(pi.ys - reference) / scale) < 30


@pytest.mark.parametrize("backend", ["torch", "julia"])
def test_pi_controller_is_refused_where_it_is_not_wired(backend):
    with pytest.raises(pn.NotSupportedError, match=r"PI step-size controller\) is not available on backend"):
        pn.ODEModel(pn.MLP([2, 4, 2]), control=pn.StepControl(pcoeff=0.2, icoeff=0.3), backend=backend)


@pytest.mark.parametrize("kwargs, match", [({"pcoeff": -0.1}, "pcoeff must be a finite number >= 0"),
                                           ({"icoeff": 0}, "icoeff must be a finite number > 0"),
                                           ({"icoeff": float("nan")}, "icoeff must be a finite number > 0")])
def test_controller_coefficients_are_checked(kwargs, match):
    with pytest.raises(pn.SpecError, match=match):
        pn.StepControl(**kwargs)


def _rms(x):
    import optimistix as optx
    return optx.rms_norm(x)


@pytest.mark.parametrize("name", JAX_STIFF)
def test_forward_matches_radau(models, reference, name):
    """Every JAX stiff solver against SciPy's Radau (rtol=1e-12, atol=1e-14) over [1e-5, 1e5], within its
    tolerance: the largest error, in units of the local tolerance ``atol + rtol |y|``, is O(1)."""
    model = _shared(models, name)
    sol = model.solve(TRUE, Y0, TS)
    scale = model.control.atol + model.control.rtol * np.abs(reference)
    worst = np.max(np.abs(sol.ys - reference) / scale)
    bound = 300 if name == "ImplicitEuler" else 30  # first order: the global error grows as the steps add up
    assert worst < bound, f"{name}: error {worst:.1f} local tolerances"


def _loss(ys, target):
    return float(np.mean((ys - target) ** 2))


@pytest.mark.slow
@pytest.mark.parametrize("name", JAX_STIFF)
def test_gradient_wrt_log_rates_matches_central_differences(models, reference, name):
    """d loss / d log k through the implicit solve (DirectAdjoint: exact gradient of the discrete solve) against
    central differences of the solve itself."""
    model = _shared(models, name)
    target = reference * 1.01
    res = model.value_and_grad(TRUE, Y0, TS, loss=pn.MSE(target))
    assert res.value == pytest.approx(_loss(res.ys, target), rel=1e-12)
    h = 1e-4
    fd = np.array([(_loss(model.solve(TRUE + h * e, Y0, TS).ys, target)
                    - _loss(model.solve(TRUE - h * e, Y0, TS).ys, target)) / (2 * h) for e in np.eye(3)])
    tol = 2e-2 if name == "ImplicitEuler" else 1e-3
    np.testing.assert_allclose(res.grad_params, fd, rtol=tol, atol=tol * np.max(np.abs(fd)))


def test_explicit_solver_fails_fast_naming_stiff_solvers():
    model = pn.ODEModel(rob.robertson_dynamics(), solver=pn.Dopri5(),
                        control=pn.StepControl(rtol=1e-6, atol=1e-9, max_steps=2000), backend="jax",
                        dtype="float64")
    with pytest.raises(pn.MaxStepsError, match=r"max_steps=2000.*Kvaerno5"):
        model.solve(TRUE, Y0, TS)


def _kencarp_steps(name):
    """One float64 step of h = 0.1 on the harmonic oscillator, ``(value, error estimate)``: ours on the whole
    field, then diffrax's IMEX pair with a zero explicit part."""
    import optimistix as optx

    from pyneuralode.backends.jax import _implicit
    from pyneuralode.backends.jax._x64 import x64_scope

    field = diffrax.ODETerm(lambda t, y, args: jnp.stack([y[1], -y[0]]))
    pair = diffrax.MultiTerm(diffrax.ODETerm(lambda t, y, args: jnp.zeros_like(y)), field)
    newton = optx.Newton(rtol=1e-14, atol=1e-14)

    def step(solver, term):
        t0, h, y0 = jnp.array(0.0), jnp.array(0.1), jnp.array([1.0, 0.0])
        state = solver.init(term, t0, h, y0, None)
        y1, err, *_ = solver.step(term, t0, h, y0, None, state, made_jump=False)
        return np.asarray(y1), np.asarray(err)

    with x64_scope("float64"):
        return (step(getattr(_implicit, name)(root_finder=newton), field),
                step(getattr(diffrax, name)(root_finder=newton), pair))


@pytest.mark.parametrize("name", ["KenCarp3", "KenCarp4", "KenCarp5"])
def test_kencarp_is_diffrax_imex_pair_with_a_zero_explicit_part(name):
    """Our KenCarp step is diffrax's IMEX step with a zero explicit term (value bit for bit, error estimate to
    round-off), and only KenCarp5's embedded solution meets the linear order condition of its main order: the
    documented reason its error estimate is too small on linear fields."""
    import math

    ours, theirs = _kencarp_steps(name)
    assert ours[0].dtype == np.float64
    np.testing.assert_array_equal(ours[0], theirs[0])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-8, atol=1e-22)

    tableau = getattr(diffrax, name).tableau.tableaus[1]
    stages = len(tableau.b_sol)
    a = np.zeros((stages, stages))
    for i, row in enumerate(tableau.a_lower):
        a[i + 1, :len(row)] = row
    a[1:, 1:] += np.diag(tableau.a_diagonal[1:])
    embedded = np.asarray(tableau.b_sol) - np.asarray(tableau.b_error)
    order = int(name[-1])
    # b^T A^(k-1) 1 = 1/k! for k <= p is the order-p condition on y' = λy
    residual = abs(embedded @ np.linalg.matrix_power(a, order - 1) @ np.ones(stages) - 1 / math.factorial(order))
    if name == "KenCarp5":
        assert residual < 1e-7
    else:
        assert residual > 1e-5


@pytest.mark.parametrize("name", ["ImplicitEuler", "Kvaerno3", "KenCarp5"])
def test_torch_refuses_stiff_solvers_naming_jax_and_julia(name):
    with pytest.raises(pn.NotSupportedError, match=rf"{name}\(\) is not available on backend 'torch': use "
                                                   r"backend='jax' or 'julia'"):
        pn.ODEModel(rob.robertson_dynamics(), solver=getattr(pn, name)(), backend="torch")


def _fit_log_rates(model, data, start):
    """L-BFGS (SciPy's) on ``log k`` with pyneuralode's loss and gradient — the same loop on every backend (Julia
    has no native Trainer); the optimiser is the UDE recipe's second stage (Rackauckas et al. 2020)."""
    from scipy.optimize import minimize

    def value_and_grad(p):
        res = model.value_and_grad(p, Y0, TS, loss=pn.MSE(data))
        return res.value, res.grad_params

    return minimize(value_and_grad, start, jac=True, method="L-BFGS-B", options={"maxiter": 40}).x


PERTURB = 0.3 * np.array([1.0, -1.0, 1.0])


def _check_recovery(model):
    """From log k off by 0.3 in each rate, 1%-noisy data: the fit lands within 0.05 of the truth (the noise
    floor of 12 observations; the start is 6x further)."""
    data = rob.noisy_data(TS, noise=0.01, seed=0)
    fitted = _fit_log_rates(model, data, TRUE + PERTURB)
    assert np.max(np.abs(fitted - TRUE)) < 0.05, fitted - TRUE


@pytest.mark.slow
def test_parameter_estimation_recovers_log_rates(models):
    _check_recovery(_shared(models, "Kvaerno5"))


@pytest.mark.julia
@pytest.mark.parametrize("name", ["Rodas5P", "KenCarp4", "FBDF"])
def test_parameter_estimation_on_julia(jl, name):
    model = pn.ODEModel(rob.robertson_dynamics(), solver=getattr(pn, name)(), control=DEFAULT, backend="julia",
                        dtype="float64")
    _check_recovery(model)


@pytest.mark.julia
@pytest.mark.parametrize("name", ["Rodas5P", "KenCarp4", "FBDF", "Kvaerno5"])
def test_julia_forward_matches_radau(jl, reference, name):
    model = pn.ODEModel(rob.robertson_dynamics(), solver=getattr(pn, name)(), control=DEFAULT, backend="julia",
                        dtype="float64")
    sol = model.solve(TRUE, Y0, TS)
    scale = DEFAULT.atol + DEFAULT.rtol * np.abs(reference)
    assert np.max(np.abs(sol.ys - reference) / scale) < 30


@pytest.mark.slow
def test_stiff_command_runs_resumes_and_draws(tmp_path):
    """``pyneuralode stiff`` end to end, tiny: metrics, checkpoint, PNG; ``--resume`` continues to a longer
    budget; the fit moves towards the truth."""
    from pyneuralode.cli import main

    out = tmp_path / "run"
    args = ["stiff", "--points", "8", "--eval-every", "1", "--out", str(out), "--no-progress"]
    assert main([*args, "--iters", "2"]) == 0
    assert main([*args, "--iters", "3", "--resume"]) == 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["iteration"] for r in metrics["records"]] == [1, 2, 3]
    assert (out / "robertson.png").stat().st_size > 10_000 and (out / "checkpoint.npz").exists()
    assert metrics["summary"]["log_k_error"] < 0.5 + 1e-9 or metrics["records"][-1]["loss"] < \
        metrics["records"][0]["loss"]


def _hires_rhs(y, k):
    y1, y2, y3, y4, y5, y6, y7, y8 = y
    return [-1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
            -10.03 * y3 + 0.43 * y4 + 0.035 * y5, 8.32 * y2 + 1.71 * y3 - 1.12 * y4,
            -1.745 * y5 + 0.43 * y6 + 0.43 * y7, -k * y6 * y8 + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
            k * y6 * y8 - 1.81 * y7, -k * y6 * y8 + 1.81 * y7]


@pn.dynamics(state=8, params={"k": 280.0})
def hires(t, y, p):
    return np.stack(_hires_rhs([y[i] for i in range(8)], p.k))


@pytest.mark.parametrize("solver, control", [
    ("KenCarp4", pn.StepControl(rtol=1e-8, atol=1e-10, max_steps=20_000)),
    ("Kvaerno5", pn.StepControl(rtol=1e-8, atol=1e-10, max_steps=20_000, pcoeff=0.2, icoeff=0.3)),
], ids=["KenCarp4", "Kvaerno5-PI"])
def test_hires_against_radau(solver, control):
    """HIRES (Hairer & Wanner's eight-species photomorphogenesis problem, DiffEqProblemLibrary's ``prob_ode_hires``),
    written as its equations, against SciPy's Radau at rtol 1e-12 at the standard end time 321.8122."""
    from scipy.integrate import solve_ivp
    y0, ts = np.array([1, 0, 0, 0, 0, 0, 0, 0.0057]), np.array([0.0, 10.0, 100.0, 321.8122])
    reference = solve_ivp(lambda t, y: _hires_rhs(y, 280.0), (0.0, ts[-1]), y0, method="Radau", rtol=1e-12,
                          atol=1e-14, t_eval=ts).y.T
    m = pn.ODEModel(hires, solver=getattr(pn, solver)(), control=control, backend="jax")
    sol = m.solve(m.init(0), y0, ts)
    worst = np.max(np.abs(sol.ys - reference) / (control.atol + control.rtol * np.abs(reference)))
    assert worst < 30, f"{solver}: error {worst:.1f} local tolerances"
