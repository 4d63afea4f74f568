"""The CNF training run (``pyneuralode cnf``): native steps learn, outputs are written, resume is exact."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.problems import cnf as cnf_problem


def _args(tmp_path, *extra):
    parser = argparse.ArgumentParser()
    cnf_problem.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["cnf", "--backend", "torch", "--batch", "32", "--width", "8", "--depth", "1",
                              "--eval-every", "2", "--lr", "1e-2",
                              "--test-size", "64", "--plot-samples", "500", "--out", str(tmp_path), "--no-progress", *extra])


def test_cli_run_writes_outputs_and_resumes_exactly(tmp_path, capsys):
    pytest.importorskip("torchdiffeq")
    pytest.importorskip("matplotlib")
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert cnf_problem.run(_args(whole, "--iters", "4", "--trace", "hutchinson")) == 0
    assert cnf_problem.run(_args(part, "--iters", "2", "--trace", "hutchinson")) == 0
    assert cnf_problem.run(_args(part, "--iters", "4", "--trace", "hutchinson", "--resume")) == 0
    np.testing.assert_array_equal(np.load(part / "params.npy"), np.load(whole / "params.npy"))
    records = json.loads((whole / "metrics.json").read_text())["records"]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(r["nfe_forward"] > 0 and r["nfe_backward"] > 0 for r in records)
    assert "test_nll" in records[-1] and (whole / "cnf.png").stat().st_size > 5_000
    out = capsys.readouterr().out
    assert "test NLL (exact trace)" in out
    assert re.search(r"^adjoint +DirectAdjoint$", out, re.M), out  # the adjoint used, not "auto"
    with pytest.raises(pn.SpecError, match="other settings"):
        cnf_problem.run(_args(part, "--iters", "6", "--trace", "exact", "--resume"))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_native_steps_reduce_the_nll(backend):
    pytest.importorskip({"jax": "optax", "torch": "torchdiffeq"}[backend])
    flow = pn.CNF(pn.MLP([2, 8, 2], time_input=True), control=pn.StepControl(rtol=1e-4, atol=1e-4),
                  backend=backend, dtype="float32",
                  adjoint=pn.CheckpointAdjoint() if backend == "jax" else pn.DirectAdjoint())
    trainer = pn.FlowTrainer(flow, optimizer=pn.Adam(lr=3e-2))
    trainer.init(flow.init(0))
    x = pn.datasets.toy_2d("8gaussians", 64, 0, dtype="float32")
    first = trainer.step(x)
    for _ in range(15):
        last = trainer.step(x)
    assert last.nll < first.nll - 0.1
    assert first.stats.nfe_forward > 0 and first.stats.nfe_backward > 0
    # the step's NLL is the flow's own NLL at the parameters before the update
    np.testing.assert_allclose(-flow.log_prob(trainer.params, x).mean(), trainer.step(x).nll, rtol=1e-4)
