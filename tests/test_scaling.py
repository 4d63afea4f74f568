"""Scaling out: data-parallel training on JAX sharding and sharded ensembles give the single-device numbers.

JAX is started in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (the flag must be set
before JAX starts), which splits this CPU into 4 devices: that proves the sharded program is the same
computation, not that it is faster (the 4 "devices" share the machine's cores).

The bound: a sharded step takes exactly the single-device solver steps (the adaptive error norm is reduced over
the whole batch) and differs only by the order of floating-point reductions (the loss mean, the gradient sum).
In float64 that is ~1e-16 per step; after 3 Adam steps, whose normalised updates amplify it, ~1e-12 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyneuralode as pn

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(HERE / "_multidevice.py")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_device(four_devices):
    """Multi-host data parallelism as a user launches it: two processes, ``jax.distributed.initialize`` with the
    gloo CPU collectives, each process one device; the step is the single-device step to round-off."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, str(HERE / "_multiprocess.py"), str(port)]
    other = subprocess.Popen([*cmd, "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc = subprocess.run([*cmd, "0"], env=env, capture_output=True, text=True, timeout=900)
        other.wait(timeout=120)
    finally:
        other.kill()
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    run, one = json.loads(line[len("RESULT "):]), four_devices["trainer"]["None"]
    assert run["devices"] == 2
    np.testing.assert_allclose(run["loss"], one["loss"], rtol=1e-13)
    assert run["nfe"] == one["nfe"]
    p1 = np.array(one["params"])
    assert np.max(np.abs(np.array(run["params"]) - p1)) <= 1e-11 * np.max(np.abs(p1))


@pytest.mark.parametrize("solver, rtol", [("RK4", 1e-13), ("Dopri5", 1e-6)])
def test_torch_ddp_on_native_matches_one_process(solver, rtol):
    """``model.native()`` under ``DistributedDataParallel`` (gloo, 2 ranks on localhost): the averaged gradient of
    the two half-batches equals the one-process gradient of the whole batch. Fixed-step RK4 takes the same steps
    on any batch, so they agree to round-off; an adaptive solve chooses its steps from the error norm of the
    batch it sees, so each rank's half takes its own steps and they agree to the solver's tolerance."""
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(HERE / "_ddp.py")]
    other = subprocess.Popen([*cmd, "1", "2", port, solver], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        proc = subprocess.run([*cmd, "0", "2", port, solver], env=env, capture_output=True, text=True, timeout=600)
        other.wait(timeout=120)
    finally:
        other.kill()
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    ddp, single = np.array(result["ddp"]), np.array(result["single"])
    assert np.max(np.abs(ddp - single)) <= rtol * np.max(np.abs(single))
    if solver == "Dopri5":
        assert np.max(np.abs(ddp - single)) > 0  # the halves really took their own steps


def test_subprocess_sees_four_devices(four_devices):
    assert four_devices["device_count"] == 4


def test_anode_command_trains_the_same_on_two_devices(four_devices):
    """``pyneuralode anode --devices 2``'s trainers: after 3 steps on A1, NODE's and ANODE's losses equal the
    single-device run's to float64 round-off."""
    runs = four_devices["anode"]
    for kind in ("node", "anode"):
        assert abs(runs["2"][kind] - runs["None"][kind]) <= 1e-12 * max(1.0, abs(runs["None"][kind]))


@pytest.mark.parametrize("devices", ["2", "4"])
def test_sharded_trainer_matches_one_device(four_devices, devices):
    one, many = four_devices["trainer"]["None"], four_devices["trainer"][devices]
    np.testing.assert_allclose(many["loss"], one["loss"], rtol=1e-13)
    assert many["nfe"] == one["nfe"] and many["nfe_b"] == one["nfe_b"]  # same steps; counted once, not per device
    p1, pn_ = np.array(one["params"]), np.array(many["params"])
    assert np.max(np.abs(pn_ - p1)) <= 1e-11 * np.max(np.abs(p1))


def test_sharded_flow_trainer_matches_one_device(four_devices):
    one, many = four_devices["flow"]["None"], four_devices["flow"]["4"]
    np.testing.assert_allclose(many["loss"], one["loss"], rtol=1e-13)
    assert many["nfe"] == one["nfe"]
    np.testing.assert_allclose(many["params"], one["params"], rtol=0, atol=1e-12)


def test_indivisible_batch_is_refused(four_devices):
    assert four_devices["indivisible"] == ("the batch of 6 samples cannot be split evenly over 4 devices: use a "
                                           "batch size that is a multiple of 4 (e.g. 4), or fewer devices.")


def test_sharded_ensemble_pads_and_matches(four_devices):
    ens = four_devices["ensemble"]
    assert ens["ok"] == [True] * 5 and ens["stats_equal"]
    assert ens["max_abs_diff"] <= 1e-14


@pytest.mark.parametrize("make", ["trainer", "flow"])
def test_devices_is_refused_on_torch(make):
    if make == "trainer":
        model = pn.ODEModel(pn.MLP([2, 4, 2]), backend="torch")
        call = lambda: pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), devices=2)  # noqa: E731
    else:
        cnf = pn.CNF(pn.ConcatSquashMLP([2, 4, 2]), backend="torch")
        call = lambda: pn.FlowTrainer(cnf, optimizer=pn.Adam(lr=1e-2), devices=2)  # noqa: E731
    with pytest.raises(pn.NotSupportedError, match=r"devices= \(data-parallel sharding\) is available on backend "
                                                   r"'jax' only: on torch, wrap model.native\(\) in "
                                                   r"torch.nn.parallel.DistributedDataParallel"):
        call()


def test_too_many_devices_names_the_flag():
    model = pn.ODEModel(pn.MLP([2, 4, 2]), backend="jax")
    with pytest.raises(pn.SpecError, match=r"XLA_FLAGS=--xla_force_host_platform_device_count=8"):
        pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), devices=8)


@pytest.mark.parametrize("problem", ["spiral", "cnf", "mnist", "anode"])
def test_cli_devices_on_torch_is_one_clear_line(problem, tmp_path, capsys):
    from pyneuralode.cli import main
    assert main([problem, "--backend", "torch", "--devices", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pyneuralode: error: devices= (data-parallel sharding) is available on backend 'jax' only: on "
                   "torch, wrap model.native() in torch.nn.parallel.DistributedDataParallel and launch with "
                   "torchrun (README, 'Scaling out')."]
    assert not (tmp_path / "run").exists()


def test_cli_devices_must_be_a_count(capsys):
    from pyneuralode.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["spiral", "--devices", "0"])
    assert exit_.value.code == 2
    assert "argument --devices: must be an integer ≥ 1, got 0" in capsys.readouterr().err


def test_use_devices_splits_the_cpu_before_jax_starts(monkeypatch):
    from pyneuralode.problems._options import use_devices
    monkeypatch.setenv("XLA_FLAGS", "--xla_something=1")
    assert use_devices(4, "jax") == 4
    assert os.environ["XLA_FLAGS"] == "--xla_something=1 --xla_force_host_platform_device_count=4"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    use_devices(4, "jax")  # the user's own count wins
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
