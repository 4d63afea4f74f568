"""Training: the native Trainer on every backend, checkpoints that resume exactly, and the spiral CLI."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.cli import main
from pyneuralode.problems.spiral import TRUE_A, sample_batch, spiral_data

from helpers import model, spiral_field

CONTROL = pn.StepControl(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def spiral():
    return spiral_data()


def _batches(spiral, n, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_batch(rng, *spiral) for _ in range(n)]


@pytest.mark.parametrize("optimizer", [pn.Adam(lr=1e-2), pn.RMSprop(lr=1e-3), pn.SGD(lr=0.5, momentum=0.9)],
                         ids=lambda o: type(o).__name__)
def test_trainer_reduces_loss(backend, spiral, optimizer):
    m = model(spiral_field(), backend=backend, control=CONTROL)
    trainer = pn.Trainer(m, optimizer=optimizer, loss=pn.L1)
    trainer.init(m.init(0))
    y0, t, target = _batches(spiral, 1)[0]
    first = trainer.step(y0, t, target)
    for _ in range(20):
        last = trainer.step(y0, t, target)
    assert last.loss < 0.8 * first.loss
    assert first.stats.nfe_forward > 0 and first.stats.nfe_backward > 0


def test_trainer_step_equals_manual_update(backend, spiral):
    """One Adam step from the Trainer equals Adam's formula applied to value_and_grad's gradient."""
    m = model(spiral_field(), backend=backend, control=CONTROL)
    params = m.init(0)
    y0, t, target = _batches(spiral, 1)[0]
    trainer = pn.Trainer(m, optimizer=pn.Adam(lr=1e-2), loss=pn.L1)
    trainer.init(params)
    info = trainer.step(y0, t, target)
    res = m.value_and_grad(params, y0, t, loss=pn.L1(target))
    assert info.loss == pytest.approx(res.value, rel=1e-12)
    g = res.grad_params
    m1, v1 = 0.1 * g, 0.001 * g * g  # first Adam step: bias corrections give m/(1-b1) = g, v/(1-b2) = g²
    expected = params - 1e-2 * (m1 / 0.1) / (np.sqrt(v1 / 0.001) + 1e-8)
    np.testing.assert_allclose(trainer.params, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("optimizer", [pn.Adam(lr=1e-2), pn.RMSprop(lr=1e-3),
                                       pn.SGD(lr=0.5, momentum=0.9, boundaries=(2,), factors=(0.1,))],
                         ids=lambda o: type(o).__name__)
def test_host_update_rules_equal_the_native_optimisers(spiral, optimizer):
    """The host-side update (Julia's trainer: value_and_grad there, the rule in NumPy) takes the same steps as optax
    on the same JAX program, schedule included."""
    from pyneuralode.train._host import HostTrainer

    m = model(spiral_field(), backend="jax", control=CONTROL)
    native = pn.Trainer(m, optimizer=optimizer, loss=pn.L1)
    host = HostTrainer(m.program, optimizer, pn.L1)
    native.init(m.init(0))
    host.init(m.init(0))
    for batch in _batches(spiral, 4):
        a, _, evaluations = host.step(*batch)
        assert evaluations == 1
        assert native.step(*batch).loss == pytest.approx(a, rel=1e-10)
    np.testing.assert_allclose(host.params(), native.params, rtol=1e-9, atol=1e-12)


class _Quadratic:
    """A program whose loss is 0.5 |params - target|² (value_and_grad only, as Julia's); y0=None fails."""

    def value_and_grad(self, params, y0, ts, loss):
        if y0 is None:
            raise pn.MaxStepsError("forward solve reached max_steps")
        diff = params - loss
        return types.SimpleNamespace(value=0.5 * float(diff @ diff), grad_params=diff, stats=pn.Stats())


@pytest.mark.parametrize("optimizer", [pn.Adam(lr=0.1), pn.RMSprop(lr=0.1), pn.SGD(lr=0.1, momentum=0.5)],
                         ids=lambda o: type(o).__name__)
def test_host_trainer_resumes_exactly_and_a_failed_step_changes_nothing(optimizer):
    from pyneuralode.train._host import HostTrainer

    target = np.array([1.0, -2.0, 0.5])
    straight, first = HostTrainer(_Quadratic(), optimizer, np.asarray), HostTrainer(_Quadratic(), optimizer, np.asarray)
    for trainer in (straight, first):
        trainer.init(np.zeros(3))
    for _ in range(5):
        straight.step(0, 0, target)
    for _ in range(2):
        first.step(0, 0, target)
    before = (first.params(), first.optimizer_arrays())
    with pytest.raises(pn.MaxStepsError):
        first.step(None, 0, target)
    np.testing.assert_array_equal(first.params(), before[0])
    resumed = HostTrainer(_Quadratic(), optimizer, np.asarray)
    resumed.init(first.params())
    resumed.load_optimizer_arrays(first.optimizer_arrays())
    assert resumed.optimizer_arrays().keys() == before[1].keys()
    for _ in range(3):
        resumed.step(0, 0, target)
    np.testing.assert_array_equal(resumed.params(), straight.params())
    assert np.linalg.norm(straight.params() - target) < np.linalg.norm(target)


def test_a_step_with_one_save_time_changes_nothing(backend):
    """With one save time the solution is y0, which does not depend on the weights: the loss is the target's
    distance to y0 and the update is zero. torch's trainer raised torch's "element 0 of tensors does not require
    grad" (a new user's report); JAX already returned the loss."""
    m = model(pn.MLP([2, 4, 2], activation="tanh"), backend=backend)
    trainer = pn.Trainer(m, optimizer=pn.Adam(lr=0.1), loss=pn.MSE)
    trainer.init(m.init(0))
    info = trainer.step(np.array([[1.0, 2.0]]), np.array([0.3]), np.zeros((1, 1, 2)))
    assert info.loss == 2.5
    np.testing.assert_array_equal(trainer.params, m.init(0))


def test_trainer_checkpoint_resumes_exactly(backend, spiral, tmp_path):
    m = model(spiral_field(), backend=backend, control=CONTROL)
    batches = _batches(spiral, 6)
    straight = pn.Trainer(m, optimizer=pn.Adam(lr=1e-2))
    straight.init(m.init(0))
    for b in batches:
        straight.step(*b)
    first = pn.Trainer(m, optimizer=pn.Adam(lr=1e-2))
    first.init(m.init(0))
    for b in batches[:3]:
        first.step(*b)
    pn.train.save_checkpoint(tmp_path / "ck.npz", first.state_arrays(), {"iteration": 3})
    arrays, meta = pn.train.load_checkpoint(tmp_path / "ck.npz")
    resumed = pn.Trainer(m, optimizer=pn.Adam(lr=1e-2))
    resumed.load_state_arrays(arrays)
    for b in batches[3:]:
        resumed.step(*b)
    assert meta == {"iteration": 3}
    np.testing.assert_array_equal(resumed.params, straight.params)


def test_trainer_rejects_bad_input(spiral):
    m = model(spiral_field(), backend="jax", control=CONTROL)
    with pytest.raises(pn.SpecError, match="optimizer must be"):
        pn.Trainer(m, optimizer="adam")
    with pytest.raises(pn.SpecError, match="loss must be a loss type"):
        pn.Trainer(m, optimizer=pn.Adam(), loss=pn.L1(np.zeros(3)))
    trainer = pn.Trainer(m, optimizer=pn.Adam())
    trainer.init(m.init(0))
    y0, t, target = _batches(spiral, 1)[0]
    with pytest.raises(pn.SpecError, match=r"target has shape \(10, 20, 3\)"):
        trainer.step(y0, t, np.zeros((10, 20, 3)))


def test_spiral_data_is_the_true_system(spiral):
    """The data equal an independent numpy RK4 integration of dy/dt = (y**3) A (20 substeps per interval)."""
    ts, ys = spiral
    assert ys.shape == (1000, 2) and ts[-1] == 25.0

    def f(y):
        return y**3 @ TRUE_A

    y, expected, h = np.array([2.0, 0.0]), [np.array([2.0, 0.0])], (ts[1] - ts[0]) / 20
    for _ in range(len(ts) - 1):
        for _ in range(20):
            k1 = f(y)
            k2 = f(y + h / 2 * k1)
            k3 = f(y + h / 2 * k2)
            k4 = f(y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        expected.append(y)
    np.testing.assert_allclose(ys, np.array(expected), atol=1e-5)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(pn.RunDirectoryError, match="No checkpoint at"):
        pn.train.load_checkpoint(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(pn.RunDirectoryError, match="is damaged"):
        pn.train.load_checkpoint(bad)


def test_spiral_cli_resume_equals_straight_run(tmp_path, capsys):
    common = ["spiral", "--backend", "jax", "--eval-every", "4", "--no-progress", "--seed", "3"]
    assert main([*common, "--iters", "8", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--iters", "4", "--out", str(tmp_path / "b")]) == 0
    assert main([*common, "--iters", "8", "--out", str(tmp_path / "b"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "test loss, full trajectory" in out and "spiral.png" in out
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert [r["loss"] for r in a["records"]] == [r["loss"] for r in b["records"]]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "params.npy"), np.load(tmp_path / "b" / "params.npy"))
    png = (tmp_path / "a" / "spiral.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert (tmp_path / "a" / "metrics.csv").read_text().startswith("iteration,loss,nfe_forward")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["spiral", "--iters", "2", "--out", str(tmp_path / "none"), "--resume", "--no-progress"]) == 2
    assert "pyneuralode: error: No checkpoint at" in capsys.readouterr().err
