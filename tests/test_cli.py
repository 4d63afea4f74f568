"""The ``pyneuralode`` command's own contract: numbers refused while parsing, plain-text help."""

from __future__ import annotations

import pytest

import pyneuralode as pn
from pyneuralode.cli import main
from pyneuralode.problems.cnf import CNFConfig
from pyneuralode.problems.mnist import MNISTConfig
from pyneuralode.problems.spiral import SpiralConfig


@pytest.mark.parametrize("argv, message", [
    (["spiral", "--eval-every", "0"], "argument --eval-every: must be an integer ≥ 1, got 0"),
    (["spiral", "--iters", "-5"], "argument --iters: must be an integer ≥ 1, got -5"),
    (["spiral", "--iters", "2.5"], "argument --iters: must be an integer ≥ 1, got '2.5'"),
    (["spiral", "--lr", "0"], "argument --lr: must be a number > 0, got 0.0"),
    (["spiral", "--lr", "nan"], "argument --lr: must be a number > 0, got nan"),
    (["spiral", "--rtol", "2"], "argument --rtol: must be a relative tolerance in (0, 1) such as 1e-6, got 2.0"),
    (["spiral", "--atol=-1e-6"], "argument --atol: must be a number > 0, got -1e-06"),
    (["spiral", "--seed", "-1"], "argument --seed: must be an integer ≥ 0, got -1"),
    (["compare", "spiral", "--rtol", "0"], "argument --rtol: must be a relative tolerance in (0, 1)"),
    (["cnf", "--batch", "0"], "argument --batch: must be an integer ≥ 1, got 0"),
    (["cnf", "--eval-every", "0"], "argument --eval-every: must be an integer ≥ 1, got 0"),
    (["cnf", "--kinetic", "-1"], "argument --kinetic: must be a number ≥ 0, got -1.0"),
    (["cnf", "--width", "0"], "argument --width: must be an integer ≥ 1, got 0"),
    (["mnist", "--epochs", "0"], "argument --epochs: must be an integer ≥ 1, got 0"),
    (["mnist", "--tol", "0"], "argument --tol: must be a relative tolerance in (0, 1)"),
    (["mnist", "--train-limit", "0"], "argument --train-limit: must be an integer ≥ 1, got 0"),
])
def test_bad_numbers_are_refused_while_parsing(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's exit: before any backend import or training step
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("make, message", [
    (lambda: SpiralConfig(eval_every=0), "eval_every must be an integer ≥ 1, got 0."),
    (lambda: CNFConfig(lr=-1.0), "lr must be a number > 0, got -1.0."),
    (lambda: MNISTConfig(batch=64, train_limit=10), "train_limit=10 is smaller than one batch (64)"),
    (lambda: SpiralConfig(rtol=1e-9, dtype="float32"), "rtol=1e-09 is below float32's resolution"),
])
def test_run_configs_refuse_the_same_numbers(make, message):
    with pytest.raises(pn.SpecError) as exc:
        make()
    assert message in str(exc.value)


def test_tolerance_below_the_dtype_is_one_line_before_training(tmp_path, capsys):
    assert main(["spiral", "--rtol", "1e-9", "--dtype", "float32", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyneuralode: error: rtol=1e-09 is below float32's resolution") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv", [[], ["spiral"], ["compare"], ["cnf"], ["mnist"], ["info"], ["bench"]],
                         ids=lambda a: " ".join(a) or "top")
def test_help_is_plain_text(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pyneuralode")
    for markup in ("``", "`", ":func:", ":class:", "**"):
        assert markup not in out, f"{markup!r} in {' '.join(argv)} --help"


@pytest.mark.parametrize("argv, message", [
    (["--backend", "torch"], "--backend torch has no stiff solver: use --backend jax or julia."),
    (["--solver", "Rodas5P"], "--solver Rodas5P does not run on --backend jax: use --backend julia, or a stiff "
                              "solver that --backend jax has: --solver ImplicitEuler, Kvaerno3, Kvaerno4, Kvaerno5, "
                              "KenCarp3, KenCarp4, KenCarp5."),
])
def test_stiff_solver_the_backend_lacks_is_one_line_in_flags(argv, message, tmp_path, capsys):
    """--backend torch was offered and then failed with the Python API's advice (choose Dopri5, which --solver does
    not accept); --solver Rodas5P on jax suggested backend='julia' rather than the flag."""
    assert main(["stiff", *argv, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"pyneuralode: error: {message}\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["spiral", "--devices", "3"], "--devices 3 does not divide the batch of 20 samples: use --devices 1, 2, 4, 5."),
    (["cnf", "--devices", "3", "--batch", "64"], "--devices 3 does not divide the batch of 64 samples: use --devices "
                                                 "1, 2, 4, 8, or a --batch that is a multiple of 3 (e.g. 63)."),
    (["anode", "--devices", "3"], "--devices 3 does not divide the batch of 128 samples: use --devices 1, 2, 4, 8."),
    (["anode", "--problem", "a1", "--devices", "4"],
     "--devices 4 does not divide the batch of 2 samples: use --devices 1, 2."),
])
def test_devices_that_do_not_divide_the_batch_name_counts_that_do(argv, message, tmp_path, capsys):
    """spiral --devices 3 advised 'use a batch size that is a multiple of 3 (e.g. 18)', a size spiral has no flag
    for, and only after the run directory was locked and JAX started."""
    assert main([*argv, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert capsys.readouterr().err == f"pyneuralode: error: {message}\n"
    assert not (tmp_path / "r").exists()
