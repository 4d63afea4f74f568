"""One MNIST ODE-Net training step, JAX vs torch backend, before and after the XLA:CPU convolution fix.

The step is the paper's 64-channel ODE-Net (``pn.problems.mnist_model("odenet")``, 208,266 parameters) on a
batch of 128 real MNIST training images, float32, Dopri5 at rtol = atol = 1e-3 over [0, 1]: forward pass,
gradient through the ODE block's adjoint, and an SGD-momentum update, each backend's native training loop
(``Network.program.make_trainer``: one jit-compiled function on JAX, autograd + ``torch.optim`` on torch).

Adjoints: ``checkpoint`` = JAX ``CheckpointAdjoint`` (diffrax ``RecursiveCheckpointAdjoint``) vs torch
``DirectAdjoint`` (backpropagation through ``odeint``, torchdiffeq's ``odenet_mnist.py`` default) — both
discretise-then-optimise; ``backsolve`` = ``BacksolveAdjoint`` on both (the paper's adjoint method).

JAX convolution variants (``PYNEURALODE_JAX_CONV``, see ``pyneuralode/backends/jax/_conv.py``): ``nchw`` (the
unfixed baseline: NCHW ``lax.conv_general_dilated`` + autodiff), ``canon`` (the default fix), ``shift``.
The JAX backend moves XLA:CPU convolutions from YNNPACK (one thread) to Eigen (all threads) unless
``PYNEURALODE_XLA_CPU_CONV=ynn`` (``_xla_cpu.py``); the flags in effect are recorded in ``setup.xla_flags``.
Every step starts from the same weights; JAX and torch steps alternate, and medians are reported. The 1-minute
load average is recorded with each run: on a shared 2-core machine torch's OpenMP threads slow down many times
when other processes compete for the cores, while XLA's thread pool degrades gently, so compare only runs taken
at low load.

    python benchmarks/mnist_step.py [--reps 5] [--baseline-reps 1] [--variants nchw,canon,shift]

writes ``benchmarks/results/mnist_step.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import pyneuralode as pn

ADJOINTS = {"checkpoint": (pn.CheckpointAdjoint(), pn.DirectAdjoint()),
            "backsolve": (pn.BacksolveAdjoint(), pn.BacksolveAdjoint())}


def make_trainer(backend: str, adjoint, *, channels: int, params0):
    spec = pn.problems.mnist_model("odenet", channels=channels, adjoint=adjoint)
    net = pn.Network(spec, input_shape=(1, 28, 28), backend=backend, dtype="float32")
    trainer = net.program.make_trainer(pn.SGD(lr=0.1, momentum=0.9), pn.CrossEntropy())
    trainer.init(params0)
    return trainer


def timed_step(trainer, params0, x, y):
    trainer.init(params0)
    t = time.perf_counter()
    loss, _, stats = trainer.step(x, y)
    return time.perf_counter() - t, loss, stats[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline-reps", type=int, default=1)
    parser.add_argument("--variants", default="nchw,canon,shift")
    parser.add_argument("--adjoints", default="checkpoint,backsolve")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mnist_step.json"))
    args = parser.parse_args(argv)

    import jax
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    data = pn.datasets.mnist("train")
    x, y = np.asarray(data.images[:args.batch]), np.asarray(data.labels[:args.batch])
    params0 = pn.init_params(pn.problems.mnist_model("odenet", channels=args.channels), 0, "float32")
    results = {"setup": {"channels": args.channels, "batch": args.batch, "dtype": "float32", "solver": "Dopri5",
                         "rtol": 1e-3, "atol": 1e-3, "optimizer": "SGD(lr=0.1, momentum=0.9)",
                         "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                         "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine()},
               "runs": []}
    for adjoint_name in args.adjoints.split(","):
        jax_adj, torch_adj = ADJOINTS[adjoint_name]
        torch_trainer = make_trainer("torch", torch_adj, channels=args.channels, params0=params0)
        for variant in args.variants.split(","):
            os.environ["PYNEURALODE_JAX_CONV"] = variant
            jax_trainer = make_trainer("jax", jax_adj, channels=args.channels, params0=params0)
            t0 = time.perf_counter()
            timed_step(jax_trainer, params0, x, y)
            compile_s = time.perf_counter() - t0
            timed_step(torch_trainer, params0, x, y)  # torch warm-up
            reps = args.baseline_reps if variant == "nchw" else args.reps
            jt, tt = [], []
            for _ in range(reps):  # interleaved
                dt, jloss, jstats = timed_step(jax_trainer, params0, x, y)
                jt.append(dt)
                dt, tloss, tstats = timed_step(torch_trainer, params0, x, y)
                tt.append(dt)
            run = {"adjoint": adjoint_name, "jax_conv": variant, "reps": reps, "loadavg_1min": os.getloadavg()[0],
                   "jax_compile_plus_first_step_s": compile_s,
                   "jax_step_s": statistics.median(jt), "torch_step_s": statistics.median(tt),
                   "ratio": statistics.median(jt) / statistics.median(tt),
                   "jax_times": jt, "torch_times": tt, "jax_loss": jloss, "torch_loss": tloss,
                   "jax_nfe": [jstats.nfe_forward, jstats.nfe_backward],
                   "torch_nfe": [tstats.nfe_forward, tstats.nfe_backward]}
            results["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if not k.endswith("_times")}), flush=True)
            del jax_trainer
    # set by the JAX backend on import (pyneuralode/backends/jax/_xla_cpu.py; PYNEURALODE_XLA_CPU_CONV=ynn opts out)
    results["setup"]["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
