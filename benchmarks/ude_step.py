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

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.ude import ALPHA, DATA_TIMES, DELTA, UDEConfig, lotka_volterra_data, ude_field

from ._harness import training_step_benchmark

RTOL = ATOL = 1e-6
LR = 1e-3


def _problem():
    cfg = UDEConfig()
    _, _, _, noisy = lotka_volterra_data(cfg, backend="jax")
    field = ude_field(cfg)
    flat = pn.init_params(field, 0, "float64")
    # U's canonical layout: per Linear layer, weight (out, in) row-major then bias (DESIGN.md contract 1).
    layers, offset = [], 0
    for n_in, n_out in ((2, 5), (5, 5), (5, 5), (5, 2)):
        w = flat[offset:offset + n_in * n_out].reshape(n_out, n_in)
        b = flat[offset + n_in * n_out:offset + n_in * n_out + n_out]
        layers.append((w, b))
        offset += n_in * n_out + n_out
    assert offset == flat.size
    return field, flat, layers, noisy[0], noisy


def pn_step(backend, field, flat, y0, target, dt0=None):
    adjoint = pn.CheckpointAdjoint() if backend == "jax" else pn.DirectAdjoint()
    model = pn.ODEModel(field, solver=pn.Dopri5(), control=pn.StepControl(rtol=RTOL, atol=ATOL, dt0=dt0),
                        adjoint=adjoint, backend=backend, dtype="float64")
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=LR), loss=pn.MSE)
    trainer.init(flat)
    return lambda: trainer.step(y0, DATA_TIMES, target)


def raw_diffrax_step(layers, y0, target):
    import diffrax
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", True)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layers]

    def field(t, u, p):
        h = u
        for w, b in p[:-1]:
            h = jnp.exp(-(h @ w.T + b) ** 2)
        m = h @ p[-1][0].T + p[-1][1]
        return jnp.stack([ALPHA * u[0] + m[0], -DELTA * u[1] + m[1]])

    ts = jnp.asarray(DATA_TIMES)

    def loss(p, y0, target):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri5(), ts[0], ts[-1], None, y0, args=p,
                                  saveat=diffrax.SaveAt(ts=ts), adjoint=diffrax.RecursiveCheckpointAdjoint(),
                                  stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL))
        return jnp.mean((sol.ys - target) ** 2)

    opt = optax.adam(LR)

    @jax.jit
    def step(p, s, y0, target):
        value, grads = jax.value_and_grad(loss)(p, y0, target)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    state = {"p": params, "s": opt.init(params)}

    def run():
        state["p"], state["s"], value = step(state["p"], state["s"], y0, target)
        return float(value)
    return run


def raw_torchdiffeq_step(layers, y0, target):
    import torch
    from torchdiffeq import odeint

    class UDE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linears = torch.nn.ModuleList(torch.nn.Linear(w.shape[1], w.shape[0]).double() for w, _ in layers)
            with torch.no_grad():
                for lin, (w, b) in zip(self.linears, layers):
                    lin.weight.copy_(torch.as_tensor(w))
                    lin.bias.copy_(torch.as_tensor(b))

        def forward(self, t, u):
            h = u
            for lin in self.linears[:-1]:
                h = torch.exp(-lin(h) ** 2)
            m = self.linears[-1](h)
            return torch.stack([ALPHA * u[0] + m[0], -DELTA * u[1] + m[1]])

    func = UDE()
    opt = torch.optim.Adam(func.parameters(), lr=LR)
    y0_t, target_t, ts = (torch.as_tensor(a) for a in (y0, target, DATA_TIMES))

    def run():
        opt.zero_grad()
        loss = torch.mean((odeint(func, y0_t, ts, rtol=RTOL, atol=ATOL, method="dopri5") - target_t) ** 2)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="timed steps per contender (after warm-up)")
    args = parser.parse_args(argv)
    field, flat, layers, y0, target = _problem()
    cases = {
        "pn-jax": pn_step("jax", field, flat, y0, target),
        "pn-jax (dt0=0.01)": pn_step("jax", field, flat, y0, target, dt0=0.01),
        "raw-diffrax": raw_diffrax_step(layers, y0, target),
        "pn-torch": pn_step("torch", field, flat, y0, target),
        "raw-torchdiffeq": raw_torchdiffeq_step(layers, y0, target),
    }
    training_step_benchmark("UDE step", "ude_step", cases, {
        "problem": "Lotka-Volterra UDE, U 2-5-5-5-2 rbf, 21 observations on [0, 5], one trajectory",
        "solver": "Dopri5", "rtol": RTOL, "atol": ATOL, "dtype": "float64", "optimizer": "Adam", "lr": LR},
        steps=args.steps)


if __name__ == "__main__":
    main()
