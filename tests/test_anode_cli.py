"""``pyneuralode anode``: NODE and ANODE side by side (tiny runs), the parameter-budget matching, the data."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.cli import main
from pyneuralode.problems._anode_run import build_models, widths
from pyneuralode.problems.anode import AnodeConfig


@pytest.mark.parametrize("problem", ["a1", "a2"])
def test_matched_budget_gives_node_the_nearest_parameter_count(problem):
    cfg = AnodeConfig(problem=problem, width=16, augment_dims=2)
    models = build_models(cfg)
    w = widths(cfg)
    assert w["anode"] == 16 and w["node"] > 16
    counts = {k: m.num_params for k, m in models.items()}
    gap = abs(counts["node"] - counts["anode"])
    for other in (w["node"] - 1, w["node"] + 1):   # no neighbouring width comes closer to ANODE's budget
        cfg_other = AnodeConfig(problem=problem, width=other, augment_dims=0 + 2, match_params=False)
        assert abs(build_models(cfg_other)["node"].num_params - counts["anode"]) >= gap
    assert gap < abs(build_models(AnodeConfig(problem=problem, width=16, augment_dims=2,
                                              match_params=False))["node"].num_params - counts["anode"])


def test_anode_data():
    x, y = pn.datasets.anode_a1()
    np.testing.assert_array_equal(x[:, 0], [-1, 1]) and np.testing.assert_array_equal(y, -x)
    points, labels = pn.datasets.anode_a2(300, seed=0)
    radius = np.hypot(*points.T)
    assert np.all(radius[labels == 0] <= 0.5) and np.all((radius[labels == 1] >= 1) & (radius[labels == 1] <= 1.5))
    assert (labels == 0).sum() == 100
    np.testing.assert_array_equal(points, pn.datasets.anode_a2(300, seed=0)[0])


@pytest.mark.parametrize("problem", ["a1", "a2"])
def test_anode_command_trains_both_and_writes_metrics_and_png(problem, tmp_path, capsys):
    out = tmp_path / problem
    args = ["anode", "--problem", problem, "--backend", "torch", "--eval-every", "1", "--width", "4", "--points", "30",
            "--batch-size", "16", "--out", str(out), "--no-progress"]
    assert main([*args, "--iters", "1"]) == 0
    assert main([*args, "--iters", "2", "--resume"]) == 0        # continues from the checkpoint at iteration 1
    records = json.loads((out / "metrics.json").read_text())["records"]
    assert [r["iteration"] for r in records] == [1, 2]
    summary = json.loads((out / "metrics.json").read_text())["summary"]
    for kind in ("node", "anode"):
        assert summary[kind]["mean_nfe_forward"] > 0 and 0 <= summary[kind]["test_accuracy"] <= 1
    assert (out / "anode.png").stat().st_size > 10_000
    assert "NODE" in capsys.readouterr().out


def test_anode_options_are_checked_while_parsing(capsys):
    with pytest.raises(SystemExit):
        main(["anode", "--augment-dims", "0"])
    assert "augment-dims: must be an integer ≥ 1, got 0" in capsys.readouterr().err
