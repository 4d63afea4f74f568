"""The NODE-vs-ANODE picture: loss and NFE per iteration, then the learned maps (A1 trajectories, A2 flows)."""

from __future__ import annotations

import numpy as np

from .._blocks import ODEBlock
from .._layers import walk
from ._plotting import pyplot, save_figure

COLOURS = {"node": "C0", "anode": "C3"}
LABELS = {"node": "NODE", "anode": "ANODE"}


def _a2_states(model, params, x, ts):
    """States of the network's ODE block from the (augmented) inputs ``x`` at ``ts``: ``(len(ts), N, features)``."""
    block = next(layer for layer in walk(model.spec) if isinstance(layer, ODEBlock))
    field_model = block.as_model(backend=model.backend, dtype="float64")
    features = field_model.field.in_shape[0]
    z0 = np.concatenate([x, np.zeros((len(x), features - x.shape[1]))], axis=1)
    return field_model.solve(np.asarray(params[:field_model.num_params], np.float64), z0, ts).ys


def plot_anode(cfg, models, params, log, path) -> None:
    """Write a 2×3 PNG to ``path`` (needs matplotlib: ``pip install "pyneuralode[plot]"``)."""
    plt = pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    iters = log.column("iteration")
    for kind in ("node", "anode"):
        n = models[kind].num_params
        axes[0, 0].plot(iters, log.column(f"{kind}_loss"), color=COLOURS[kind], label=f"{LABELS[kind]} ({n} params)")
        axes[0, 1].plot(iters, log.column(f"{kind}_nfe_forward"), color=COLOURS[kind], label=LABELS[kind])
    axes[0, 0].set(title="training loss" + (" (MSE at t=1)" if cfg.problem == "a1" else " (cross-entropy)"),
                   xlabel="iteration", yscale="log")
    axes[0, 1].set(title="NFE forward per iteration", xlabel="iteration")
    for ax in axes[0, :2]:
        ax.legend(fontsize=8)
    ts = np.linspace(0.0, 1.0, 41)
    if cfg.problem == "a1":
        starts = np.linspace(-1.0, 1.0, 11)[:, None]
        for ax, kind in zip(axes[1, :2], ("node", "anode")):
            model = models[kind].replace(dtype="float64")
            ys = model.solve(np.asarray(params[kind], np.float64), starts, ts).ys[..., 0]
            for j, start in enumerate(starts[:, 0]):
                ends = abs(start) == 1
                ax.plot(ts, ys[:, j], color=("C2" if start < 0 else "C1") if ends else "0.8", lw=2 if ends else 1)
            ax.set(title=f"{LABELS[kind]}: h(t), targets -1 -> 1, 1 -> -1", xlabel="t",
                   ylabel="data feature")
        anode = models["anode"].replace(dtype="float64", augment=0)
        z = anode.solve(np.asarray(params["anode"], np.float64),
                        np.concatenate([starts, np.zeros((len(starts), cfg.augment_dims))], 1), ts).ys
        ax = axes[1, 2]
        for j, start in enumerate(starts[:, 0]):
            ends = abs(start) == 1
            ax.plot(z[:, j, 0], z[:, j, 1], color=("C2" if start < 0 else "C1") if ends else "0.8")
        ax.set(title="ANODE, augmented plane: paths pass", xlabel="data feature",
               ylabel="augmented feature 1")
        axes[0, 2].axis("off")
    else:
        from ..datasets import anode_a2
        x, labels = anode_a2(400, cfg.seed + 2)
        for ax, kind in zip(axes[1, :2], ("node", "anode")):
            states = _a2_states(models[kind], params[kind], x, ts)
            for c in (0, 1):
                ax.scatter(*states[-1, labels == c, :2].T, s=6, color=f"C{c}", label=f"class {c} at t=1")
            for j in range(0, 400, 20):
                ax.plot(states[:, j, 0], states[:, j, 1], color="0.8", lw=0.7, zorder=0)
            ax.set(title=f"{LABELS[kind]} flow (first two features)", aspect="equal")
            ax.legend(fontsize=8)
        grid = np.linspace(-1.8, 1.8, 61)
        gx, gy = np.meshgrid(grid, grid)
        points = np.stack([gx.ravel(), gy.ravel()], axis=1)
        for ax, kind in zip((axes[0, 2], axes[1, 2]), ("node", "anode")):
            net = models[kind].replace(dtype="float64")
            logits = net.apply(np.asarray(params[kind], np.float64), points)
            ax.contourf(gx, gy, (logits[:, 1] - logits[:, 0]).reshape(gx.shape) > 0, levels=[-0.5, 0.5, 1.5],
                        colors=["C0", "C1"], alpha=0.25)
            for c in (0, 1):
                ax.scatter(*x[labels == c].T, s=4, color=f"C{c}")
            ax.set(title=f"{LABELS[kind]} decision regions (input space)", aspect="equal")
    title = (f"pyneuralode anode {cfg.problem} — backend {cfg.backend}, augment={cfg.augment_dims}, "
             f"{cfg.activation}, {cfg.iters} iterations")
    save_figure(fig, path, title=title, dpi=100)
