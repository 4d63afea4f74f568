"""The ``pyneuralode mnist`` run: a tiny RK-Net trains, checkpoints every epoch and resumes exactly."""

from __future__ import annotations

import json

import numpy as np

from pyneuralode.cli import main


def test_mnist_cli_resume_equals_straight_run(tmp_path, capsys):
    common = ["mnist", "--model", "rknet", "--backend", "torch", "--channels", "4", "--train-limit", "256", "--test-limit", "200",
              "--batch", "64", "--no-progress", "--optimizer", "adam", "--no-augment"]
    assert main([*common, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main([*common, "--epochs", "2", "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert [r["epoch"] for r in b["records"]] == [1, 2]
    assert [r["train_loss"] for r in a["records"]] == [r["train_loss"] for r in b["records"]]
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "params.npy"), np.load(tmp_path / "b" / "params.npy"))
    assert (tmp_path / "a" / "mnist.png").read_bytes()[:4] == b"\x89PNG"
    assert main([*common, "--epochs", "2", "--out", str(tmp_path / "b"), "--resume", "--channels", "8"]) == 2
    assert "other settings" in capsys.readouterr().err
