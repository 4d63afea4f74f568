"""MNIST with the paper's ODE-Net, RK-Net and ResNet (Chen et al. 2018, Table 1; torchdiffeq's
``examples/odenet_mnist.py``).

Networks: :func:`mnist_model` (see ``_mnist_models``). Data: :func:`pyneuralode.datasets.mnist` (train 50k /
test 10k), random-crop augmentation (pad 4) as torchdiffeq. Full run: SGD momentum 0.9, lr 0.1 × batch/128, ×0.1 at
epochs 60, 100, 140, 160 epochs (documented for GPUs). ``--quick``: a 32-channel ODE-Net trained with Adam for
3 epochs on the JAX backend, sized for 2 CPU cores (:data:`QUICK`).

Command line: ``pyneuralode mnist --model odenet --backend jax --epochs E [--channels 64] [--quick] [--out DIR]
[--resume]`` (:func:`add_parser`, :func:`run`, or :func:`main` with an argv list); ``pyneuralode compare mnist``
(:func:`compare_backends`).
"""

from __future__ import annotations

import argparse
import dataclasses

from .._errors import SpecError
from ._mnist_models import MNIST_INPUT_SHAPE, MNIST_MODELS, mnist_model
from ._options import add_config_options, add_run_options, check_options, config_fields, option_type, run_problem

__all__ = ["MNISTConfig", "add_parser", "compare_backends", "main", "mnist_model", "run", "MNIST_INPUT_SHAPE"]

COMPARE_CHANNELS = 8
COMPARE_BATCH = 16
"""``pyneuralode compare mnist``: an 8-channel ODE-Net on the first 16 test images (seconds per backend)."""


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
    groups: int | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    test_batch: int = 1000
    torch_threads: int | None = None

    def __post_init__(self):
        check_options(self)
        if self.train_limit is not None and self.train_limit < self.batch:
            raise SpecError(f"train_limit={self.train_limit} is smaller than one batch ({self.batch}): raise "
                            "--train-limit or lower --batch.")


QUICK = dict(channels=32, epochs=3, optimizer="adam", lr=3e-3, tol=1e-2, augment=False)
"""``--quick``: what changes from the full run (model, backend and explicit options still apply; ``groups``
defaults to ``channels // 2``).

Sized on the shared 2-core CPU (the target: ≥ 98% test accuracy in ≤ 20 minutes; measured 2026-11 at load 7: see
``benchmarks/results/mnist_quick.json``):

- Backend: JAX (the default) is the faster here: a 16-channel 128-batch backsolve step took ~0.4 s vs ~0.7 s
  on torch with one thread and ~3 s with two threads competing with other processes (``--torch-threads``).
- 32 channels with ``GroupNorm(16, 32)`` (two channels per group, as the paper's GroupNorm(32, 64)): with
  torchdiffeq's ``min(32, C)`` groups a narrow net normalises each channel on its own, and the head's
  GN → ReLU → global-average-pool then passes almost no signal — 16 channels still had loss 1.3 after 200 steps.
- Dopri5 at rtol = atol = 1e-2 (NFE-F ~20 per step instead of 26–50 at 1e-3), Adam 3e-3, batch 128, 3 epochs of
  the 50k training images without augmentation (random crops slow early convergence; they pay off over long
  runs). Measured: test accuracy 95.49% / 98.14% / 98.43% after epochs 1/2/3, ~4.2 min per epoch, 13 min 22 s
  for the whole command (52,938 parameters)."""


def add_parser(subparsers) -> None:
    """Add ``pyneuralode mnist`` to the CLI's subparsers."""
    d = MNISTConfig()
    p = subparsers.add_parser("mnist", help="train the paper's MNIST ODE-Net/RK-Net/ResNet (progress bar, "
                                            "per-epoch metrics JSON/CSV, checkpoint, PNG)")
    p.add_argument("--model", default=d.model, choices=MNIST_MODELS)
    p.add_argument("--backend", default=d.backend, choices=["jax", "torch"])
    p.add_argument("--epochs", type=option_type("epochs"),
                   default=None, help=f"default {d.epochs} ({QUICK['epochs']} with --quick)")
    p.add_argument("--channels", type=option_type("channels"), default=None,
                   help=f"default {d.channels} ({QUICK['channels']} with --quick)")
    p.add_argument("--batch", type=option_type("batch"), default=d.batch)
    p.add_argument("--optimizer", default=None, choices=["sgd", "adam"],
                   help="sgd: momentum 0.9 with the paper's schedule (default); adam (--quick)")
    p.add_argument("--lr", type=option_type("lr"), default=None, help="base learning rate (sgd: scaled by batch/128)")
    p.add_argument("--groups", type=option_type("groups"), default=None,
                   help="GroupNorm groups (default min(32, channels) as torchdiffeq; channels/2 with --quick)")
    p.add_argument("--tol", type=option_type("tol"), default=None,
                   help=f"ODE-Net rtol = atol (default {d.tol:g}; {QUICK['tol']:g} with --quick)")
    p.add_argument("--adjoint", default=d.adjoint,
                   help="auto (BacksolveAdjoint for odenet), BacksolveAdjoint, CheckpointAdjoint (jax), DirectAdjoint")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    add_config_options(p, d, "dtype", "seed")
    p.add_argument("--train-limit", type=option_type("train_limit"),
                   default=None, help="use only the first N training images")
    p.add_argument("--test-limit", type=option_type("test_limit"),
                   default=None, help="evaluate on only the first N test images")
    p.add_argument("--torch-threads", type=option_type("torch_threads"), default=None,
                   help="torch.set_num_threads for this run (torch backend; default: torch's own). On a shared "
                        "2-core machine 1 thread measured ~5x faster per step than 2 competing with other processes")
    p.add_argument("--quick", action="store_true", help="a 2-CPU-core configuration: 32 channels, GroupNorm(16), tol 1e-2, Adam 3e-3, "
                        "3 epochs, no augmentation")
    add_run_options(p, out_help="output directory (default runs/mnist-<model>-<backend>)", devices=True)
    p.set_defaults(func=run)


def config_from_args(args) -> MNISTConfig:
    """The :class:`MNISTConfig` of parsed CLI arguments (``--quick`` fills the options not given)."""
    base = dataclasses.asdict(MNISTConfig())
    if args.quick:
        base.update(QUICK)
    base.update({k: v for k, v in config_fields(MNISTConfig, args).items() if v is not None})
    if args.quick and getattr(args, "groups", None) is None:
        base["groups"] = base["channels"] // 2
    return MNISTConfig(**base)


def run(args) -> int:
    """``pyneuralode mnist``: train, print the summary, write metrics/checkpoint/PNG. Returns the exit code."""
    from ._mnist_run import format_summary, train_mnist

    cfg = config_from_args(args)
    out = args.out or f"runs/mnist-{cfg.model}-{cfg.backend}"
    return run_problem(args, cfg, out, train=train_mnist, format_summary=format_summary, devices=True)


def main(argv=None) -> int:
    """Run ``pyneuralode mnist`` with ``argv`` (a list of strings, without the subcommand name)."""
    parser = argparse.ArgumentParser(prog="pyneuralode")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mnist", *(argv or [])])
    return args.func(args)


def compare_backends(args, backends, *, channels: int = COMPARE_CHANNELS, batch: int = COMPARE_BATCH):
    """``pyneuralode compare mnist``: the ODE-Net's cross-entropy, logits and parameter gradient on each backend.

    One fixed batch (the first ``batch`` real MNIST test images), a ``channels``-channel ODE-Net
    (:func:`mnist_model`; Dopri5 at ``rtol = args.rtol``, ``atol = args.atol or args.rtol``, gradient method
    ``args.adjoint``), identical weights from ``args.seed``, ``args.dtype``, the field's activation
    ``args.activation`` (``"relu"`` as the paper, or ``"softplus"``). Returns a :class:`pyneuralode.Comparison`;
    ``ys`` are the logits.

    With the paper's ReLU field the dynamics are non-smooth: at tight tolerances the adaptive controller rejects
    many steps at the kinks, and which ones depends on the last bits, so a gradient moves by ~1e-5 when the weights
    move by 1e-15 — the comparison's "round-off floor" column shows it, and the two backends differ by that much
    (tests/test_mnist_model.py). With ``--activation softplus`` they agree to round-off (1.7e-15 at 1e-8).
    """
    import numpy as np

    from .._adjoints import as_adjoint
    from .._compare import compare_networks
    from .._control import StepControl
    from .._network import Network
    from ..datasets import mnist

    atol = args.atol or args.rtol
    test = mnist("test")
    x = np.asarray(test.images[:batch], dtype=args.dtype)
    labels = np.asarray(test.labels[:batch])
    spec = mnist_model("odenet", channels=channels, adjoint=as_adjoint(args.adjoint),
                       control=StepControl(rtol=args.rtol, atol=atol), activation=args.activation)
    net = Network(spec, input_shape=MNIST_INPUT_SHAPE, backend=backends[0] if backends else "jax", dtype=args.dtype)
    title = (f"mnist: ODE-Net ({channels} channels, {args.activation} field, {net.num_params:,} parameters), first "
             f"{batch} test images, Dopri5, {args.adjoint}, {args.dtype}, rtol={args.rtol:g}, atol={atol:g}, "
             f"identical weights (seed {args.seed}), cross-entropy; 'ys' = logits")
    return compare_networks(net, backends=backends, params=net.init(args.seed), x=x, labels=labels, title=title)
