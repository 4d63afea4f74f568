"""``pyneuralode stiff``: the command-line face of the Robertson problem (:mod:`pyneuralode.problems.robertson`)."""

from __future__ import annotations

from pathlib import Path

from ..backends import BACKEND_NAMES
from .._solvers import STIFF_SOLVERS
from ._options import add_run_dir_flags, option_type
from .robertson import RobertsonConfig


def add_parser(subparsers) -> None:
    """Add ``pyneuralode stiff`` to the CLI's subparsers."""
    d = RobertsonConfig()
    p = subparsers.add_parser("stiff", help="recover Robertson's stiff rate constants from noisy data with a stiff "
                                            "solver (progress bar, metrics JSON, checkpoint, PNG)")
    p.add_argument("--backend", default=d.backend, choices=BACKEND_NAMES)
    p.add_argument("--solver", default=d.solver, choices=STIFF_SOLVERS)
    p.add_argument("--iters", type=option_type("iters"), default=d.iters)
    p.add_argument("--lr", type=option_type("lr"), default=d.lr, help="Adam learning rate on log k")
    p.add_argument("--rtol", type=option_type("rtol"), default=d.rtol)
    p.add_argument("--atol", type=option_type("atol"), default=d.atol)
    p.add_argument("--points", type=option_type("points"), default=d.points, help="log-spaced observations")
    p.add_argument("--data-noise", type=option_type("data_noise"), default=d.data_noise,
                   help="relative noise of the observations")
    p.add_argument("--perturb", type=option_type("perturb"), default=d.perturb,
                   help="initial guess: true log k moved by this much in each coordinate")
    p.add_argument("--seed", type=option_type("seed"), default=d.seed)
    p.add_argument("--eval-every", type=option_type("eval_every"), default=d.eval_every,
                   help="checkpoint and metrics every N iterations")
    p.add_argument("--out", default="runs/stiff", help="output directory")
    add_run_dir_flags(p)
    p.set_defaults(func=_cmd_stiff)


def _cmd_stiff(args) -> int:
    from ._stiff_run import format_summary, train_stiff
    cfg = RobertsonConfig(backend=args.backend, solver=args.solver, iters=args.iters, lr=args.lr, rtol=args.rtol,
                          atol=args.atol, points=args.points, data_noise=args.data_noise, perturb=args.perturb,
                          seed=args.seed, eval_every=args.eval_every)
    summary = train_stiff(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                          show_progress=not args.no_progress)
    print(format_summary(summary))
    out = Path(args.out)
    print(f"\nwrote {out / 'metrics.json'}, {out / 'metrics.csv'}, {out / 'checkpoint.npz'}, {out / 'robertson.png'}")
    return 0
