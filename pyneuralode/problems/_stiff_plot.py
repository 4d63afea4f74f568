"""The stiff run's picture: Robertson's species against log t (true, data, fitted) and the fit's progress."""

from __future__ import annotations

import numpy as np

from ._plotting import pyplot, save_figure
from .robertson import SCALE

_SPECIES = ("A", "B (x1e4)", "C")


def plot_robertson(ts, true_ys, fitted_ys, data_ts, data, log, path) -> None:
    """Write a 1x2 PNG to ``path`` (needs matplotlib: ``pip install "pyneuralode[plot]"``). States are scaled;
    the picture shows concentrations, B multiplied by 1e4 as is customary."""
    plt = pyplot()

    show = SCALE * np.array([1.0, 1e4, 1.0])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ax = axes[0]
    for i, name in enumerate(_SPECIES):
        ax.plot(ts[1:], true_ys[1:, i] * show[i], color=f"C{i}", label=f"{name} true")
        ax.plot(ts[1:], fitted_ys[1:, i] * show[i], "--", color="k", lw=1)
        ax.plot(data_ts[1:], data[1:, i] * show[i], "o", ms=3, color=f"C{i}", alpha=0.6)
    ax.plot([], [], "--", color="k", lw=1, label="fitted")
    ax.plot([], [], "o", ms=3, color="0.5", label="noisy data")
    ax.set(xscale="log", xlabel="t", ylabel="concentration", title="Robertson: true vs fitted")
    ax.legend(fontsize=8)

    ax = axes[1]
    if log.records:
        iters = log.column("iteration")
        ax.plot(iters, log.column("loss"), label="loss (MSE, scaled species)")
        ax.plot(iters, log.column("log_k_error"), label="max |log k - true|")
    ax.set(yscale="log", xlabel="iteration", title="Fit")
    ax.legend(fontsize=8)
    cfg = log.summary.get("config", {})
    save_figure(fig, path, title=f"pyneuralode stiff — backend {cfg.get('backend')}, {cfg.get('solver')}",
                dpi=110)
