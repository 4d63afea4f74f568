"""The run-directory contract every training run shares (``pyneuralode.train.RunDirectory``): one live run per
directory, nothing replaced by accident, the directory checked before training, checkpoint and metrics as one
unit under crashes and full disks, damaged files refused with one clear line.

Faults are injected: a crash (an exception no handler catches, as ``kill -9`` leaves things) between the
checkpoint and the metrics write, and a full disk (``open`` for writing returns a file whose writes land half
their bytes and then fail with ENOSPC, as a filling disk does; or ``fsync`` of a checkpoint fails with ENOSPC, as
delayed allocation reports it). End-to-end runs are the spiral on torch (no
compile), 4 iterations, checkpoints every 2.
"""

from __future__ import annotations

import builtins
import copy
import errno
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.cli import main
from pyneuralode.train import MetricsLog, RunDirectory

pytest.importorskip("torchdiffeq")

SPIRAL = ["spiral", "--backend", "torch", "--iters", "4", "--eval-every", "2", "--no-progress"]


class _Crash(BaseException):
    """What a killed process leaves: nothing after this point runs (no ``except Exception`` catches it)."""


class _FullDiskFile:
    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def full_disk(monkeypatch, match: str, *, after: int = 0) -> None:
    """Files opened for writing whose name contains ``match`` fail as on a full disk, after ``after`` such
    opens succeeded."""
    real_open, opened = builtins.open, []

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        if set(mode) & set("wax") and match in os.path.basename(str(file)):
            opened.append(file)
            if len(opened) > after:
                return _FullDiskFile(fh)
        return fh

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def _records(path):
    return json.loads((path / "metrics.json").read_text())["records"]


def _no_temporaries(path):
    return [n for n in os.listdir(path) if ".tmp" in n] == []


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("pyneuralode: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-iteration spiral run (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*SPIRAL, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any training step runs."""
    def refuse(*args, **kwargs):
        raise AssertionError("a training step ran")
    monkeypatch.setattr(pn.Trainer, "step", refuse)


# -- item 2: checkpoint and metrics are one unit; no temporaries left -------------------------------------------

def test_crash_between_checkpoint_and_metrics_loses_no_records(tmp_path, monkeypatch):
    from pyneuralode.problems._spiral_run import train_spiral
    from pyneuralode.problems.spiral import SpiralConfig

    cfg, out, seen = SpiralConfig(backend="torch", iters=4, eval_every=2), tmp_path / "run", {}
    real_write = MetricsLog.write

    def write_or_crash(log):
        if log.records and log.records[-1]["iteration"] == 4 and not seen:  # checkpoint 4 is on disk by now
            seen["records"] = copy.deepcopy(log.records)
            raise _Crash
        return real_write(log)

    monkeypatch.setattr(MetricsLog, "write", write_or_crash)
    with pytest.raises(_Crash):
        train_spiral(cfg, out, show_progress=False)
    monkeypatch.undo()
    assert pn.train.load_checkpoint(out / "checkpoint.npz")[1]["iteration"] == 4
    assert [r["iteration"] for r in _records(out)] == [1, 2]  # the views lag behind the checkpoint
    train_spiral(cfg, out, resume=True, show_progress=False)
    assert _records(out) == seen["records"]  # every record of the uninterrupted run, step times included


def test_metrics_json_is_strict_json(tmp_path):
    """NaN was written as a bare NaN (not JSON: jq and JavaScript refuse it) and np.int64(3) as 3.0 (a new user's
    report); now null and 3, in the summary and the records, and the CSV keeps its columns."""
    log = MetricsLog(tmp_path, summary={"best": np.float64("nan"), "epochs": np.int64(3)})
    log.append(iteration=np.int64(3), loss=float("nan"), lr=np.float32(0.5), grid=np.array([1.0, np.inf]))
    text = log.write().read_text()
    data = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert data["summary"] == {"best": None, "epochs": 3}
    assert data["records"] == [{"iteration": 3, "loss": None, "lr": 0.5, "grid": [1.0, None]}]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "iteration,loss,lr,grid"


def test_failed_metrics_write_leaves_no_temporary_and_the_old_file(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, records=[{"iteration": 1, "loss": 0.5}])
    log.write()
    before = (tmp_path / "metrics.json").read_bytes()
    log.append(iteration=2, loss=0.25)
    full_disk(monkeypatch, "metrics")
    with pytest.raises(OSError, match="No space left"):
        log.write()
    monkeypatch.undo()
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert _no_temporaries(tmp_path), os.listdir(tmp_path)


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".checkpoint.tmp.npz").write_bytes(b"half")
    (tmp_path / "metrics.json.tmp").write_text("{")  # the name earlier versions used
    with RunDirectory(tmp_path, config={"iters": 1}, budget_key="iters", counter="iteration"):
        assert os.listdir(tmp_path) == [".lock"]  # temporaries gone, so the directory counts as empty


# -- item 3: one live run per directory; nothing replaced by accident ------------------------------------------

def test_second_live_run_is_refused(tmp_path, capsys, no_training):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pyneuralode.train import RunDirectory\n"
         f"with RunDirectory({str(out)!r}, config={{}}, budget_key='iters', counter='iteration'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main([*SPIRAL, "--out", str(out)]) == 2
        err = _one_line_error(capsys)
        assert f"{out} is in use by another run (pid {holder.pid}, started " in err and "choose another --out" in err
    finally:
        holder.kill()  # kill -9: the operating system releases the lock
        holder.wait()
    with RunDirectory(out, config={}, budget_key="iters", counter="iteration"):
        pass


def test_existing_run_needs_resume_or_overwrite(run_copy, capsys):
    records, params = _records(run_copy), np.load(run_copy / "params.npy")
    assert main([*SPIRAL, "--out", str(run_copy)]) == 2
    assert (f"{run_copy} already holds a run (checkpoint.npz, metrics.csv, metrics.json, params.npy, ...): continue "
            "it with --resume, start again with --overwrite") in _one_line_error(capsys)
    assert main([*SPIRAL, "--out", str(run_copy), "--resume", "--overwrite"]) == 2
    assert "give one of them" in _one_line_error(capsys)
    # A finished run re-run with --resume and the same options: no step, the same records and weights.
    assert main([*SPIRAL, "--out", str(run_copy), "--resume"]) == 0
    assert _records(run_copy) == records
    np.testing.assert_array_equal(np.load(run_copy / "params.npy"), params)
    # --overwrite starts again (same seed: the same run) and leaves files that are not the run's.
    (run_copy / "notes.txt").write_text("mine")
    assert main([*SPIRAL, "--out", str(run_copy), "--overwrite"]) == 0
    assert [r["loss"] for r in _records(run_copy)] == [r["loss"] for r in records]
    assert (run_copy / "notes.txt").read_text() == "mine"


def test_resume_with_other_options_names_each_difference(run_copy, capsys, no_training):
    """The refusal printed the checkpoint's whole config and left the user to find what differed."""
    assert main([*SPIRAL, "--out", str(run_copy), "--resume", "--lr", "0.5", "--seed", "3", "--iters", "6"]) == 2
    err = _one_line_error(capsys)
    assert "use the same options (--seed: the checkpoint has 0, this run 3; --lr: the checkpoint has" in err
    assert "this run 0.5)" in err and "--iters" not in err, err  # the length may grow: not a difference


# -- item 4: checked before training; a full disk mid-run keeps the last consistent state ------------------------

def test_out_that_is_a_file_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "taken").write_text("")
    assert main([*SPIRAL, "--out", str(tmp_path / "taken")]) == 2
    assert f"--out {tmp_path / 'taken'} is a file, not a directory" in _one_line_error(capsys)
    assert main([*SPIRAL, "--out", str(tmp_path / "taken" / "run")]) == 2
    assert "Cannot create the run directory" in _one_line_error(capsys)


@pytest.mark.parametrize("code, words", [(errno.EACCES, "the directory is not writable"),
                                         (errno.EROFS, "the directory is not writable"),
                                         (errno.ENOSPC, "the disk is full")])
def test_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch, no_training, code, words):
    real_open = os.open

    def refuse(path, *args, **kwargs):  # as a read-only directory, file system or full disk answers
        if str(path).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert main([*SPIRAL, "--out", str(tmp_path / "run")]) == 2
    assert f"Cannot write to the run directory {tmp_path / 'run'} ({words})" in _one_line_error(capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_is_refused_before_training(tmp_path, capsys, no_training):
    (tmp_path / "run").mkdir(mode=0o555)
    assert main([*SPIRAL, "--out", str(tmp_path / "run")]) == 2
    assert "(the directory is not writable)" in _one_line_error(capsys)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="names open files through /proc")
def test_full_disk_mid_run_stops_in_one_line_and_resumes_identically(finished, tmp_path, capsys, monkeypatch):
    out, real_fsync, synced = tmp_path / "run", os.fsync, []

    def fsync(fd):  # a full disk surfaces when the data is flushed: the checkpoint of iteration 2 lands, 4 does not
        if "checkpoint" in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            synced.append(fd)
            if len(synced) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*SPIRAL, "--out", str(out)]) == 2
    monkeypatch.undo()
    err = _one_line_error(capsys)
    assert (f"Could not write {out / 'checkpoint.npz'} (the disk is full), so the run stopped; its checkpoint at "
            "iteration 2 is intact and holds every record up to it: continue with --resume") in err
    assert _no_temporaries(out), os.listdir(out)
    assert pn.train.load_checkpoint(out / "checkpoint.npz")[1]["iteration"] == 2
    assert [r["iteration"] for r in _records(out)] == [1, 2]
    assert main([*SPIRAL, "--out", str(out), "--resume"]) == 0
    assert [r["loss"] for r in _records(out)] == [r["loss"] for r in _records(finished)]
    np.testing.assert_array_equal(np.load(out / "params.npy"), np.load(finished / "params.npy"))


# -- item 16: damaged files are one clear error; metrics are never needed to resume -----------------------------

def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_bit_in_the_parameters(path):
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0x10  # inside params.npy's data
    path.write_bytes(bytes(data))


def _rewrite(path, change):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(path, **change(arrays))


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(b""), "is damaged (truncated, empty, or not a pyneuralode checkpoint)"),
    (_truncate, "is damaged"),
    (_flip_a_bit_in_the_parameters, "is damaged (Bad CRC-32 for file 'params.npy')"),
    (lambda p: _rewrite(p, lambda a: {k: v for k, v in a.items() if k != "__meta__"}), "has no metadata"),
    (lambda p: _rewrite(p, lambda a: {**a, "extra": np.array([{"pickled": 1}], dtype=object)}), "is damaged"),
    (lambda p: p.write_bytes(b"\x93NUMPY" + bytes(100)), "is damaged"),
], ids=["empty", "truncated", "bit-flip", "no-metadata", "pickled-object", "not-npz"])
def test_damaged_checkpoint_is_one_line_naming_the_file_and_the_fix(run_copy, capsys, no_training, damage, words):
    damage(run_copy / "checkpoint.npz")
    assert main([*SPIRAL, "--out", str(run_copy), "--resume"]) == 2
    err = _one_line_error(capsys)
    assert f"Checkpoint {run_copy / 'checkpoint.npz'} {words}" in err
    assert "start the run again with --overwrite" in err and "allow_pickle" not in err


_ADAM_MOMENTS = {"opt_0_step": np.array(1.0), "opt_0_exp_avg": np.zeros((50, 2)),
                 "opt_0_exp_avg_sq": np.zeros((50, 2))}  # torch creates these at the first step


@pytest.mark.parametrize("backend, change, words", [
    ("jax", lambda a: {k: v for k, v in a.items() if k != "opt_1"}, "The state lacks opt_1"),
    ("torch", lambda a: {k: v for k, v in a.items() if k != "opt_steps"}, "The state lacks opt_steps"),
    ("jax", lambda a: {**a, "opt_1": np.zeros(3)}, "'opt_1' is float64[3] but this trainer's optimiser state needs "
                                                   "float64[252]"),
    ("torch", lambda a: {**a, **_ADAM_MOMENTS, "opt_0_exp_avg": np.zeros(3)},
     "optimiser entry opt_0_exp_avg has shape (3,) but parameter 0 has shape (50, 2)"),
    ("jax", lambda a: {**a, "opt_0": np.zeros(2)}, "'opt_0' is float64[2] but this trainer's optimiser state needs "
                                                   "int32[]"),
], ids=["jax-missing", "torch-missing", "jax-wrong-shape", "torch-wrong-shape", "jax-wrong-kind"])
def test_state_that_does_not_fit_the_trainer_is_refused(backend, change, words, tmp_path):
    pytest.importorskip("diffrax" if backend == "jax" else "torch")
    from pyneuralode.problems._spiral_run import spiral_model
    from pyneuralode.problems.spiral import SpiralConfig

    model = spiral_model(SpiralConfig(backend=backend))
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2))
    trainer.init(model.init(0))
    arrays = change(trainer.state_arrays())
    with pytest.raises(pn.SpecError) as exc:
        pn.Trainer(model, optimizer=pn.Adam(lr=1e-2)).load_state_arrays(arrays)
    assert words in str(exc.value)
    config = {"iters": 4}
    pn.train.save_checkpoint(tmp_path / "checkpoint.npz", arrays, {"iteration": 2, "config": config, "records": []})
    with RunDirectory(tmp_path, config=config, budget_key="iters", counter="iteration", resume=True) as run:
        with pytest.raises(pn.RunDirectoryError) as exc:
            run.start(pn.Trainer(model, optimizer=pn.Adam(lr=1e-2)), init_params=model.init(0))
    assert str(exc.value).startswith(f"Checkpoint {tmp_path / 'checkpoint.npz'} does not fit this run: {words}")


@pytest.mark.parametrize("damage", [lambda p: p.unlink(), lambda p: p.write_text('{"records": [1, 2')],
                         ids=["missing", "cut"])
def test_damaged_metrics_do_not_block_resuming(finished, run_copy, damage):
    damage(run_copy / "metrics.json")
    assert main([*SPIRAL, "--out", str(run_copy), "--resume"]) == 0
    assert _records(run_copy) == _records(finished)
