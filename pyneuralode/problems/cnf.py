"""Continuous normalizing flows on 2-D toy densities (Chen et al. 2018 §4, FFJORD's toy experiment).

Data: FFJORD's toy sets (:func:`pyneuralode.datasets.toy_2d`), a fresh batch per iteration. Model: a
:class:`pyneuralode.CNF` on ``t ∈ [0, 1]`` whose field is an MLP with time as its last input (or a ConcatSquash
MLP), Dopri5, exact trace or Hutchinson's; loss ``pn.NLL`` with optional RNODE weights; Adam.

Command line: ``pyneuralode cnf --dataset moons --backend jax --iters N [--trace exact|hutchinson]
[--out DIR] [--resume]`` (:func:`add_parser`, :func:`run`); ``pyneuralode compare cnf`` (:func:`compare_backends`).
"""

from __future__ import annotations

import dataclasses


from .._adjoints import as_adjoint
from .._cnf import CNF
from .._concat_squash import ConcatSquashMLP
from .._control import StepControl
from .._layers import MLP
from .._solvers import Dopri5
from ..datasets import TOY_2D_NAMES
from ._options import add_config_options, add_run_options, check_options, config_from_args, option_type, run_problem

TEST_SEED = 10**6
"""Seed of the held-out points every run evaluates on (training batches use seeds below it)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CNFConfig:
    """Settings of a CNF training run (the CLI's options)."""

    dataset: str = "moons"
    backend: str = "jax"
    iters: int = 1000
    batch: int = 512
    trace: str = "exact"
    noise: str = "rademacher"
    width: int = 64
    depth: int = 2
    layer: str = "mlp"  # "mlp" (time as the last input) or "concatsquash"
    activation: str = "tanh"
    lr: float = 1e-3
    rtol: float = 1e-5
    atol: float = 1e-5
    adjoint: str = "auto"  # CheckpointAdjoint on JAX (diffrax's fast path), DirectAdjoint (backprop) on torch
    kinetic: float = 0.0
    jacobian: float = 0.0
    dtype: str = "float32"
    seed: int = 0
    eval_every: int = 100
    test_size: int = 2000
    plot_samples: int = 20000

    def __post_init__(self):
        check_options(self)


def cnf_field(cfg: CNFConfig):
    """The flow's vector field: ``depth`` hidden layers of ``width`` units."""
    sizes = [2] + [cfg.width] * cfg.depth + [2]
    if cfg.layer == "concatsquash":
        return ConcatSquashMLP(sizes, activation=cfg.activation)
    return MLP(sizes, activation=cfg.activation, time_input=True)


def default_adjoint(backend: str) -> str:
    """``--adjoint auto``: discretise-then-optimise with each library's fastest exact method (the issue's anchors:
    diffrax with checkpointing, torchdiffeq by backprop)."""
    return "CheckpointAdjoint" if backend == "jax" else "DirectAdjoint"


def cnf_model(cfg: CNFConfig, **changes) -> CNF:
    """The :class:`pyneuralode.CNF` a run trains."""
    backend = changes.get("backend", cfg.backend)
    adjoint = default_adjoint(backend) if cfg.adjoint == "auto" else cfg.adjoint
    settings = dict(trace=cfg.trace, noise=cfg.noise, solver=Dopri5(),
                    control=StepControl(rtol=cfg.rtol, atol=cfg.atol), adjoint=as_adjoint(adjoint),
                    backend=backend, dtype=cfg.dtype)
    return CNF(cnf_field(cfg), **{**settings, **changes})


def add_parser(subparsers) -> None:
    """Add ``pyneuralode cnf`` to the CLI's subparsers."""
    d = CNFConfig()
    p = subparsers.add_parser("cnf", help="train a continuous normalizing flow on a 2-D density "
                                          "(progress bar, metrics JSON, checkpoint, PNG)")
    p.add_argument("--dataset", default=d.dataset, choices=TOY_2D_NAMES)
    p.add_argument("--backend", default=d.backend, choices=["jax", "torch"])
    p.add_argument("--iters", type=option_type("iters"), default=d.iters)
    p.add_argument("--batch", type=option_type("batch"), default=d.batch)
    p.add_argument("--trace", default=d.trace, choices=["exact", "hutchinson"])
    p.add_argument("--noise", default=d.noise, choices=["rademacher", "gaussian"])
    p.add_argument("--layer", default=d.layer, choices=["mlp", "concatsquash"])
    p.add_argument("--width", type=option_type("width"), default=d.width)
    p.add_argument("--depth", type=option_type("depth"), default=d.depth, help="hidden layers")
    add_config_options(p, d, "lr", "rtol", "atol")
    p.add_argument("--adjoint", default=d.adjoint,
                   help="auto (CheckpointAdjoint on jax, DirectAdjoint on torch), DirectAdjoint, CheckpointAdjoint "
                        "(jax) or BacksolveAdjoint")
    p.add_argument("--kinetic", type=option_type("kinetic"), default=d.kinetic, help="RNODE kinetic-energy weight")
    p.add_argument("--jacobian", type=option_type("jacobian"), default=d.jacobian, help="RNODE Jacobian-norm weight")
    add_config_options(p, d, "dtype", "seed", "eval_every")
    p.add_argument("--test-size", type=option_type("test_size"),
                   default=d.test_size, help="held-out points for the test NLL")
    p.add_argument("--plot-samples", type=option_type("plot_samples"),
                   default=d.plot_samples, help="data and model samples in the PNG")
    add_run_options(p, out_help="output directory (default runs/cnf-<dataset>-<backend>)", devices=True)
    p.set_defaults(func=run)


def run(args) -> int:
    """``pyneuralode cnf``: train, print the summary, write metrics/checkpoint/PNG. Returns the exit code."""
    from pathlib import Path

    from ._cnf_run import format_summary, train_cnf

    cfg = config_from_args(CNFConfig, args)
    out = Path(args.out or f"runs/cnf-{cfg.dataset}-{cfg.backend}")
    return run_problem(args, cfg, out, train=train_cnf, format_summary=format_summary, plot="cnf.png", devices=True)


def compare_backends(args, backends):
    """``pyneuralode compare cnf``: exact-trace log-densities and NLL gradients of one CNF on each backend.

    Moons, 256 points, ``MLP([2, 64, 64, 2], time_input=True)``, identical weights; outputs compared are the
    per-point log-densities, gradients those of the mean NLL w.r.t. the parameters and the points.
    """
    from types import SimpleNamespace

    from .._compare import Comparison, pair_differences, run_backends
    from .._nll import NLL
    from ..datasets import toy_2d

    cfg = CNFConfig(rtol=args.rtol, atol=args.atol or args.rtol, adjoint=args.adjoint, dtype=args.dtype)
    x = toy_2d("moons", 256, args.seed, dtype=args.dtype)
    flow = cnf_model(cfg, backend="torch" if "jax" not in backends else "jax")
    params = flow.init(args.seed)

    def log_prob_and_gradient(on_backend, p):
        res = on_backend.value_and_grad(p, x, loss=NLL())
        return SimpleNamespace(value=res.value, stats=res.stats, log_prob=on_backend.density(p, x).log_prob,
                               grad_params=res.grad_params, grad_x=res.grad_x)

    results, skipped = run_backends(flow, backends, 3, log_prob_and_gradient,
                                     lambda res: (res.log_prob, res.grad_params, res.grad_x), params)
    pairs = pair_differences(results)
    title = (f"cnf: moons x256, MLP 2-64-64-2 (t last input), exact trace, Dopri5, {cfg.adjoint}, {cfg.dtype}, "
             f"rtol={cfg.rtol:g}, atol={cfg.atol:g}, identical weights (seed {args.seed}); "
             "'ys' = log p(x), 'grad_y0' = d NLL / d x")
    return Comparison(title, tuple(results), pairs, skipped)
