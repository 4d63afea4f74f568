"""The UDE run's picture: data and fit (with the extrapolation), learned vs true interaction terms, and the loss."""

from __future__ import annotations

import numpy as np

from ._plotting import pyplot, save_figure
from .ude import T_DATA, missing_terms


def plot_ude(data: dict, fit: np.ndarray, terms: np.ndarray, log, path) -> None:
    """Write a 1×3 PNG to ``path`` (needs matplotlib: ``pip install "pyneuralode[plot]"``)."""
    plt = pyplot()

    t, truth = data["dense_t"], data["clean_dense"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    for i, name in enumerate("xy"):
        ax.plot(t, truth[:, i], color=f"C{i}", alpha=0.5, label=f"true {name}")
        ax.plot(t, fit[:, i], "--", color=f"C{i}", label=f"UDE {name}")
        ax.plot(data["ts"], data["noisy"][:, i], "o", ms=4, color=f"C{i}", label=f"data {name}")
    ax.axvspan(T_DATA, t[-1], color="0.93", zorder=0)
    ax.text(0.75, 0.95, "extrapolation", transform=ax.transAxes, ha="center", va="top", fontsize=8)
    span = float(np.max(truth))  # a fit that leaves the data's range is clipped, not allowed to squash the view
    ax.set(title="Data and fit", xlabel="t", ylabel="population", ylim=(-0.15 * span, 1.35 * span))
    ax.legend(ncol=3, fontsize=7)

    ax = axes[1]
    true_terms = missing_terms(truth)
    for i, (true_label, learned_label) in enumerate((("true −βxy", "U₁ learned"), ("true γxy", "U₂ learned"))):
        ax.plot(t, true_terms[:, i], color=f"C{i}", alpha=0.5, label=true_label)
        ax.plot(t, terms[:, i], "--", color=f"C{i}", label=learned_label)
    ax.axvspan(T_DATA, t[-1], color="0.93", zorder=0)
    ax.set(title="Missing terms along the true trajectory", xlabel="t")
    ax.legend(fontsize=7)

    ax = axes[2]
    iters, losses = log.column("iteration"), log.column("loss")
    phases = log.column("phase")
    for phase, color in (("adam", "C0"), ("lbfgs", "C3")):
        pts = [(i, v) for i, v, p in zip(iters, losses, phases) if p == phase]
        if pts:
            ax.plot(*zip(*pts), color=color, label="Adam" if phase == "adam" else "L-BFGS")
    ax.set(title="Training loss (MSE)", xlabel="iteration", yscale="log")
    ax.legend(fontsize=8)

    s = log.summary
    title = (f"pyneuralode ude — {s.get('config', {}).get('backend')}: U vs true terms rel. L2 "
             f"{s.get('terms_in_sample', float('nan')):.2e} on [0, 5], trajectory extrapolation rel. L2 "
             f"{s.get('trajectory_extrapolation', float('nan')):.2e} on (5, 10]")
    save_figure(fig, path, title=title, dpi=110)
