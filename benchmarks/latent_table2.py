"""Table 2 of Chen et al. (2018) on a CPU budget: predictive RMSE of an RNN vs a latent ODE on irregular spirals.

For each observation count (30, 50, 100 of 100 times) both models see the same data
(``pyneuralode.problems.latent.spiral_data``: 1000 spirals, noise 0.1, first 800 train, 200 test, each series
observed at ``obs`` random times) and the same budget (iterations, batch, Adam learning rate), on the JAX backend:

- latent ODE: ``pn.LatentODE`` with torchdiffeq's ``latent_ode.py`` sizes (latent 4, recognition RNN 25 with time
  differences, field 4-20-4 ELU, decoder 4-20-2 ReLU, σ = 0.3), Dopri5 at the config's tolerances, ELBO;
- RNN: the baseline of ``pyneuralode.problems._latent_rnn`` (the same Elman cell, 25 units, time differences and an
  observed flag as inputs, squared error at the observed points).

Metric: RMSE against the noise-free spirals at all 100 times of the 200 test series (posterior mean for the latent
ODE). Writes ``benchmarks/results/latent_table2.json`` and ``.md``::

    python benchmarks/latent_table2.py [--iters 300] [--batch-size 100] [--obs 30,50,100]

The paper (its Table 2): RNN 0.3937 / 0.3202 / 0.1813, latent ODE 0.1642 / 0.1502 / 0.1346 at 30 / 50 / 100
observations (its budget, data details and metric definition differ from this CPU run; see the README).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


RESULTS = Path(__file__).parent / "results"
PAPER = {30: (0.3937, 0.1642), 50: (0.3202, 0.1502), 100: (0.1813, 0.1346)}


def run_one(obs: int, args) -> dict:
    from pyneuralode.problems._latent_rnn import RNNBaseline, rnn_test_rmse, train_rnn
    from pyneuralode.problems._latent_run import train_latent
    from pyneuralode.problems.latent import LatentConfig, spiral_data

    cfg = LatentConfig(obs=obs, iters=args.iters, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       eval_every=max(1, args.iters // 5), backend="jax")
    t0 = time.perf_counter()
    summary = train_latent(cfg, Path(args.runs) / f"latent-{obs}", overwrite=True, show_progress=False)
    latent_seconds = time.perf_counter() - t0
    rnn = RNNBaseline(hidden=cfg.rnn_width, dtype=cfg.dtype)
    data = spiral_data(cfg)
    t0 = time.perf_counter()
    params, losses = train_rnn(rnn, data, iters=args.iters, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    rnn_seconds = time.perf_counter() - t0
    return {"obs": obs, "rnn_rmse": rnn_test_rmse(rnn, params, data), "latent_rmse": summary["test_rmse"],
            "paper_rnn_rmse": PAPER[obs][0], "paper_latent_rmse": PAPER[obs][1],
            "latent_params": summary["num_params"], "rnn_params": rnn.num_params,
            "latent_mean_nfe_forward": summary["mean_nfe_forward"], "latent_seconds": latent_seconds,
            "rnn_seconds": rnn_seconds, "rnn_final_train_mse": losses[-1]}


def markdown(rows, args) -> str:
    lines = ["# Latent ODE vs RNN on irregular spirals (Chen et al. 2018, Table 2), CPU budget",
             "", f"JAX backend, {args.iters} Adam iterations (lr {args.lr}), batch {args.batch_size}, seed {args.seed}; "
             f"1000 spirals (800 train / 200 test), noise 0.1; {platform.processor() or platform.machine()}, "
             "shared machine (timings noisy).", "",
             "| observations | RNN (ours) | latent ODE (ours) | RNN (paper) | latent ODE (paper) | latent NFE-F |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['obs']}/100 | {r['rnn_rmse']:.4f} | {r['latent_rmse']:.4f} | {r['paper_rnn_rmse']} | "
                     f"{r['paper_latent_rmse']} | {r['latent_mean_nfe_forward']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--obs", default="30,50,100")
    p.add_argument("--runs", default="runs/latent_table2")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    rows = []
    for obs in (int(o) for o in args.obs.split(",")):
        rows.append(run_one(obs, args))
        print(json.dumps(rows[-1]), flush=True)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent_table2.json").write_text(json.dumps({"config": vars(args), "rows": rows}, indent=2))
    (out / "latent_table2.md").write_text(markdown(rows, args))
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
