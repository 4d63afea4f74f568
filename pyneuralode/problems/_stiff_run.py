"""``pyneuralode stiff``: recover Robertson's rate constants from noisy data with a stiff solver, end to end —
progress bar, metrics JSON/CSV, atomic checkpoint with resume, and a PNG."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._control import StepControl
from .._losses import MSE
from .._model import ODEModel
from .._optim import Adam
from .._solvers import as_solver
from ..train import RunDirectory, Trainer, progress
from ._runs import format_rows
from .robertson import RATES, RobertsonConfig, initial_state, log_rates, noisy_data, reference_solution, \
    robertson_dynamics, robertson_times


def stiff_model(cfg: RobertsonConfig) -> ODEModel:
    """The model a run fits: Robertson's kinetics with the config's stiff solver and tolerances (float64)."""
    return ODEModel(robertson_dynamics(), solver=as_solver(cfg.solver),
                    control=StepControl(rtol=cfg.rtol, atol=cfg.atol, max_steps=20_000), backend=cfg.backend,
                    dtype="float64")


def initial_guess(cfg: RobertsonConfig) -> np.ndarray:
    """The true ``log k`` moved by ``perturb`` in each coordinate, with alternating signs."""
    return log_rates() + cfg.perturb * np.array([1.0, -1.0, 1.0])


def train_stiff(cfg: RobertsonConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
                show_progress: bool = True) -> dict:
    """Fit ``log k`` by Adam on the mean squared error of the scaled species; writes ``metrics.json``/
    ``metrics.csv``, ``checkpoint.npz``, ``params.npy`` and ``robertson.png`` to ``out_dir``; returns the summary.

    ``resume`` continues the run in ``out_dir``; ``overwrite`` replaces one (the run-directory rules of
    :class:`pyneuralode.train.RunDirectory`)."""
    config = dataclasses.asdict(cfg)
    with RunDirectory(out_dir, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite, outputs=("robertson.png",)) as run:
        ts = robertson_times(cfg.points)
        data = noisy_data(ts, noise=cfg.data_noise, seed=cfg.seed)
        y0, truth = initial_state(), log_rates()
        model = stiff_model(cfg)
        trainer = Trainer(model, optimizer=Adam(lr=cfg.lr), loss=MSE)
        start, log, _ = run.start(trainer, init_params=initial_guess(cfg))
        log.summary.update(problem="stiff (Robertson)", config=config, true_log_k=truth.tolist(),
                           initial_log_k=initial_guess(cfg).tolist())

        bar = progress(cfg.iters, f"stiff [{cfg.backend}, {cfg.solver}]", initial=start, enabled=show_progress)
        t_start = time.perf_counter()
        for it in range(start + 1, cfg.iters + 1):
            t0 = time.perf_counter()
            info = trainer.step(y0, ts, data)
            err = float(np.max(np.abs(trainer.params - truth)))
            log.append(iteration=it, loss=info.loss, log_k_error=err, nfe_forward=info.stats.nfe_forward,
                       steps=info.stats.steps, step_seconds=time.perf_counter() - t0)
            if it % cfg.eval_every == 0 or it == cfg.iters:
                run.commit(trainer, log, it)
            bar.set_postfix(loss=f"{info.loss:.2e}", log_k_err=f"{err:.3f}", nfe=info.stats.nfe_forward)
            bar.update()
        bar.close()

        fitted = trainer.params
        k_fit = np.exp(fitted)
        log.summary.update(
            iterations=cfg.iters, final_loss=log.column("loss")[-1] if log.records else None,
            fitted_log_k=fitted.tolist(), fitted_k=k_fit.tolist(),
            log_k_error=float(np.max(np.abs(fitted - truth))),
            k_relative_error=(np.abs(k_fit - np.asarray(RATES)) / np.asarray(RATES)).tolist(),
            mean_nfe_forward=float(np.mean(log.column("nfe_forward"))) if log.records else None,
            median_step_ms=1e3 * float(np.median(log.column("step_seconds"))) if log.records else None,
            wall_seconds=time.perf_counter() - t_start)
        run.write_metrics(log)
        run.save_array("params.npy", fitted)
        dense = robertson_times(200)
        from ._stiff_plot import plot_robertson
        with run.output("robertson.png") as tmp:
            plot_robertson(dense, reference_solution(dense), model.solve(fitted, y0, dense).ys, ts, data, log, tmp)
    return log.summary


def format_summary(summary: dict) -> str:
    """An aligned table of a run's headline figures."""
    fmt = lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]"  # noqa: E731
    rows = [("problem", "Robertson (stiff kinetics), recover log k"),
            ("backend / solver", f"{summary['config']['backend']} / {summary['config']['solver']}"),
            ("iterations", summary["iterations"]),
            ("true k", fmt(np.exp(summary["true_log_k"]))), ("fitted k", fmt(summary["fitted_k"])),
            ("max |log k error|", f"{summary['log_k_error']:.4f} (started at {summary['config']['perturb']})"),
            ("final loss (MSE, scaled)", f"{summary['final_loss']:.3e}" if summary["final_loss"] is not None
             else "-"),
            ("mean NFE forward", f"{summary['mean_nfe_forward']:.1f}" if summary["mean_nfe_forward"] else "-"),
            ("median step", f"{summary['median_step_ms']:.1f} ms" if summary["median_step_ms"] else "-"),
            ("wall time", f"{summary['wall_seconds']:.1f} s")]
    return format_rows(rows)
