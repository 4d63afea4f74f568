"""``pyneuralode latent``: a tiny run, and an interrupted run resumed to the identical parameters (torch: no
compilation)."""

from __future__ import annotations

import json

import numpy as np

from pyneuralode.cli import main


def test_latent_command_resumes_to_the_identical_run(tmp_path, capsys):
    common = ["latent", "--obs", "30", "--backend", "torch", "--batch-size", "4", "--eval-every", "1",
              "--no-progress"]
    assert main([*common, "--iters", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*common, "--iters", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main([*common, "--iters", "2", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "straight" / "params.npy"),
                                  np.load(tmp_path / "resumed" / "params.npy"))
    summary = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["summary"]
    assert summary["iterations"] == 2 and summary["test_rmse"] > 0 and summary["mean_nfe_forward"] > 0
    assert (tmp_path / "resumed" / "latent.png").stat().st_size > 10_000
    assert "test RMSE" in capsys.readouterr().out


def test_latent_options_are_checked_while_parsing(capsys):
    import pytest
    with pytest.raises(SystemExit):
        main(["latent", "--obs", "40"])
    assert "invalid choice: 40" in capsys.readouterr().err


def test_latent_command_on_julia_runs_or_says_in_one_line_how_to_get_julia(tmp_path, capsys):
    """``--backend julia``: a tiny run where Julia exists; elsewhere exit code 2, one line naming the fix, and no
    run directory left behind."""
    from helpers import unavailable_reason

    out = tmp_path / "julia"
    code = main(["latent", "--obs", "30", "--backend", "julia", "--batch-size", "4", "--iters", "1",
                 "--eval-every", "1", "--no-progress", "--out", str(out)])
    if unavailable_reason("julia") is None:
        assert code == 0 and (out / "metrics.json").exists()
    else:
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and err.startswith("pyneuralode: error: Backend 'julia' cannot start")
        assert not out.exists()
