"""The spiral run's picture: trajectories, phase portrait with the learned field, loss and NFE curves."""

from __future__ import annotations

import numpy as np

from ._plotting import pyplot, save_figure


def plot_spiral(ts, true_ys, pred_ys, log, path, *, model=None, params=None) -> None:
    """Write a 2×2 PNG to ``path`` (needs matplotlib: ``pip install "pyneuralode[plot]"``)."""
    plt = pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0, 0]
    for i, name in enumerate("xy"):
        ax.plot(ts, true_ys[:, i], color=f"C{i}", label=f"true {name}")
        ax.plot(ts, pred_ys[:, i], "--", color=f"C{i}", label=f"learned {name}")
    ax.set(title="Trajectories", xlabel="t", ylabel="state")
    ax.legend(ncol=2, fontsize=8)

    ax = axes[0, 1]
    lim = 1.1 * np.max(np.abs(true_ys))
    if model is not None and params is not None:
        grid = np.linspace(-lim, lim, 21)
        gx, gy = np.meshgrid(grid, grid)
        points = np.stack([gx.ravel(), gy.ravel()], axis=1)
        step = model.solve(params, points, np.array([0.0, 1e-3])).ys
        velocity = (step[1] - step[0]) / 1e-3
        speed = np.linalg.norm(velocity, axis=1, keepdims=True) + 1e-12
        ax.quiver(gx, gy, *(velocity / speed).T.reshape(2, *gx.shape), color="0.75", width=0.003)
    ax.plot(true_ys[:, 0], true_ys[:, 1], color="k", label="true")
    ax.plot(pred_ys[:, 0], pred_ys[:, 1], "--", color="C3", label="learned")
    ax.set(title="Phase portrait and learned field", xlabel="x", ylabel="y", xlim=(-lim, lim), ylim=(-lim, lim))
    ax.set_aspect("equal")
    ax.legend(fontsize=8)

    iters = log.column("iteration")
    ax = axes[1, 0]
    ax.plot(iters, log.column("loss"), alpha=0.5, label="train (batch)")
    evals = [r for r in log.records if "test_loss" in r]
    ax.plot([r["iteration"] for r in evals], [r["test_loss"] for r in evals], "o-", ms=3, label="test (full)")
    ax.set(title="L1 loss", xlabel="iteration", yscale="log")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    ax.plot(iters, log.column("nfe_forward"), label="NFE forward")
    ax.plot(iters, log.column("nfe_backward"), label="NFE backward")
    ax.set(title="Function evaluations per step", xlabel="iteration")
    ax.legend(fontsize=8)

    cfg = log.summary.get("config", {})
    save_figure(fig, path, dpi=110,
                title=f"pyneuralode spiral — backend {cfg.get('backend')}, {cfg.get('adjoint')}, {cfg.get('dtype')}")
