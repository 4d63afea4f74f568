"""Table 1 of Chen et al. (2018) on this machine: ODE-Net, RK-Net and ResNet on MNIST with the same budget.

Each model is trained by ``pyneuralode mnist`` (``pyneuralode.problems._mnist_run.train_mnist``) in a fresh Python
process, one after the other, with identical settings; the script then writes
``benchmarks/results/mnist_table1.md`` and ``.json``:

- **params**: length of the canonical parameter vector.
- **test error**: on the 10,000 test images after the last epoch.
- **peak memory**: the training process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``) — one
  fresh process per model, so it includes the same baseline for all three (Python, JAX/XLA runtime, the 60k images)
  plus the model's own activations, gradients and compiled code. On CPU the baseline and the 1,000-image test
  batches dominate at small widths (measured: ODE-Net 1421 MB, RK-Net 1251 MB, ResNet 1097 MB), so this column
  does not show the paper's O(1) vs O(L); that is measured directly in ``benchmarks/memory.py``.
- **time / epoch**: wall time of the training loop of one epoch (last epoch; first-epoch compile excluded by
  taking the last), without the test evaluation.
- **NFE-F / NFE-B**: function evaluations of the ODE block per training step, forward and backward (mean over the
  last epoch). RK-Net backpropagates through RK4: its NFE-B counts the VJPs of the field (one per evaluation).

CPU budget used here (``--quick``-style, 2 shared cores; default options of this script): 32 channels, GroupNorm
with 16 groups, Adam 3e-3, batch 128, no augmentation, ODE-Net Dopri5 at rtol = atol = 1e-2 with the adjoint
(``BacksolveAdjoint``), RK-Net RK4 with dt = 1/4 by backpropagation, first 20,000 training images for 2 epochs, JAX
backend::

    python benchmarks/mnist_table1.py [--epochs 2] [--train-limit 20000] [--channels 32] [--backend jax]

The paper's full settings (torchdiffeq ``examples/odenet_mnist.py``; for a GPU, ~hours per model)::

    python benchmarks/mnist_table1.py --full --backend torch   # or --backend jax

= 64 channels (GroupNorm(32, 64); ODE-Net/RK-Net 208,266 parameters, ResNet 576,778), SGD momentum 0.9,
lr 0.1 × batch/128 with ×0.1 at epochs 60, 100, 140, 160 epochs, batch 128, random-crop augmentation (pad 4), all
50,000 training images, Dopri5 at rtol = atol = 1e-3. The paper reports test error 0.41% (ResNet), 0.47% (RK-Net),
0.42% (ODE-Net).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
MODELS = ("odenet", "rknet", "resnet")
MEMORY = {"odenet": "O(1)", "rknet": "O(L~)", "resnet": "O(L)"}
PAPER = {"resnet": (0.41, "0.60 M"), "rknet": (0.47, "0.22 M"), "odenet": (0.42, "0.22 M")}


def options(args) -> list[str]:
    """The ``pyneuralode mnist`` options shared by the three runs."""
    if args.full:
        return ["--epochs", "160", "--channels", "64", "--optimizer", "sgd"]
    opts = ["--epochs", str(args.epochs), "--channels", str(args.channels), "--groups", str(args.channels // 2),
            "--optimizer", "adam", "--lr", str(args.lr), "--tol", str(args.tol), "--no-augment"]
    if args.train_limit:
        opts += ["--train-limit", str(args.train_limit)]
    return opts


def train(model: str, args, out: Path) -> dict:
    """Train one model in a fresh process (clean peak-RSS figure); returns its metrics.json."""
    argv = ["mnist", "--model", model, "--backend", args.backend, "--out", str(out), "--overwrite", "--no-progress",
            *options(args)]
    code = f"import sys; from pyneuralode.cli import main; sys.exit(main({argv!r}))"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["process_seconds"] = time.perf_counter() - t0
    return metrics


def row(model: str, m: dict) -> dict:
    """The Table-1 figures of one run's metrics."""
    last = m["records"][-1]
    return {"model": model, "params": m["summary"]["num_params"], "test_error": 100 * last["test_error"],
            "peak_memory_mb": max(r["peak_memory_mb"] for r in m["records"]), "epoch_seconds": last["epoch_seconds"],
            "nfe_forward": last["nfe_forward"], "nfe_backward": last["nfe_backward"], "epochs": len(m["records"]),
            "process_seconds": m["process_seconds"]}


def markdown(rows: list[dict], args) -> str:
    """The table, with the settings and the paper's figures."""
    names = {"odenet": "ODE-Net", "rknet": "RK-Net", "resnet": "ResNet"}
    lines = [("| model | params | test error | peak memory (RSS) | memory (paper) | time / epoch | NFE-F / NFE-B "
              "| paper: test error, params |"),
             "|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        nfe = "-" if r["model"] == "resnet" else f"{r['nfe_forward']:.1f} / {r['nfe_backward']:.1f}"
        err, params = PAPER[r["model"]]
        lines.append(f"| {names[r['model']]} | {r['params']:,} | {r['test_error']:.2f}% | {r['peak_memory_mb']:.0f} MB "
                     f"| {MEMORY[r['model']]} | {r['epoch_seconds']:.0f} s | {nfe} | {err}%, {params} |")
    setting = "full (paper)" if args.full else (
        f"{args.channels} channels, GroupNorm({args.channels // 2}), Adam {args.lr:g}, batch 128, no augmentation, "
        f"{args.epochs} epochs of the first {args.train_limit or 50000:,} training images, ODE-Net Dopri5 "
        f"rtol=atol={args.tol:g} (BacksolveAdjoint), RK-Net RK4 dt=1/4 (backprop)")
    return "\n".join([f"MNIST Table 1 on {args.backend} ({platform.machine()}, CPU): {setting}.", "", *lines, "",
                      ("Peak memory: fresh-process peak RSS (same runtime + data baseline in all three). At this "
                       "width it is dominated by that baseline and by the 1,000-image test batches, so it does not "
                       "show the paper's O(1) vs O(L) (see benchmarks/memory.py). Time / epoch: last epoch's "
                       "training loop. NFE: per training step, mean over the last epoch."),
                      (f"Command: `{' '.join(['python benchmarks/mnist_table1.py', *sys.argv[1:]])}` (total "
                       f"{sum(r['process_seconds'] for r in rows) / 60:.1f} min)."), ])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="jax", choices=["jax", "torch"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=20000)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tol", type=float, default=1e-2)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--full", action="store_true", help="the paper's 160-epoch settings (for a GPU)")
    p.add_argument("--runs", default="runs/table1", help="where the three runs write their outputs")
    p.add_argument("--results", default=str(RESULTS), help="where mnist_table1.md/.json go")
    args = p.parse_args(argv)
    rows = []
    for model in args.models.split(","):
        rows.append(row(model, train(model, args, Path(args.runs) / model)))
        print(json.dumps(rows[-1]), flush=True)
    text = markdown(rows, args)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mnist_table1.md").write_text(text + "\n")
    (out / "mnist_table1.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
