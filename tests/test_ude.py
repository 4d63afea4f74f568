"""The Lotka–Volterra UDE (``pyneuralode ude``): the data are the true system, training reduces the loss on every
backend, a run resumed from a checkpoint in either phase (Adam or L-BFGS) equals the uninterrupted run, and the
command writes its metrics, checkpoint and picture."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.cli import main
from pyneuralode.problems._ude_run import AdamThenLBFGS, network_terms, train_ude
from pyneuralode.problems.ude import (ALPHA, BETA, DELTA, GAMMA, DATA_TIMES, UDEConfig, lotka_volterra_data,
                                      missing_terms, ude_model)

TINY = dict(adam_iters=2, lbfgs_iters=1, eval_every=1)


def test_data_are_the_true_lotka_volterra():
    """The clean data solve dx = αx − βxy, dy = γxy − δy (checked against an independent RK4 in NumPy), and the
    noise has the stated scale."""
    cfg = UDEConfig()
    u0, ts, clean, noisy = lotka_volterra_data(cfg)

    def f(u):
        x, y = u
        return np.array([ALPHA * x - BETA * x * y, GAMMA * x * y - DELTA * y])

    u, out = u0.copy(), [u0.copy()]
    for _ in range(len(ts) - 1):
        h = (ts[1] - ts[0]) / 50
        for _ in range(50):
            k1 = f(u)
            k2 = f(u + h / 2 * k1)
            k3 = f(u + h / 2 * k2)
            k4 = f(u + h * k3)
            u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(u.copy())
    np.testing.assert_allclose(clean, np.array(out), rtol=1e-8, atol=1e-8)
    assert clean.shape == (21, 2) and ts[-1] == 5.0
    residual = (noisy - clean) / (cfg.noise_level * clean.mean(axis=0))
    assert 0.5 < residual.std() < 1.5


def test_network_terms_are_the_field_minus_the_known_physics():
    cfg = UDEConfig(learn_physics=True)
    model = ude_model(cfg, backend="jax")
    params = model.init(3)
    states = np.array([[1.0, 2.0], [0.5, 0.3]])
    terms = network_terms(model, params, states)
    du = model.field.evaluate(params, 0.0, states)
    alpha = delta = 1.0  # the declared starting values of the learned physics
    np.testing.assert_allclose(du[:, 0], alpha * states[:, 0] + terms[:, 0], rtol=1e-12)
    np.testing.assert_allclose(du[:, 1], -delta * states[:, 1] + terms[:, 1], rtol=1e-12)
    assert missing_terms(states)[0].tolist() == pytest.approx([-BETA * 2.0, GAMMA * 2.0])


def test_ude_training_reduces_loss(backend):
    cfg = UDEConfig(backend=backend)
    _, _, _, noisy = lotka_volterra_data(cfg, backend="jax")
    model = ude_model(cfg)
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=pn.MSE)
    trainer.init(model.init(cfg.seed))
    first = trainer.step(noisy[0], DATA_TIMES, noisy)
    for _ in range(25):
        last = trainer.step(noisy[0], DATA_TIMES, noisy)
    assert last.loss < 0.7 * first.loss


def test_ude_resume_is_exact_in_both_phases(tmp_path):
    """Straight: 2 Adam + 2 L-BFGS steps. Interrupted: the same with 1 L-BFGS step (checkpoint in the L-BFGS
    phase), then resumed to 2. Same parameters to the last bit; the metrics keep one record per iteration."""
    straight = train_ude(UDEConfig(**{**TINY, "lbfgs_iters": 2}), tmp_path / "a", show_progress=False)
    train_ude(UDEConfig(**TINY), tmp_path / "b", show_progress=False)
    resumed = train_ude(UDEConfig(**{**TINY, "lbfgs_iters": 2}), tmp_path / "b", resume=True, show_progress=False)
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "params.npy"), np.load(tmp_path / "a" / "params.npy"))
    assert resumed["final_loss"] == straight["final_loss"]
    records = json.loads((tmp_path / "b" / "metrics.json").read_text())["records"]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert [r["phase"] for r in records] == ["adam", "adam", "lbfgs", "lbfgs"]


def test_two_phase_trainer_switches_after_adam():
    model = ude_model(UDEConfig(), backend="jax")
    trainer = AdamThenLBFGS(model, adam=pn.Adam(lr=1e-3), adam_steps=1, lbfgs=pn.LBFGS())
    assert trainer.phase == "adam"
    trainer.init(model.init(0))
    state = trainer.state_arrays()
    assert int(state["phase_steps"]) == 0


def test_ude_cli_smoke(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["ude", "--learn-physics", "--adam-iters", "2", "--lbfgs-iters", "1", "--eval-every", "1",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "U vs true terms, rel L2 [0, 5]" in text and "alpha, delta" in text
    for name in ("metrics.json", "metrics.csv", "checkpoint.npz", "params.npy", "ude.png"):
        assert (out / name).exists(), name
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    assert summary["config"]["learn_physics"] is True
    assert np.isfinite(summary["terms_in_sample"]) and np.isfinite(summary["trajectory_extrapolation"])
    with pytest.raises(SystemExit):
        main(["ude", "--lr-decay", "0", "--out", str(tmp_path / "x")])
    assert "must be a factor in (0, 1]" in capsys.readouterr().err


def test_sindy_recovers_the_true_interactions():
    pytest.importorskip("pysindy", reason="--sindy is an optional extra (pip install 'pyneuralode[sindy]')")
    from pyneuralode.problems._ude_sindy import recover_terms
    _, _, clean, _ = lotka_volterra_data(UDEConfig(), backend="jax")
    found = recover_terms(clean, missing_terms(clean))
    coefficients = dict(zip(found["features"], np.asarray(found["coefficients"]).T))
    np.testing.assert_allclose(coefficients.pop("x y"), [-BETA, GAMMA], rtol=1e-6)
    assert all(np.all(c == 0) for c in coefficients.values()), coefficients  # thresholded away
    assert found["equations"][0].startswith("U1 = ") and "x y" in found["equations"][1]


def test_ude_resume_adds_and_drops_sindy(tmp_path, capsys):
    """--sindy analyses the trained network without changing the training: a finished run resumes with it added
    (the symbolic terms are written) and without it (a stale sindy.txt is removed), parameters unchanged."""
    pytest.importorskip("pysindy", reason="--sindy is an optional extra (pip install 'pyneuralode[sindy]')")
    out = tmp_path / "run"
    args = ["ude", "--adam-iters", "2", "--lbfgs-iters", "1", "--eval-every", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    params = np.load(out / "params.npy")
    assert main([*args, "--resume", "--sindy"]) == 0
    assert "SINDy, learned U1 (true -0.9 x y)" in capsys.readouterr().out
    assert (out / "sindy.txt").read_text().startswith("U1 = ")
    assert "sindy" in json.loads((out / "metrics.json").read_text())["summary"]
    np.testing.assert_array_equal(np.load(out / "params.npy"), params)
    assert main([*args, "--resume"]) == 0
    assert not (out / "sindy.txt").exists()
