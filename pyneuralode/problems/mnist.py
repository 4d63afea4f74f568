"""MNIST with the paper's ODE-Net, RK-Net and ResNet (Chen et al. 2018, Table 1; torchdiffeq's
``examples/odenet_mnist.py``; issue 5).

Networks: :func:`mnist_model` (see ``_mnist_models``). Data: :func:`pyneuralode.datasets.mnist` (train 50k /
test 10k), random-crop augmentation (pad 4) as torchdiffeq. Full run: SGD momentum 0.9, lr 0.1 × batch/128, ×0.1 at
epochs 60, 100, 140, 160 epochs (documented for GPUs). ``--quick``: a 16-channel ODE-Net trained with Adam for a
few epochs, sized for 2 CPU cores.

Command line: ``pyneuralode mnist --model odenet --backend jax --epochs E [--channels 64] [--quick] [--out DIR]
[--resume]`` (:func:`add_parser`, :func:`run`, or :func:`main` with an argv list).
"""

from __future__ import annotations

import argparse
import dataclasses

from ._mnist_models import MNIST_INPUT_SHAPE, MNIST_MODELS, mnist_model

__all__ = ["MNISTConfig", "add_parser", "main", "mnist_model", "run", "MNIST_INPUT_SHAPE"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MNISTConfig:
    """Settings of an MNIST training run (the CLI's options). Defaults are the paper code's full run."""

    model: str = "odenet"
    backend: str = "jax"
    epochs: int = 160
    channels: int = 64
    batch: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    tol: float = 1e-3
    adjoint: str = "auto"
    augment: bool = True
    dtype: str = "float32"
    seed: int = 0
    train_limit: int | None = None
    test_batch: int = 1000


QUICK = dict(channels=16, epochs=3, optimizer="adam", lr=3e-3)
"""``--quick``: what changes from the full run (model, backend and explicit options still apply)."""


def add_parser(subparsers) -> None:
    """Add ``pyneuralode mnist`` to the CLI's subparsers."""
    d = MNISTConfig()
    p = subparsers.add_parser("mnist", help="train the paper's MNIST ODE-Net/RK-Net/ResNet (progress bar, "
                                            "per-epoch metrics JSON/CSV, checkpoint, PNG)")
    p.add_argument("--model", default=d.model, choices=MNIST_MODELS)
    p.add_argument("--backend", default=d.backend, choices=["jax", "torch"])
    p.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs} ({QUICK['epochs']} with --quick)")
    p.add_argument("--channels", type=int, default=None, help=f"default {d.channels} ({QUICK['channels']} with "
                                                                "--quick)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--optimizer", default=None, choices=["sgd", "adam"],
                   help="sgd: momentum 0.9 with the paper's schedule (default); adam (--quick)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (sgd: scaled by batch/128)")
    p.add_argument("--tol", type=float, default=d.tol, help="ODE-Net rtol = atol")
    p.add_argument("--adjoint", default=d.adjoint,
                   help="auto (BacksolveAdjoint for odenet), BacksolveAdjoint, CheckpointAdjoint (jax), DirectAdjoint")
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--quick", action="store_true", help="a 2-CPU-core configuration (16 channels, Adam, 3 epochs)")
    p.add_argument("--out", default=None, help="output directory (default runs/mnist-<model>-<backend>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def config_from_args(args) -> MNISTConfig:
    """The :class:`MNISTConfig` of parsed CLI arguments (``--quick`` fills the options not given)."""
    base = dataclasses.asdict(MNISTConfig())
    if args.quick:
        base.update(QUICK)
    names = {f.name for f in dataclasses.fields(MNISTConfig)}
    base.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    return MNISTConfig(**base)


def run(args) -> int:
    """``pyneuralode mnist``: train, print the summary, write metrics/checkpoint/PNG. Returns the exit code."""
    from ._mnist_run import format_summary, train_mnist

    cfg = config_from_args(args)
    out = args.out or f"runs/mnist-{cfg.model}-{cfg.backend}"
    summary = train_mnist(cfg, out, resume=args.resume, show_progress=not args.no_progress)
    print(format_summary(summary))
    return 0


def main(argv=None) -> int:
    """Run ``pyneuralode mnist`` with ``argv`` (a list of strings, without the subcommand name)."""
    parser = argparse.ArgumentParser(prog="pyneuralode")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mnist", *(argv or [])])
    return args.func(args)
