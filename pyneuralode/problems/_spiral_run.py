"""Train the spiral end to end: progress bar, metrics JSON/CSV, atomic checkpoint with resume, and a PNG."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._adjoints import as_adjoint
from .._control import StepControl
from .._losses import L1
from .._model import ODEModel
from .._optim import Adam
from .._solvers import Dopri5
from ..train import RunDirectory, Trainer, progress
from ._runs import format_rows, median_step_ms, rng_state, start_run
from .spiral import TRUE_Y0, SpiralConfig, sample_batch, spiral_data, spiral_field


def spiral_model(cfg: SpiralConfig) -> ODEModel:
    """The model a spiral run trains (Dopri5 with the config's tolerances)."""
    return ODEModel(spiral_field(), solver=Dopri5(), control=StepControl(rtol=cfg.rtol, atol=cfg.atol),
                    adjoint=as_adjoint(cfg.adjoint), backend=cfg.backend, dtype=cfg.dtype)


def train_spiral(cfg: SpiralConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
                 show_progress: bool = True, devices=None) -> dict:
    """Train on the spiral; writes ``metrics.json``/``metrics.csv``, ``checkpoint.npz``, ``params.npy`` and
    ``spiral.png`` to ``out_dir`` and returns the run summary.

    ``resume`` continues the run in ``out_dir``; ``overwrite`` replaces one (the run-directory rules of
    :class:`pyneuralode.train.RunDirectory`). ``devices`` trains data-parallel on JAX (see ``pn.Trainer``)."""
    config = dataclasses.asdict(cfg)
    with RunDirectory(out_dir, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite, outputs=("spiral.png",)) as run:
        ts, ys = spiral_data(backend=cfg.backend)
        model = spiral_model(cfg)
        trainer = Trainer(model, optimizer=Adam(lr=cfg.lr), loss=L1, devices=devices)
        rng = np.random.default_rng(cfg.seed)
        start, log = start_run(run, trainer, init_params=model.init(cfg.seed), rng=rng)
        log.summary.update(problem="spiral", config=config, num_params=model.num_params)

        bar = progress(cfg.iters, f"spiral [{cfg.backend}]", initial=start, enabled=show_progress)
        t_start = time.perf_counter()
        for it in range(start + 1, cfg.iters + 1):
            y0, t, target = sample_batch(rng, ts, ys, batch_time=cfg.batch_time, batch_size=cfg.batch_size)
            t0 = time.perf_counter()
            info = trainer.step(y0, t, target)
            record = {"iteration": it, "loss": info.loss, "nfe_forward": info.stats.nfe_forward,
                      "nfe_backward": info.stats.nfe_backward, "step_seconds": time.perf_counter() - t0}
            checkpoint_now = it % cfg.eval_every == 0 or it == cfg.iters
            if checkpoint_now:
                pred = model.solve(trainer.params, TRUE_Y0, ts).ys
                record["test_loss"] = float(np.mean(np.abs(pred - ys)))
            log.append(**record)
            if checkpoint_now:
                run.commit(trainer, log, it, rng=rng_state(rng))
            bar.set_postfix(loss=f"{info.loss:.4f}", nfe_f=info.stats.nfe_forward, nfe_b=info.stats.nfe_backward)
            bar.update()
        bar.close()

        pred = model.solve(trainer.params, TRUE_Y0, ts).ys
        log.summary.update(
            iterations=cfg.iters, final_train_loss=log.column("loss")[-1],
            final_test_loss=float(np.mean(np.abs(pred - ys))),
            median_step_ms=median_step_ms(log),
            mean_nfe_forward=float(np.mean(log.column("nfe_forward"))),
            mean_nfe_backward=float(np.mean(log.column("nfe_backward"))),
            wall_seconds=time.perf_counter() - t_start)
        run.write_metrics(log)
        run.save_array("params.npy", trainer.params)
        from ._spiral_plot import plot_spiral
        with run.output("spiral.png") as tmp:
            plot_spiral(ts, ys, pred, log, tmp, model=model, params=trainer.params)
    return log.summary


def format_summary(summary: dict) -> str:
    """An aligned table of a run's headline figures."""
    rows = [("problem", "spiral"), ("backend", summary["config"]["backend"]),
            ("dtype", summary["config"]["dtype"]), ("adjoint", summary["config"]["adjoint"]),
            ("parameters", summary["num_params"]), ("iterations", summary["iterations"]),
            ("final train loss (L1)", f"{summary['final_train_loss']:.5f}"),
            ("test loss, full trajectory", f"{summary['final_test_loss']:.5f}"),
            ("mean NFE forward", f"{summary['mean_nfe_forward']:.1f}"),
            ("mean NFE backward", f"{summary['mean_nfe_backward']:.1f}"),
            ("median step", f"{summary['median_step_ms']:.2f} ms"),
            ("wall time", f"{summary['wall_seconds']:.1f} s")]
    return format_rows(rows)
