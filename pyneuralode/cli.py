"""The ``pyneuralode`` command: ``info``, ``spiral``, ``compare`` and the other benchmark problems.

Each subcommand is a thin layer over the library; problem modules own their options and runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._errors import PyNeuralODEError
from .backends._registry import BACKEND_NAMES, backend_info
from .problems._options import add_config_options, add_run_options, config_from_args, option_type, run_problem

DESCRIPTION = ("Define a neural ODE once, run it on JAX, PyTorch or Julia, and check that the backends agree: "
               "train the paper's benchmark problems (spiral, mnist, cnf), compare backends, run the benchmarks.")
"""The text ``pyneuralode --help`` shows (plain text: the terminal renders no reST)."""


def _cmd_info(args) -> int:
    import platform

    import numpy as np

    from . import __version__
    print(f"pyneuralode {__version__} — Python {platform.python_version()}, numpy {np.__version__}")
    for name in BACKEND_NAMES:
        info = backend_info(name)
        if info["installed"]:
            versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
            devices = ", ".join(info.get("devices", [])) or "-"
            print(f"  {name:<6} installed   {versions}; devices: {devices}")
        else:
            why = info.get("error") or f"missing {', '.join(info['missing'])}"
            print(f"  {name:<6} unavailable {why}\n         install: {info['install']}")
    return 0


def _add_spiral(sub) -> None:
    from .problems.spiral import SpiralConfig
    d = SpiralConfig()
    p = sub.add_parser("spiral", help="train the paper's spiral (progress bar, metrics JSON, checkpoint, PNG)")
    p.add_argument("--backend", default=d.backend, choices=BACKEND_NAMES)
    p.add_argument("--iters", type=option_type("iters"), default=d.iters)
    p.add_argument("--seed", type=option_type("seed"), default=d.seed)
    p.add_argument("--lr", type=option_type("lr"), default=d.lr, help="Adam learning rate")
    add_config_options(p, d, "rtol", "atol")
    p.add_argument("--adjoint", default=d.adjoint,
                   choices=["DirectAdjoint", "CheckpointAdjoint", "BacksolveAdjoint"])
    add_config_options(p, d, "dtype", "eval_every")
    add_run_options(p, out_default="runs/spiral", out_help="output directory (default runs/spiral)", devices=True)
    p.set_defaults(func=_cmd_spiral)


def _cmd_spiral(args) -> int:
    from .problems._spiral_run import format_summary, train_spiral
    from .problems.spiral import SpiralConfig
    cfg = config_from_args(SpiralConfig, args)
    return run_problem(args, cfg, args.out, train=train_spiral, format_summary=format_summary, plot="spiral.png",
                       devices=True)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="run a benchmark problem on several backends and print the agreement table")
    p.add_argument("problem", choices=["spiral"] + [name for name in ("mnist", "cnf")
                                                    if hasattr(_problem_module(name), "compare_backends")])
    p.add_argument("--backends", default="jax,torch", help="comma-separated, e.g. jax,torch,julia")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--rtol", type=option_type("rtol"), default=1e-6)
    p.add_argument("--atol", type=option_type("atol"), default=None, help="default: rtol")
    p.add_argument("--adjoint", default="DirectAdjoint")
    p.add_argument("--seed", type=option_type("seed"), default=0)
    p.add_argument("--activation", default="relu", choices=["relu", "softplus"],
                   help="mnist only: the ODE block's activation (relu as the paper; softplus gives smooth dynamics)")
    p.add_argument("--json", help="also write the comparison as JSON to this file")
    p.set_defaults(func=_cmd_compare)


def _problem_module(problem: str):
    """``pyneuralode.problems.<problem>`` if that module exists (problems add CLI pieces by defining
    ``add_parser(subparsers)`` and ``compare_backends(args, backends)``), else None."""
    import importlib
    import importlib.util
    if importlib.util.find_spec(f"pyneuralode.problems.{problem}") is None:
        return None
    return importlib.import_module(f"pyneuralode.problems.{problem}")


def _cmd_compare(args) -> int:
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if args.problem == "spiral":
        comparison = _compare_spiral(args, backends)
    else:
        comparison = _problem_module(args.problem).compare_backends(args, backends)
    print(comparison)
    if args.json:
        Path(args.json).write_text(comparison.to_json())
    return 0


def _compare_spiral(args, backends):
    import numpy as np

    from . import _adjoints, _control, _losses, _model, _solvers
    from ._compare import compare
    from .problems.spiral import sample_batch, spiral_data, spiral_field
    if "julia" in backends:  # Julia must start before torch is imported (juliacall's documented crash)
        from .backends import get_backend
        try:
            get_backend("julia")
        except PyNeuralODEError:
            pass
    ts, ys = spiral_data(backend=next((b for b in backends if b != "julia"), "jax"))
    y0, t, target = sample_batch(np.random.default_rng(args.seed), ts, ys)
    model = _model.ODEModel(spiral_field(), solver=_solvers.Dopri5(),
                            control=_control.StepControl(rtol=args.rtol, atol=args.atol or args.rtol),
                            adjoint=_adjoints.as_adjoint(args.adjoint), dtype=args.dtype)
    params = model.init(args.seed)
    title = (f"spiral: 2-50-2 tanh on y**3, batch 20x10, Dopri5, {model.adjoint.name}, {args.dtype}, "
             f"rtol={args.rtol:g}, atol={args.atol or args.rtol:g}, identical weights (seed {args.seed})")
    return compare(model, backends=backends, params=params, y0=y0, ts=t, loss=_losses.L1(target), title=title)


def _cmd_bench(args) -> int:
    """``pyneuralode bench ...`` runs ``python -m benchmarks ...`` from a source checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").exists():
        print("pyneuralode: error: the benchmark suite ships with the source, not the wheel: git clone the "
              "repository and run `make bench` (or `python -m benchmarks`) there.", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from benchmarks.__main__ import main as bench_main
    return bench_main(args.bench_args) or 0


def _add_optional(sub, problem: str) -> None:
    """Problems whose modules provide ``add_parser(subparsers)`` join the command."""
    module = _problem_module(problem)
    if hasattr(module, "add_parser"):
        module.add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyneuralode", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="backends, versions, devices, and how to install what is missing").set_defaults(
        func=_cmd_info)
    _add_spiral(sub)
    _add_compare(sub)
    for problem in ("mnist", "cnf", "stiff", "anode", "latent", "ude"):
        _add_optional(sub, problem)
    bench = sub.add_parser("bench", help="run the benchmark suite from a source checkout (options as "
                                         "python -m benchmarks: --quick, --only, --device)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and not set(argv[1:2]) & {"-h", "--help"}:  # everything after is the suite's own
        return _cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PyNeuralODEError as err:
        print(f"pyneuralode: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyneuralode: interrupted (a run with a checkpoint can continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
