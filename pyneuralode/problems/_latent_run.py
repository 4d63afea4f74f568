"""Train a latent ODE on the spirals: progress bar, metrics JSON/CSV, atomic checkpoint with resume, and a PNG."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._optim import Adam
from ..train import RunDirectory, progress
from ._plotting import pyplot, save_figure
from ._runs import format_rows, median_step_ms, rng_state, start_run
from .latent import LatentConfig, LatentTrainer, latent_model, spiral_data, test_rmse


def train_latent(cfg: LatentConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
                 show_progress: bool = True) -> dict:
    """Train on the spirals; writes ``metrics.json``/``.csv``, ``checkpoint.npz``, ``params.npy`` and ``latent.png``
    to ``out_dir`` (the run-directory rules of :class:`pyneuralode.train.RunDirectory`: ``resume`` continues the
    identical run, ``overwrite`` replaces one) and returns the run summary."""
    config = dataclasses.asdict(cfg)
    with RunDirectory(out_dir, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite, outputs=("latent.png",)) as run:
        data = spiral_data(cfg)
        model = latent_model(cfg)
        trainer = LatentTrainer(model, Adam(lr=cfg.lr))
        rng = np.random.default_rng(cfg.seed + 2)
        start, log = start_run(run, trainer, init_params=model.init(cfg.seed), rng=rng)
        log.summary.update(problem="latent", config=config, num_params=model.num_params)
        bar = progress(cfg.iters, f"latent obs={cfg.obs} [{cfg.backend}]", initial=start, enabled=show_progress)
        t_start = time.perf_counter()
        for it in range(start + 1, cfg.iters + 1):
            batch = rng.choice(data.train, min(cfg.batch_size, len(data.train)), replace=False)
            eps = rng.standard_normal((len(batch), cfg.latent_size))
            t0 = time.perf_counter()
            res = trainer.step(data.ts, data.observed[batch], data.mask[batch], eps)
            record = {"iteration": it, "loss": res.value, "kl": float(np.mean(res.kl)),
                      "nfe_forward": res.stats.nfe_forward, "nfe_backward": res.stats.nfe_backward,
                      "step_seconds": time.perf_counter() - t0}
            checkpoint_now = it % cfg.eval_every == 0 or it == cfg.iters
            if checkpoint_now:
                record["test_rmse"] = test_rmse(model, trainer.params, data)
            log.append(**record)
            if checkpoint_now:
                run.commit(trainer, log, it, rng=rng_state(rng))
            bar.set_postfix(loss=f"{res.value:.2f}", nfe_f=res.stats.nfe_forward)
            bar.update()
        bar.close()
        log.summary.update(iterations=cfg.iters, final_loss=log.column("loss")[-1],
                           test_rmse=test_rmse(model, trainer.params, data),
                           mean_nfe_forward=float(np.mean(log.column("nfe_forward"))),
                           median_step_ms=median_step_ms(log),
                           wall_seconds=time.perf_counter() - t_start)
        run.write_metrics(log)
        run.save_array("params.npy", trainer.params)
        with run.output("latent.png") as tmp:
            plot_latent(model, trainer.params, data, log, tmp)
    return log.summary


def plot_latent(model, params, data, log, path, *, shown: int = 4) -> None:
    """Observed points, reconstruction and extrapolation vs truth for a few test spirals; loss and RMSE curves."""
    plt = pyplot()

    series = data.test[:shown]
    dt = data.ts[1] - data.ts[0]
    long_ts = np.concatenate([data.ts, data.ts[-1] + dt * np.arange(1, 51)])   # 50 steps of extrapolation
    pred = model.predict(params, data.ts, data.observed[series], long_ts.astype(data.ts.dtype), data.mask[series])
    fig, axes = plt.subplots(1, shown + 2, figsize=(4 * (shown + 2), 4))
    for ax, b, p in zip(axes, series, pred):
        ax.plot(*data.truth[b].T, color="0.6", lw=1, label="truth")
        ax.scatter(*data.observed[b][data.mask[b]].T, s=8, color="C0", label="observed")
        ax.plot(*p[:len(data.ts)].T, color="C3", label="reconstruction")
        ax.plot(*p[len(data.ts) - 1:].T, "--", color="C2", label="extrapolation")
        ax.set(title=f"test spiral {b}", aspect="equal")
    axes[0].legend(fontsize=7)
    axes[-2].plot(log.column("iteration"), log.column("loss"))
    axes[-2].set(title="-ELBO (batch)", xlabel="iteration")
    evals = [r for r in log.records if "test_rmse" in r]
    axes[-1].plot([r["iteration"] for r in evals], [r["test_rmse"] for r in evals], "o-")
    axes[-1].set(title="test RMSE (all 100 times)", xlabel="iteration")
    cfg = log.summary.get("config", {})
    save_figure(fig, path, title=f"pyneuralode latent ODE — {cfg.get('obs')}/100 observations, backend "
                                 f"{cfg.get('backend')}", dpi=90)


def format_summary(summary: dict) -> str:
    cfg = summary["config"]
    rows = [("problem", f"latent ODE spirals, {cfg['obs']}/100 observations"), ("backend", cfg["backend"]),
            ("parameters", summary["num_params"]), ("iterations", summary["iterations"]),
            ("final -ELBO (batch)", f"{summary['final_loss']:.3f}"), ("test RMSE", f"{summary['test_rmse']:.4f}"),
            ("mean NFE forward", f"{summary['mean_nfe_forward']:.1f}"),
            ("median step", f"{summary['median_step_ms']:.1f} ms"), ("wall time", f"{summary['wall_seconds']:.1f} s")]
    return format_rows(rows)
