"""One UDE training step (forward + gradient + Adam update) through pyneuralode vs the same field hand-written.

The Lotka–Volterra universal differential equation of ``pyneuralode ude``: ``dx = αx + U(x, y)₁``,
``dy = −δy + U(x, y)₂`` with α, δ known and ``U = 2 → 5 → 5 → 5 → 2`` (``exp(−x²)`` activations), one trajectory
of 21 observations on [0, 5], MSE, Dopri5 at rtol = atol = 1e-6, float64, Adam (lr 1e-3), discretise-then-
optimise gradients. Contenders, timed interleaved in one process (median of ``--steps`` calls after warm-up):

- ``pn-jax``: ``pn.Trainer`` on a ``pn.dynamics`` field, JAX backend (CheckpointAdjoint); ``raw-diffrax``: the
  field written in ``jax.numpy``, ``diffrax.diffeqsolve`` with ``RecursiveCheckpointAdjoint`` + ``optax.adam``,
  one ``jax.jit`` step. ``pn-jax (dt0=0.01)`` starts from diffrax 0.7.2's effective first step (its ``dt0=None``
  rule does not run inside ``diffeqsolve``; see pyneuralode/backends/jax/_diffrax.py), so both do the same steps.
- ``pn-torch``: the same Trainer on the torch backend (DirectAdjoint: backprop through ``odeint``);
  ``raw-torchdiffeq``: an ``nn.Module`` field, ``torchdiffeq.odeint`` + ``torch.optim.Adam``.

All start from pyneuralode's seed-0 weights. The JAX contenders are then timed again alternating among
themselves only (steady-state training, without ~95 ms of torch work between two sub-millisecond JAX steps). Run: ``python -m benchmarks.ude_step [--steps 100]`` →
``benchmarks/results/ude_step.json``.
"""

from __future__ import annotations

import argparse


import pyneuralode as pn
from pyneuralode.problems.ude import ALPHA, DATA_TIMES, DELTA, UDEConfig, lotka_volterra_data, ude_field

from ._harness import (linear_layers, pn_contenders, raw_diffrax_trainer, raw_torchdiffeq_trainer, torch_linears,
                       training_step_benchmark)

RTOL = ATOL = 1e-6
LR = 1e-3
SETTINGS = dict(rtol=RTOL, atol=ATOL, lr=LR)


def _problem():
    cfg = UDEConfig()
    _, _, _, noisy = lotka_volterra_data(cfg, backend="jax")
    field = ude_field(cfg)
    flat = pn.init_params(field, 0, "float64")
    # U's canonical layout: per Linear layer, weight (out, in) row-major then bias (DESIGN.md contract 1).
    return field, flat, linear_layers(flat, (2, 5, 5, 5, 2)), noisy[0], noisy


def raw_diffrax_step(layers, y0, target):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layers]

    def field(t, u, p):
        h = u
        for w, b in p[:-1]:
            h = jnp.exp(-(h @ w.T + b) ** 2)
        m = h @ p[-1][0].T + p[-1][1]
        return jnp.stack([ALPHA * u[0] + m[0], -DELTA * u[1] + m[1]])

    return raw_diffrax_trainer(field, params, DATA_TIMES, y0, target, **SETTINGS)


def raw_torchdiffeq_step(layers, y0, target):
    import torch

    class UDE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linears = torch_linears(layers)

        def forward(self, t, u):
            h = u
            for lin in self.linears[:-1]:
                h = torch.exp(-lin(h) ** 2)
            m = self.linears[-1](h)
            return torch.stack([ALPHA * u[0] + m[0], -DELTA * u[1] + m[1]])

    return raw_torchdiffeq_trainer(UDE(), DATA_TIMES, y0, target, **SETTINGS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per contender (after warm-up)")
    args = parser.parse_args(argv)
    field, flat, layers, y0, target = _problem()
    cases = {**pn_contenders(field, flat, DATA_TIMES, y0, target, **SETTINGS),
             "raw-diffrax": raw_diffrax_step(layers, y0, target),
             "raw-torchdiffeq": raw_torchdiffeq_step(layers, y0, target)}
    training_step_benchmark("UDE step", "ude_step", cases, {
        "problem": "Lotka-Volterra UDE, U 2-5-5-5-2 rbf, 21 observations on [0, 5], one trajectory",
        "solver": "Dopri5", "rtol": RTOL, "atol": ATOL, "dtype": "float64", "optimizer": "Adam", "lr": LR},
        steps=args.steps)


if __name__ == "__main__":
    main()
