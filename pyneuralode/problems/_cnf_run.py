"""Train a CNF end to end: progress bar, metrics JSON/CSV, atomic checkpoint with exact resume, and a PNG.

Every iteration's batch and Hutchinson noise are drawn from seeds derived from the iteration number, so a resumed
run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._flow_trainer import FlowTrainer
from .._nll import NLL
from .._optim import Adam
from ..datasets import toy_2d
from ..train import RunDirectory, progress
from ._runs import format_rows, median_step_ms
from .cnf import TEST_SEED, CNFConfig, cnf_model


def _batch_seed(cfg: CNFConfig, iteration: int) -> int:
    return (cfg.seed * 1_000_003 + iteration) % TEST_SEED


def test_nll(exact_flow, params, x_test) -> float:
    """Mean negative log-likelihood of the held-out points (``exact_flow`` computes the trace exactly)."""
    return float(-np.mean(exact_flow.log_prob(params, x_test)))


def train_cnf(cfg: CNFConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
              show_progress: bool = True, devices=None) -> dict:
    """Train on ``cfg.dataset``; writes ``metrics.json``/``.csv``, ``checkpoint.npz``, ``params.npy`` and
    ``cnf.png`` to ``out_dir`` and returns the run summary (``resume``/``overwrite``: the rules of
    :class:`pyneuralode.train.RunDirectory`). ``devices`` trains data-parallel on JAX."""
    config = dataclasses.asdict(cfg)
    with RunDirectory(out_dir, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite, outputs=("cnf.png",)) as run:
        return _train(cfg, run, show_progress, devices)


def _train(cfg: CNFConfig, run: RunDirectory, show_progress: bool, devices) -> dict:
    flow = cnf_model(cfg)
    exact = flow if cfg.trace == "exact" else cnf_model(cfg, trace="exact")
    trainer = FlowTrainer(flow, optimizer=Adam(lr=cfg.lr), loss=NLL(kinetic=cfg.kinetic, jacobian=cfg.jacobian),
                          devices=devices)
    x_test = toy_2d(cfg.dataset, cfg.test_size, TEST_SEED, dtype=cfg.dtype)
    start, log, _ = run.start(trainer, init_params=flow.init(cfg.seed))
    log.summary.update(problem="cnf", config=run.config, num_params=flow.num_params,
                       adjoint=flow.adjoint.name)

    bar = progress(cfg.iters, f"cnf {cfg.dataset} [{cfg.backend}, {cfg.trace}]", initial=start,
                   enabled=show_progress)
    t_start = time.perf_counter()
    for it in range(start + 1, cfg.iters + 1):
        seed = _batch_seed(cfg, it)
        x = toy_2d(cfg.dataset, cfg.batch, seed, dtype=cfg.dtype)
        noise = flow.draw_noise(cfg.batch, seed=seed) if cfg.trace == "hutchinson" else None
        t0 = time.perf_counter()
        info = trainer.step(x, noise=noise)
        record = {"iteration": it, "loss": info.loss, "nll": info.nll, "nfe_forward": info.stats.nfe_forward,
                  "nfe_backward": info.stats.nfe_backward, "step_seconds": time.perf_counter() - t0}
        if cfg.kinetic or cfg.jacobian:
            record.update(kinetic=info.kinetic, jacobian=info.jacobian)
        checkpoint_now = it % cfg.eval_every == 0 or it == cfg.iters
        if checkpoint_now:
            record["test_nll"] = test_nll(exact, trainer.params, x_test)
        log.append(**record)
        if checkpoint_now:
            run.commit(trainer, log, it)
        bar.set_postfix(nll=f"{info.nll:.3f}", nfe_f=info.stats.nfe_forward, nfe_b=info.stats.nfe_backward)
        bar.update()
    bar.close()

    params = trainer.params
    log.summary.update(
        iterations=cfg.iters, final_train_nll=log.column("nll")[-1],
        final_test_nll=log.column("test_nll")[-1] if log.column("test_nll") else test_nll(exact, params, x_test),
        median_step_ms=median_step_ms(log),
        mean_nfe_forward=float(np.mean(log.column("nfe_forward"))),
        mean_nfe_backward=float(np.mean(log.column("nfe_backward"))),
        wall_seconds=time.perf_counter() - t_start)
    run.write_metrics(log)
    run.save_array("params.npy", params)

    from ._cnf_plot import density_grid, plot_cnf
    data = toy_2d(cfg.dataset, cfg.plot_samples, TEST_SEED + 1)
    samples = flow.sample(params, cfg.plot_samples, seed=cfg.seed)
    lim = float(np.ceil(np.max(np.abs(np.percentile(data, [0.5, 99.5], axis=0)))) + 0.5)
    grid = density_grid(exact, params, ((-lim, lim), (-lim, lim)), n=120 if cfg.plot_samples >= 5000 else 40)
    title = (f"CNF on {cfg.dataset} ({cfg.backend}, {cfg.trace} trace, {cfg.iters} iterations, "
             f"test NLL {log.summary['final_test_nll']:.3f})")
    with run.output("cnf.png") as tmp:
        plot_cnf(data, samples, grid, tmp, title=title)
    return log.summary


def format_summary(summary: dict) -> str:
    """An aligned table of a run's headline figures."""
    c = summary["config"]
    rows = [("problem", f"cnf {c['dataset']}"), ("backend", c["backend"]), ("dtype", c["dtype"]),
            ("trace", c["trace"]), ("adjoint", summary.get("adjoint", c["adjoint"])),
            ("parameters", summary["num_params"]),
            ("iterations", summary["iterations"]), ("final train NLL", f"{summary['final_train_nll']:.4f}"),
            ("test NLL (exact trace)", f"{summary['final_test_nll']:.4f}"),
            ("mean NFE forward", f"{summary['mean_nfe_forward']:.1f}"),
            ("mean NFE backward", f"{summary['mean_nfe_backward']:.1f}"),
            ("median step", f"{summary['median_step_ms']:.1f} ms"),
            ("wall time", f"{summary['wall_seconds']:.1f} s")]
    return format_rows(rows)
