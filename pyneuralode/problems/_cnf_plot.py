"""The CNF run's picture: data samples, the learned density on a grid, and samples from the model."""

from __future__ import annotations

import numpy as np

from ._plotting import pyplot, save_figure


def density_grid(exact, params, bounds, n: int = 100):
    """``(xs, ys, p)``: ``exp log p`` of the exact-trace flow ``exact`` on an ``n x n`` grid over
    ``bounds = ((x_lo, x_hi), (y_lo, y_hi))``."""
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    xs, ys = np.linspace(x_lo, x_hi, n), np.linspace(y_lo, y_hi, n)
    points = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    return xs, ys, np.exp(exact.log_prob(params, points)).reshape(n, n)


def plot_cnf(data, samples, grid, path, *, title: str) -> None:
    """Write the three-panel PNG to ``path``."""
    plt = pyplot()

    xs, ys, p = grid
    extent = (xs[0], xs[-1], ys[0], ys[-1])
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6))
    for ax, points, name in ((axes[0], data, "data samples"), (axes[2], samples, "model samples")):
        ax.hist2d(points[:, 0], points[:, 1], bins=100, range=[extent[:2], extent[2:]], cmap="viridis")
        ax.set_title(f"{name} ({len(points)})")
    axes[1].imshow(p, origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[1].set_title("learned density p(x)")
    for ax in axes:
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, path, title=title, dpi=100)
