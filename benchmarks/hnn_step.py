"""One Hamiltonian-network training step through pyneuralode (``pn.grad`` inside ``pn.dynamics``) vs the same
field hand-written with each library's own autodiff inside the vector field.

The field of ``examples/hamiltonian_nn.py``: ``H = 2 → 32 → 32 → 1`` (tanh), ``du/dt = (∂H/∂p, −∂H/∂q)``; eight
pendulum trajectories, 16 save times on [0, 3], MSE, Dopri5 at rtol = atol = 1e-6, float64, Adam (lr 1e-3),
discretise-then-optimise gradients — so every step differentiates through a gradient (second derivatives of H).
Contenders, timed interleaved in one process (median of ``--steps`` calls after warm-up):

- ``pn-jax``: ``pn.Trainer`` on the ``pn.dynamics`` field (the gradient is reverse mode written into the traced
  graph); ``raw-diffrax``: ``jax.vmap(jax.grad(H))`` inside the field, ``diffrax.diffeqsolve`` with
  ``RecursiveCheckpointAdjoint`` and ``optax.adam`` in one ``jax.jit`` step; ``pn-jax (dt0=0.01)`` starts from
  diffrax 0.7.2's effective first step so both take the same steps.
- ``pn-torch``: the same Trainer on torch; ``raw-torchdiffeq``: torchdyn's recipe,
  ``torch.autograd.grad(H(x).sum(), x, create_graph=True)`` inside the field, ``odeint`` + ``torch.optim.Adam``.

All start from pyneuralode's seed-1 weights; the first losses are printed and must agree. Run:
``python -m benchmarks.hnn_step [--steps 50]`` → ``benchmarks/results/hnn_step.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

import pyneuralode as pn

from ._harness import (linear_layers, pn_contenders, raw_diffrax_trainer, raw_torchdiffeq_trainer, torch_linears,
                       training_step_benchmark)

RTOL = ATOL = 1e-6
LR = 1e-3
SETTINGS = dict(rtol=RTOL, atol=ATOL, lr=LR)
TS = np.linspace(0.0, 3.0, 16)
H_NET = pn.MLP([2, 32, 32, 1], activation="tanh")


@pn.dynamics(state=2, nets={"H": H_NET})
def hamiltonian_nn(t, u, p):
    dH = pn.grad(lambda x: p.H(x)[0])(u)
    return np.stack([dH[1], -dH[0]])


@pn.dynamics(state=2)
def pendulum(t, u, p):
    return np.stack([u[1], -2.0 * np.sin(u[0])])


def _problem():
    rng = np.random.default_rng(0)
    truth = pn.ODEModel(pendulum, control=pn.StepControl(rtol=1e-10, atol=1e-10), backend="jax")
    y0 = np.stack([rng.uniform(-1.5, 1.5, 8), rng.uniform(-1.0, 1.0, 8)], axis=1)
    data = truth.solve(truth.init(0), y0, TS).ys
    flat = pn.init_params(hamiltonian_nn, 1, "float64")
    return flat, linear_layers(flat, (2, 32, 32, 1)), data[0], data


def raw_diffrax_step(layers, y0, target):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    params = [(jnp.asarray(w), jnp.asarray(b)) for w, b in layers]

    def energy(x, p):
        for w, b in p[:-1]:
            x = jnp.tanh(w @ x + b)
        return (p[-1][0] @ x + p[-1][1])[0]

    def field(t, y, p):
        dH = jax.vmap(jax.grad(energy), in_axes=(0, None))(y, p)
        return jnp.stack([dH[:, 1], -dH[:, 0]], axis=1)

    return raw_diffrax_trainer(field, params, TS, y0, target, **SETTINGS)


def raw_torchdiffeq_step(layers, y0, target):
    import torch

    class HNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linears = torch_linears(layers)

        def forward(self, t, y):
            with torch.enable_grad():
                x = y if y.requires_grad else y.requires_grad_(True)
                h = x
                for lin in self.linears[:-1]:
                    h = torch.tanh(lin(h))
                dH = torch.autograd.grad(self.linears[-1](h).sum(), x, create_graph=True)[0]
            return torch.stack([dH[:, 1], -dH[:, 0]], dim=1)

    return raw_torchdiffeq_trainer(HNN(), TS, y0, target, **SETTINGS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per contender (after warm-up)")
    args = parser.parse_args(argv)
    flat, layers, y0, target = _problem()
    cases = {**pn_contenders(hamiltonian_nn, flat, TS, y0, target, **SETTINGS),
             "raw-diffrax": raw_diffrax_step(layers, y0, target),
             "raw-torchdiffeq": raw_torchdiffeq_step(layers, y0, target)}
    training_step_benchmark("Hamiltonian-network step", "hnn_step", cases, {
        "problem": "Hamiltonian network H 2-32-32-1 tanh, 8 pendulum trajectories, 16 times on [0, 3]",
        "solver": "Dopri5", "rtol": RTOL, "atol": ATOL, "dtype": "float64", "optimizer": "Adam", "lr": LR},
        steps=args.steps)


if __name__ == "__main__":
    main()
