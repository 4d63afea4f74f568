"""``pn.LBFGS`` on the host (backend "julia": value_and_grad in Julia, the iteration in NumPy with SciPy's line search).

Everything here runs without Julia: the two-loop recursion against the explicit BFGS matrix, one iteration from a
known state against a hand computation, convergence on Rosenbrock's function, the trainer's state round trip and
its failures, and ``pn.Trainer`` with ``pn.LBFGS`` on a julia-backend model whose program runs on the stand-in
PyNeuralODEJL of :mod:`test_julia_loss` (the exact linear ODE): it reaches the minimum of the same convex
least-squares fit that tests/test_optim.py fits on JAX and torch (and on Julia, where Julia exists).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.train._host import HostTrainer
from pyneuralode.train._host_lbfgs import first_direction, lbfgs_step, new_state, two_loop

from test_julia_loss import TS, W_TRUE, Y0, StandIn, _exact, relative_mse, stand_in_model

optimize = pytest.importorskip("scipy.optimize", reason="pn.LBFGS on the host needs SciPy: pip install scipy")
rosen, rosen_der = optimize.rosen, optimize.rosen_der


def _step(f, x, state, **options):
    value, grad = f(x)
    return lbfgs_step(f, x, value, grad, state, **{"memory_size": 10, "max_linesearch_steps": 25, **options})


def _bfgs_inverse(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The L-BFGS inverse Hessian written out: ``H₀ = γ I`` (γ from the newest pair), then the BFGS update
    ``H ← (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ`` for each pair, oldest first (Nocedal & Wright eq. 7.19)."""
    n = s.shape[1]
    h = (s[-1] @ y[-1]) / (y[-1] @ y[-1]) * np.eye(n)
    for si, yi in zip(s, y):
        rho = 1.0 / (yi @ si)
        v = np.eye(n) - rho * np.outer(yi, si)
        h = v.T @ h @ v + rho * np.outer(si, si)
    return h


def test_two_loop_is_the_bfgs_inverse_hessian():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    a = a @ a.T + 5 * np.eye(5)  # SPD: every pair has sᵀy > 0
    s = rng.standard_normal((3, 5))
    y = s @ a.T
    g = rng.standard_normal(5)
    np.testing.assert_allclose(two_loop(g, s, y), _bfgs_inverse(s, y) @ g, rtol=1e-12, atol=1e-12)


def test_first_iteration_by_hand():
    """f = ½|x − t|², x = 0: g = −t, d = −g·min(1, 1/‖g‖₁) = t/7 for t = (3, −4). The unit step meets both Wolfe
    conditions (f drops from 12.5 to 12.5·(6/7)²; |g₁ᵀd| / |g₀ᵀd| = 6/7 ≤ 0.9), so it is taken after ONE trial and
    the pair (s, y) = (t/7, t/7) is stored."""
    t = np.array([3.0, -4.0])

    def f(x):
        return 0.5 * float((x - t) @ (x - t)), x - t

    np.testing.assert_array_equal(first_direction(-t), t / 7)
    x, state, trials = _step(f, np.zeros(2), new_state(2, 10))
    np.testing.assert_allclose(x, t / 7, rtol=1e-15)
    assert trials == 1 and int(state["pairs"]) == 1
    np.testing.assert_allclose(state["s"][-1], t / 7, rtol=1e-15)
    np.testing.assert_allclose(state["y"][-1], t / 7, rtol=1e-15)
    assert not np.any(state["s"][:-1])


def test_step_with_exact_curvature_lands_on_the_minimum():
    """f = ½ xᵀAx − bᵀx with A = diag(1, 4) and the conjugate pairs s = e₁, e₂ (y = A s): the two-loop H is A⁻¹, so
    the direction is Newton's, the unit step lands on A⁻¹b and passes the Wolfe test at once (one trial)."""
    a, b = np.diag([1.0, 4.0]), np.array([1.0, 2.0])

    def f(x):
        return 0.5 * float(x @ a @ x) - float(b @ x), a @ x - b

    state = new_state(2, 3)
    state["s"][1:], state["y"][1:], state["pairs"] = np.eye(2), a, np.array(2)
    x0 = np.array([3.0, -1.0])
    x, new, trials = _step(f, x0, state, memory_size=3)
    np.testing.assert_allclose(x, [1.0, 0.5], rtol=1e-14)
    assert trials == 1 and int(new["pairs"]) == 3
    np.testing.assert_allclose(new["s"][-1], x - x0, rtol=1e-14)
    np.testing.assert_allclose(new["y"][-1], a @ (x - x0), rtol=1e-14)
    np.testing.assert_array_equal(state["s"][1:], np.eye(2))  # the input state is left as it was


def test_memory_keeps_the_newest_pairs():
    def f(x):
        return float(np.sum(np.cosh(x))), np.sinh(x)

    x, state = np.array([2.0, -1.5, 0.7]), new_state(3, 2)
    for _ in range(3):
        x, state, _ = _step(f, x, state, memory_size=2)
    assert int(state["pairs"]) == 2 and state["s"].shape == (2, 3)


def test_converges_on_rosenbrock():
    """From the classic start (−1.2, 1): the minimum (1, 1) to 1e-10 within 60 iterations (SciPy's own BFGS takes
    about 35), and each iteration's trials stay within max_linesearch_steps."""
    def f(x):
        return rosen(x), rosen_der(x)

    x, state = np.array([-1.2, 1.0]), new_state(2, 10)
    for _ in range(60):
        x, state, trials = _step(f, x, state, max_linesearch_steps=5)
        assert 0 <= trials <= 5
    np.testing.assert_allclose(x, [1.0, 1.0], rtol=0, atol=1e-10)


def test_a_failed_trial_backs_off():
    """A trial whose solve fails counts as an infinite loss: the search shortens the step instead of raising."""
    t = np.array([3.0, -4.0])
    calls = []

    def f(x):
        calls.append(x)
        if len(calls) == 2:  # the unit-step trial
            raise pn.MaxStepsError("forward solve reached max_steps")
        return 0.5 * float((x - t) @ (x - t)), x - t

    x, state, trials = _step(f, np.zeros(2), new_state(2, 10))
    assert trials >= 2 and 0 < np.linalg.norm(x) < np.linalg.norm(t / 7)
    assert 0.5 * (x - t) @ (x - t) < 12.5


def test_no_wolfe_point_keeps_the_best_trial_and_restarts():
    """With one trial allowed and a unit step that fails Armijo, no step is accepted: the parameters stay (no trial
    lowered the loss) and the curvature pairs are dropped."""
    def f(x):
        return float(np.sum(x**4) + 10 * np.sum(x**2)), 4 * x**3 + 20 * x

    state = new_state(1, 4)
    state["s"][-1], state["y"][-1], state["pairs"] = [1e-3], [1e-5], np.array(1)  # a wildly long H
    x, new, trials = _step(f, np.array([1.0]), state, max_linesearch_steps=1)
    assert trials == 1 and x == pytest.approx(1.0) and int(new["pairs"]) == 0


class _Quadratic:
    """A program whose loss is ½ |params − target|² (value_and_grad only, as Julia's); ``fail_on`` makes that call
    (1-based) raise ``error``."""

    def __init__(self, fail_on=None, error=pn.MaxStepsError("forward solve reached max_steps")):
        self.calls, self.fail_on, self.error = 0, fail_on, error

    def value_and_grad(self, params, y0, ts, loss):
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.error
        diff = params - loss
        return types.SimpleNamespace(value=0.5 * float(diff @ diff), grad_params=diff, stats=pn.Stats())


def test_host_trainer_state_round_trip_and_evaluations():
    target = np.array([1.0, -2.0, 0.5, 3.0])
    straight, first = (HostTrainer(_Quadratic(), pn.LBFGS(memory_size=3), np.asarray) for _ in range(2))
    for trainer in (straight, first):
        trainer.init(np.zeros(4))
    fresh = first.optimizer_arrays()
    assert fresh["opt_s"].shape == (3, 4) and fresh["opt_y"].shape == (3, 4) and int(fresh["opt_pairs"]) == 0
    infos = [straight.step(0, 0, target) for _ in range(5)]
    assert [len(info) for info in infos] == [3] * 5 and infos[0][2] == 2  # the start, plus one trial
    for _ in range(2):
        first.step(0, 0, target)
    resumed = HostTrainer(_Quadratic(), pn.LBFGS(memory_size=3), np.asarray)
    resumed.init(first.params())
    resumed.load_optimizer_arrays(first.optimizer_arrays())
    assert int(resumed.optimizer_arrays()["opt_pairs"]) == 2
    for _ in range(3):
        resumed.step(0, 0, target)
    np.testing.assert_array_equal(resumed.params(), straight.params())
    np.testing.assert_allclose(straight.params(), target, atol=1e-12)


@pytest.mark.parametrize("fail_on, error", [(1, pn.MaxStepsError("forward solve reached max_steps")),
                                            (2, RuntimeError("a bug in the loss"))],
                         ids=["at-the-start", "inside-the-line-search"])
def test_a_failed_step_changes_nothing(fail_on, error):
    target = np.array([1.0, -2.0, 0.5])
    trainer = HostTrainer(_Quadratic(), pn.LBFGS(), np.asarray)
    trainer.init(np.zeros(3))
    trainer.step(0, 0, target)
    before = (trainer.params(), trainer.optimizer_arrays())
    trainer.program = _Quadratic(fail_on=fail_on, error=error)
    with pytest.raises(type(error)):
        trainer.step(0, 0, target)
    np.testing.assert_array_equal(trainer.params(), before[0])
    after = trainer.optimizer_arrays()
    assert after.keys() == before[1].keys()
    for key in after:
        np.testing.assert_array_equal(after[key], before[1][key])


def test_missing_scipy_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # importlib.util.find_spec("scipy") is then None
    with pytest.raises(pn.BackendUnavailable, match="pip install scipy"):
        HostTrainer(None, pn.LBFGS(), pn.MSE)


# ------------------------------------------------------------- pn.Trainer on a julia-backend model (stand-in)
@pytest.fixture(scope="module")
def linear_data():
    return _exact(W_TRUE, Y0, TS)


def test_trainer_lbfgs_reaches_the_least_squares_minimum(linear_data):
    """tests/test_optim.py's fit (noise-free data from W_TRUE, MSE, the same perturbed start) through pn.Trainer on
    the julia program glue: W_TRUE to 1e-7, as JAX and torch are held."""
    stand_in = StandIn()
    m = stand_in_model(stand_in)
    trainer = pn.Trainer(m, optimizer=pn.LBFGS(), loss=pn.MSE)
    trainer.init((W_TRUE + np.array([[0.3, -0.2], [0.25, 0.2]])).reshape(-1))
    infos = [trainer.step(Y0, TS, linear_data) for _ in range(41)]
    first, info = infos[0], infos[-1]
    assert first.evaluations >= 2 and first.stats.nfe_forward == 6 * len(TS)
    assert sum(i.evaluations for i in infos) == stand_in.forwards  # every solve is counted, none is hidden
    assert info.loss < 1e-16 * first.loss or info.loss < 1e-20
    np.testing.assert_allclose(trainer.params, W_TRUE.reshape(-1), rtol=0, atol=1e-7)


def test_trainer_lbfgs_with_a_custom_loss_and_a_failed_trial(linear_data):
    """pn.LBFGS with a masked pn.loss on the stand-in; the unit-step trial of the first iteration fails (MaxIters):
    the step backs off instead of raising, and the fit still reaches W_TRUE."""
    mask = np.ones(linear_data.shape, bool)
    mask[::2, 0] = False
    stand_in = StandIn([relative_mse], fail_at=[2])
    m = stand_in_model(stand_in)
    trainer = pn.Trainer(m, optimizer=pn.LBFGS(), loss=relative_mse)
    trainer.init((W_TRUE + 0.2).reshape(-1))
    infos = [trainer.step(Y0, TS, linear_data, mask=mask) for _ in range(40)]
    assert infos[0].evaluations >= 3
    assert sum(info.evaluations for info in infos) == stand_in.forwards
    np.testing.assert_allclose(trainer.params, W_TRUE.reshape(-1), rtol=0, atol=1e-6)


def test_trainer_lbfgs_checkpoint_resumes_exactly(linear_data, tmp_path):
    start = (W_TRUE + 0.2).reshape(-1)
    straight = pn.Trainer(stand_in_model(StandIn()), optimizer=pn.LBFGS(), loss=pn.MSE)
    straight.init(start)
    for _ in range(6):
        straight.step(Y0, TS, linear_data)
    first = pn.Trainer(stand_in_model(StandIn()), optimizer=pn.LBFGS(), loss=pn.MSE)
    first.init(start)
    for _ in range(3):
        first.step(Y0, TS, linear_data)
    pn.train.save_checkpoint(tmp_path / "ck.npz", first.state_arrays(), {})
    resumed = pn.Trainer(stand_in_model(StandIn()), optimizer=pn.LBFGS(), loss=pn.MSE)
    resumed.load_state_arrays(pn.train.load_checkpoint(tmp_path / "ck.npz")[0])
    for _ in range(3):
        resumed.step(Y0, TS, linear_data)
    np.testing.assert_array_equal(resumed.params, straight.params)
    with pytest.raises(pn.SpecError, match="'opt_s' is float64\\[10, 3\\]"):
        resumed.load_state_arrays({**first.state_arrays(), "opt_s": np.zeros((10, 3))})
