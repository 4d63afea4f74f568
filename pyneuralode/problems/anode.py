"""Augmented neural ODEs vs neural ODEs (Dupont, Doucet & Teh 2019): ``pyneuralode anode --problem a1|a2``.

Both models train side by side, step for step, on the same batches:

- ``a1``: the map ``-1 -> 1``, ``1 -> -1`` on the line (``pn.datasets.anode_a1``). NODE is
  ``pn.ODEModel(MLP([1, h, h, 1]))``; ANODE is ``pn.ODEModel(MLP([1 + d, w, w, 1 + d]), augment=d)``, whose
  output is the data feature of the augmented state. Loss: MSE at ``t = 1`` (the Trainer's loss over ``ts = [0, 1]``
  is half of it, the ``t = 0`` residual being zero by construction).
- ``a2``: the 2-D annulus classification (``pn.datasets.anode_a2``) with ``pn.Network``: NODE is
  ``ODEBlock(MLP([2, h, h, 2])) -> Linear(2, 2)``, ANODE ``Augment(d) -> ODEBlock(MLP([2 + d, w, w, 2 + d])) ->
  Linear(2 + d, 2)``; cross-entropy.

The fields are Dupont et al.'s three-layer MLPs (ReLU by default). With ``match_params`` (default) NODE's hidden
width ``h`` is chosen so that its parameter count is the nearest to ANODE's, as the paper compares them.
"""

from __future__ import annotations

import dataclasses

from .._errors import SpecError
from ._options import add_config_options, add_run_options, check_options, config_from_args, option_type, run_problem

PROBLEMS = ("a1", "a2")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnodeConfig:
    """Settings of a NODE-vs-ANODE run (the CLI's options)."""

    problem: str = "a2"
    backend: str = "jax"
    iters: int = 300
    augment_dims: int = 1
    width: int = 32
    match_params: bool = True
    activation: str = "relu"
    lr: float | None = None
    rtol: float = 1e-3
    atol: float = 1e-4
    batch_size: int = 128
    points: int = 1500
    eval_every: int = 50
    seed: int = 0
    dtype: str = "float32"

    @property
    def sharded_batch(self) -> int:
        """The samples of one training step, which ``--devices`` splits: A1's two points, or an A2 minibatch."""
        return 2 if self.problem == "a1" else min(self.batch_size, self.points)

    def __post_init__(self):
        if self.problem not in PROBLEMS:
            raise SpecError(f"problem must be one of {', '.join(PROBLEMS)}, got {self.problem!r}.")
        check_options(self)
        if self.lr is None:  # two points learn fast; the annulus needs small steps
            object.__setattr__(self, "lr", 1e-2 if self.problem == "a1" else 1e-3)


def add_parser(subparsers) -> None:
    """``pyneuralode anode``."""
    d = AnodeConfig()
    p = subparsers.add_parser("anode", help="train a neural ODE and an augmented one side by side on Dupont et al.'s "
                                            "A1 (1-D crossing) or A2 (annulus): loss, NFE, PNG")
    p.add_argument("--problem", default=d.problem, choices=PROBLEMS)
    p.add_argument("--backend", default=d.backend, choices=["jax", "torch"])
    p.add_argument("--iters", type=option_type("iters"), default=d.iters)
    p.add_argument("--augment-dims", type=option_type("augment_dims"), default=d.augment_dims,
                   help="augmented dimensions d")
    p.add_argument("--width", type=option_type("width"), default=d.width, help="ANODE hidden width")
    p.add_argument("--no-match-params", dest="match_params", action="store_false",
                   help="give NODE the same hidden width instead of the same parameter count")
    p.add_argument("--activation", default=d.activation, choices=["relu", "tanh", "softplus"])
    p.add_argument("--lr", type=option_type("lr"), default=d.lr, help="Adam learning rate (default 1e-2 for a1, 1e-3 for a2)")
    add_config_options(p, d, "rtol", "atol")
    p.add_argument("--batch-size", type=option_type("batch_size"), default=d.batch_size, help="a2 only")
    p.add_argument("--points", type=option_type("points"), default=d.points, help="a2 training points")
    add_config_options(p, d, "eval_every", "seed", "dtype")
    add_run_options(p, out_help="output directory (default runs/anode-<problem>-<backend>)", brief_help=True,
                    devices=True)
    p.set_defaults(func=run)


def run(args) -> int:
    """``pyneuralode anode``: train both, print the side-by-side summary, write metrics, checkpoint and the PNG."""
    from pathlib import Path

    from ._anode_run import format_summary, train_anode

    cfg = config_from_args(AnodeConfig, args)
    out = Path(args.out or f"runs/anode-{cfg.problem}-{cfg.backend}")
    return run_problem(args, cfg, out, train=train_anode, format_summary=format_summary, plot="anode.png",
                       devices=True)
