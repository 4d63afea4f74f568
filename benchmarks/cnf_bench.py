"""CNF training benchmark (issue 6): moons, batch 512, JAX vs torch, exact vs Hutchinson, with/without RNODE.

Per configuration: median ms per training iteration (compile excluded), mean NFE-F / NFE-B over the run and over
its last 50 iterations, the training NLL at the end (mean of the last 20 batches) and the held-out NLL (2000
points, exact trace). Model: ``MLP([2, 64, 64, 2], time_input=True)``, tanh, ``t ∈ [0, 1]``, Dopri5 at
rtol = atol = 1e-5, float32, Adam lr 1e-3; JAX trains with CheckpointAdjoint, torch with DirectAdjoint (backprop)
— the two anchors of the issue (diffrax checkpoint 62.5 ms/step, torchdiffeq backprop 133 ms/step at 1000 steps).
Regularised runs use RNODE's weights ``NLL(kinetic=0.01, jacobian=0.01)``.

    python benchmarks/cnf_bench.py [--iters 1000] [--only jax-exact,torch-exact] [--torch-threads 1]

Writes ``benchmarks/results/cnf.json``. Every configuration sees the same batches (seeded per iteration).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyneuralode as pn  # noqa: E402
from pyneuralode.datasets import toy_2d  # noqa: E402
from pyneuralode.problems.cnf import TEST_SEED, CNFConfig, cnf_model  # noqa: E402

from _harness import write_results  # noqa: E402

CONFIGS = {f"{backend}-{trace}{'-reg' if reg else ''}": (backend, trace, reg)
           for backend in ("jax", "torch") for reg in (False, True) for trace in ("exact", "hutchinson")}


def run_config(backend: str, trace: str, regularised: bool, *, iters: int, batch: int) -> dict:
    cfg = CNFConfig(backend=backend, trace=trace, batch=batch, iters=iters)
    flow = cnf_model(cfg)
    loss = pn.NLL(kinetic=0.01, jacobian=0.01) if regularised else pn.NLL()
    trainer = pn.FlowTrainer(flow, optimizer=pn.Adam(lr=cfg.lr), loss=loss)
    trainer.init(flow.init(cfg.seed))
    times, nll, nfe_f, nfe_b = [], [], [], []
    t_run = time.perf_counter()
    for it in range(1, iters + 1):
        x = toy_2d("moons", batch, it, dtype=cfg.dtype)
        noise = flow.draw_noise(batch, seed=it) if trace == "hutchinson" else None
        t0 = time.perf_counter()
        info = trainer.step(x, noise=noise)
        times.append(time.perf_counter() - t0)
        nll.append(info.nll)
        nfe_f.append(info.stats.nfe_forward)
        nfe_b.append(info.stats.nfe_backward)
    wall = time.perf_counter() - t_run
    exact = flow if trace == "exact" else cnf_model(cfg, trace="exact")
    x_test = toy_2d("moons", 2000, TEST_SEED, dtype=cfg.dtype)
    test_nll = float(-np.mean(exact.log_prob(trainer.params, x_test)))
    tail = slice(-min(50, iters), None)
    return {"backend": backend, "trace": trace, "regularised": regularised, "adjoint": flow.adjoint.name,
            "iterations": iters, "batch": batch,
            "ms_per_iter_median": 1e3 * float(np.median(times[1:])),
            "ms_per_iter_mean": 1e3 * float(np.mean(times[1:])),
            "first_iter_s": times[0],
            "nfe_forward_mean": float(np.mean(nfe_f)), "nfe_backward_mean": float(np.mean(nfe_b)),
            "nfe_forward_last50": float(np.mean(nfe_f[tail])), "nfe_backward_last50": float(np.mean(nfe_b[tail])),
            "train_nll_last20": float(np.mean(nll[-20:])), "test_nll": test_nll, "wall_s": wall}


def table(rows) -> str:
    head = ("config", "ms/iter", "NFE-F", "NFE-B", "NFE-F last50", "train NLL", "test NLL")
    body = [(f"{r['backend']} {r['trace']}{' +RNODE' if r['regularised'] else ''} ({r['adjoint']})",
             f"{r['ms_per_iter_median']:.1f}", f"{r['nfe_forward_mean']:.1f}", f"{r['nfe_backward_mean']:.1f}",
             f"{r['nfe_forward_last50']:.1f}", f"{r['train_nll_last20']:.3f}", f"{r['test_nll']:.3f}")
            for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    return "\n".join([line.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line.format(*b) for b in body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default). On a small shared machine 1 avoids "
                             "OpenMP threads spinning against other jobs.")
    parser.add_argument("--name", default="cnf", help="results file name (benchmarks/results/<name>.json)")
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    rows = []
    for name in args.only.split(","):
        backend, trace, reg = CONFIGS[name]
        row = run_config(backend, trace, reg, iters=args.iters, batch=args.batch)
        rows.append(row)
        print(f"{name}: {row['ms_per_iter_median']:.1f} ms/iter, NFE-F {row['nfe_forward_mean']:.1f}, "
              f"NFE-B {row['nfe_backward_mean']:.1f}, test NLL {row['test_nll']:.3f}", flush=True)
        write_results(args.name, {"command": " ".join(["python benchmarks/cnf_bench.py", *(argv or sys.argv[1:])]),
                                  "torch_threads": args.torch_threads or "default", "results": rows})
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
