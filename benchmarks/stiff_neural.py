"""A stiff neural ODE: a small network learns Robertson's kinetics from data, with an implicit solver and the
scaling Kim et al. (2021, "Stiff neural ordinary differential equations") found necessary.

Scaling: each species is divided by its scale (``robertson.SCALE``; B peaks at 3.65e-5), and time is logarithmic,
``tau = (log10 t + 5) / 10`` in [0, 1] for t in [1e-5, 1e5]. The network is ``du/dtau = MLP([u, tau])``
(3+1 -> 32 -> 32 -> 3, tanh), solved with ``pn.Kvaerno5()`` on JAX (float64, rtol 1e-5); it is fitted by Adam on
the mean squared error at 40 log-spaced observations of the Radau reference, from t = 1e-5. Reported: the fit on
the observations and on a dense held-out grid (200 points), per species, after a CPU-time budget.

Run: ``python -m benchmarks.stiff_neural [--iters 1500] [--minutes 15]`` →
``benchmarks/results/stiff_neural.json``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pyneuralode as pn
from pyneuralode.problems import robertson as rob

from ._harness import write_results


def log_time(t):
    return (np.log10(t) + 5.0) / 10.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--minutes", type=float, default=15.0, help="stop after this much wall time")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    t_obs = np.logspace(-5, 5, 40)
    t_dense = np.logspace(-5, 5, 200)
    obs = rob.reference_solution(np.concatenate([[0.0], t_obs]))[1:]
    dense = rob.reference_solution(np.concatenate([[0.0], t_dense]))[1:]
    tau, tau_dense = log_time(t_obs), log_time(t_dense)
    y0 = obs[0]

    model = pn.ODEModel(pn.MLP([3, 32, 32, 3], activation="tanh", time_input=True), solver=pn.Kvaerno5(),
                        control=pn.StepControl(rtol=1e-5, atol=1e-7, max_steps=4096), backend="jax",
                        dtype="float64")
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=args.lr), loss=pn.MSE)
    trainer.init(model.init(seed=args.seed))
    history, t0 = [], time.perf_counter()
    for it in range(1, args.iters + 1):
        info = trainer.step(y0, tau, obs)
        history.append({"iteration": it, "loss": info.loss, "nfe_forward": info.stats.nfe_forward,
                        "seconds": time.perf_counter() - t0})
        if it % 50 == 0:
            print(f"iter {it:5d}  loss {info.loss:.3e}  NFE {info.stats.nfe_forward}  "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        if time.perf_counter() - t0 > 60 * args.minutes:
            break
    fit = model.solve(trainer.params, y0, tau_dense).ys
    err = np.abs(fit - dense)
    result = {
        "iterations": len(history), "wall_seconds": time.perf_counter() - t0,
        "final_train_mse": history[-1]["loss"], "first_train_mse": history[0]["loss"],
        "dense_max_abs_error_per_species_scaled": err.max(axis=0).tolist(),
        "dense_rms_error_per_species_scaled": np.sqrt(np.mean(err ** 2, axis=0)).tolist(),
        "mean_nfe_forward": float(np.mean([h["nfe_forward"] for h in history])),
        "history": history[:: max(1, len(history) // 100)],
    }
    print({k: v for k, v in result.items() if k != "history"})
    path = write_results("stiff_neural", {
        "problem": "Robertson learned by MLP([u, tau]) 4-32-32-3 tanh, species scaled, log time; Kvaerno5, float64",
        "note": "2-core machine shared with other jobs; CPU budget --minutes.", "config": vars(args), **result})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
