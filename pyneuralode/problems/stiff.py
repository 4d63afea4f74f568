"""``pyneuralode stiff``: the command-line face of the Robertson problem (:mod:`pyneuralode.problems.robertson`)."""

from __future__ import annotations

from ..backends import BACKEND_NAMES
from .._solvers import STIFF_SOLVERS
from ._options import add_config_options, add_run_options, config_from_args, option_type, run_problem
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
    add_config_options(p, d, "rtol", "atol")
    p.add_argument("--points", type=option_type("points"), default=d.points, help="log-spaced observations")
    p.add_argument("--data-noise", type=option_type("data_noise"), default=d.data_noise,
                   help="relative noise of the observations")
    p.add_argument("--perturb", type=option_type("perturb"), default=d.perturb,
                   help="initial guess: true log k moved by this much in each coordinate")
    p.add_argument("--seed", type=option_type("seed"), default=d.seed)
    p.add_argument("--eval-every", type=option_type("eval_every"), default=d.eval_every,
                   help="checkpoint and metrics every N iterations")
    add_run_options(p, out_default="runs/stiff")
    p.set_defaults(func=_cmd_stiff)


def _cmd_stiff(args) -> int:
    from ._stiff_run import format_summary, train_stiff
    cfg = config_from_args(RobertsonConfig, args)
    return run_problem(args, cfg, args.out, train=train_stiff, format_summary=format_summary, plot="robertson.png")
