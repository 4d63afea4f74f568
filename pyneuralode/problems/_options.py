"""The options every training subcommand shares: the bounds of each numeric option, in one table used twice,
the run-directory flags (``--out``, ``--resume``, ``--overwrite``, ``--no-progress``), and the steps every
subcommand's ``run(args)`` takes (a config from the parsed arguments, train, print the summary).

The command line uses :func:`option_type` as argparse's ``type=``, so ``--eval-every 0`` is refused while the
arguments are parsed — before any backend is imported or any step trained. The run configs
(``SpiralConfig``, ``CNFConfig``, ``MNISTConfig``) call :func:`check_options` when they are built, so a Python
caller gets the same words as a :class:`pyneuralode.SpecError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from pathlib import Path

from .._control import check_resolution
from .._errors import SpecError


@dataclasses.dataclass(frozen=True)
class _Rule:
    integer: bool
    accepts: object  # value -> bool
    words: str

    def problem(self, value) -> str | None:
        """Why ``value`` breaks the rule (``None`` when it does not)."""
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
              and (not self.integer or float(value).is_integer()) and self.accepts(value))
        return None if ok else f"must be {self.words}, got {value!r}"


_COUNT = _Rule(True, lambda v: v >= 1, "an integer ≥ 1")
_SEED = _Rule(True, lambda v: v >= 0, "an integer ≥ 0")
_POSITIVE = _Rule(False, lambda v: v > 0, "a number > 0")
_WEIGHT = _Rule(False, lambda v: v >= 0, "a number ≥ 0")
_RTOL = _Rule(False, lambda v: 0 < v < 1, "a relative tolerance in (0, 1) such as 1e-6")

RULES: dict[str, _Rule] = {
    "iters": _COUNT, "epochs": _COUNT, "eval_every": _COUNT, "batch": _COUNT, "batch_size": _COUNT,
    "batch_time": _Rule(True, lambda v: v >= 2, "an integer ≥ 2 (a window needs two time points)"),
    "channels": _COUNT, "groups": _COUNT, "width": _COUNT, "depth": _COUNT, "test_size": _COUNT,
    "plot_samples": _COUNT, "train_limit": _COUNT, "test_limit": _COUNT, "test_batch": _COUNT,
    "torch_threads": _COUNT, "seed": _SEED, "lr": _POSITIVE, "atol": _POSITIVE, "rtol": _RTOL, "tol": _RTOL,
    "kinetic": _WEIGHT, "jacobian": _WEIGHT, "devices": _COUNT, "points": _COUNT, "data_noise": _WEIGHT,
    "perturb": _WEIGHT, "augment_dims": _COUNT, "latent_size": _COUNT, "rnn_width": _COUNT, "train_size": _COUNT,
    "spirals": _Rule(True, lambda v: v >= 2, "an integer ≥ 2"),
    "obs": _Rule(True, lambda v: 2 <= v <= 100, "an integer in [2, 100]"),
    "adam_iters": _Rule(True, lambda v: v >= 0, "an integer ≥ 0"),
    "lbfgs_iters": _Rule(True, lambda v: v >= 0, "an integer ≥ 0"), "noise_level": _WEIGHT,
    "lr_decay": _Rule(False, lambda v: 0 < v <= 1, "a factor in (0, 1] (1: a constant rate)"),
    "curriculum": _Rule(False, lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
}
"""Option name (the config field; the flag is ``--`` plus the name with ``-`` for ``_``) → its bound."""


def option_type(name: str):
    """argparse ``type=`` for the option ``name``: parses the number and refuses one outside :data:`RULES`."""
    rule = RULES[name]

    def parse(text: str):
        try:
            value = int(text) if rule.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {rule.words}, got {text!r}") from None
        problem = rule.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "integer" if rule.integer else "number"  # argparse names the type in some messages
    return parse


def add_devices_option(parser) -> None:
    """``--devices N``: data-parallel training over N JAX devices (batch split over them; see ``pn.Trainer``)."""
    parser.add_argument("--devices", type=option_type("devices"), default=None,
                        help="train data-parallel over N JAX devices (the batch size must be a multiple of N); "
                             "on a CPU the host is split into N devices")


def use_devices(devices: int | None, backend: str) -> int | None:
    """Check ``--devices`` against the backend and, on a CPU, ask XLA for that many host devices.

    XLA reads ``--xla_force_host_platform_device_count`` only when JAX starts, so this runs before any backend is
    imported; the flag only splits the CPU (a GPU's devices are unaffected), and a value the user already put in
    ``XLA_FLAGS`` wins.
    """
    if devices is None:
        return None
    if backend != "jax":
        from ..backends._base import refuse_devices
        refuse_devices(devices, backend)
    import os
    flags = os.environ.get("XLA_FLAGS", "")
    if devices > 1 and "--xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return devices


def check_options(config) -> None:
    """Raise :class:`pyneuralode.SpecError` for the first field of the dataclass ``config`` outside its bound
    (fields set to ``None`` mean "the default" and are skipped); also a tolerance finer than the dtype resolves."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        rule = RULES.get(field.name)
        if rule is not None and value is not None:
            problem = rule.problem(value)
            if problem:
                raise SpecError(f"{field.name} {problem}.")
    dtype = getattr(config, "dtype", None)
    for name in ("rtol", "tol"):
        value = getattr(config, name, None)
        if dtype is not None and value is not None:
            check_resolution(name, value, dtype)


def add_config_options(parser, defaults, *names: str) -> None:
    """Add an option without help text for each config field in ``names``, in that order: ``--`` plus the name
    with ``-`` for ``_``, its default from the config instance ``defaults``; a numeric option's type is
    :func:`option_type` and ``dtype`` chooses between ``float32`` and ``float64``."""
    for name in names:
        flag = "--" + name.replace("_", "-")
        if name == "dtype":
            parser.add_argument(flag, default=defaults.dtype, choices=["float32", "float64"])
        else:
            parser.add_argument(flag, type=option_type(name), default=getattr(defaults, name))


def add_run_options(parser, *, out_default: str | None = None, out_help: str = "output directory",
                    brief_help: bool = False, devices: bool = False) -> None:
    """``--out`` (default ``out_default``, help ``out_help``), ``--resume``, ``--overwrite`` and ``--no-progress``,
    then ``--devices`` when ``devices``. ``brief_help`` gives the run-directory flags the short help texts of the
    ``anode`` and ``latent`` commands."""
    parser.add_argument("--out", default=out_default, help=out_help)
    if brief_help:
        parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
        parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
        parser.add_argument("--no-progress", action="store_true")
    else:
        parser.add_argument("--resume", action="store_true",
                            help="continue the run in --out from its checkpoint (same options; the length may grow)")
        parser.add_argument("--overwrite", action="store_true",
                            help="start again in an --out that holds a run, deleting its checkpoint, metrics and "
                                 "outputs")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if devices:
        add_devices_option(parser)


def config_fields(config_class, args) -> dict:
    """The parsed CLI arguments ``args`` that name a field of the dataclass ``config_class``, as a dict."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return {key: value for key, value in vars(args).items() if key in names}


def config_from_args(config_class, args):
    """The ``config_class`` instance of parsed CLI arguments: each field takes the argument of its name (a field
    without an argument keeps its default)."""
    return config_class(**config_fields(config_class, args))


def check_devices_divide_batch(devices: int | None, cfg, *, has_batch_flag: bool) -> None:
    """``--devices N`` splits each training batch evenly: refuse, before anything starts, an N that does not
    divide the run's batch, naming the device counts that do (and ``--batch`` where the command has it)."""
    batch = getattr(cfg, "sharded_batch", None) or getattr(cfg, "batch", None) or getattr(cfg, "batch_size", None)
    if not devices or not batch or batch % devices == 0:
        return
    counts = ", ".join(str(d) for d in range(1, batch + 1) if batch % d == 0 and d <= max(devices, 8))
    batch_fix = (f", or a --batch that is a multiple of {devices} (e.g. {batch - batch % devices or devices})"
                 if has_batch_flag else "")
    raise SpecError(f"--devices {devices} does not divide the batch of {batch} samples: use --devices {counts}"
                    f"{batch_fix}.")


def run_problem(args, cfg, out, *, train, format_summary, plot: str | None = None, devices: bool = False) -> int:
    """Train ``cfg`` into the run directory ``out`` (``train(cfg, out, resume=..., overwrite=..., show_progress=...)``
    with the flags of ``args``, and ``devices=`` from ``--devices`` when ``devices``), print
    ``format_summary(summary)`` and, when the run writes the picture ``plot``, the files written. Returns 0, the
    command's exit code."""
    options = dict(resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress)
    if devices:
        check_devices_divide_batch(args.devices, cfg, has_batch_flag=hasattr(args, "batch"))
        options["devices"] = use_devices(args.devices, args.backend)
    summary = train(cfg, out, **options)
    print(format_summary(summary))
    if plot is not None:
        out = Path(out)
        print(f"\nwrote {out / 'metrics.json'}, {out / 'metrics.csv'}, {out / 'checkpoint.npz'}, {out / plot}")
    return 0
