"""A Hamiltonian neural network: learn the energy, get the dynamics from its gradient (Greydanus et al. 2019).

    python examples/hamiltonian_nn.py

A pendulum, H(q, p) = p²/2 + 2(1 − cos q), is observed along eight short trajectories on [0, 3]. Two models are
fitted to the same data with the same optimiser:

- a plain neural ODE, du/dt = MLP(u);
- a Hamiltonian network: a network H_θ(q, p) and the field (∂H_θ/∂p, −∂H_θ/∂q), written with ``pn.grad`` inside
  ``pn.dynamics``. Training it differentiates through a gradient (second derivatives), which every backend runs
  from the one definition below.

Both are then run ten times longer than anything they saw. The Hamiltonian network conserves its own energy by
construction, so it keeps to the true orbit's energy; the plain network's orbit drifts.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
STEPS = 3 if SMOKE else 1500


def energy(u):
    return 0.5 * u[..., 1] ** 2 + 2.0 * (1.0 - np.cos(u[..., 0]))


# 1. The data: the true pendulum from eight initial states, 16 noisy samples each on [0, 3].
@pn.dynamics(state=2)
def pendulum(t, u, p):
    return np.stack([u[1], -2.0 * np.sin(u[0])])


rng = np.random.default_rng(0)
truth = pn.ODEModel(pendulum, control=pn.StepControl(rtol=1e-10, atol=1e-10), backend="jax")
y0 = np.stack([rng.uniform(-1.5, 1.5, 8), rng.uniform(-1.0, 1.0, 8)], axis=1)
ts = np.linspace(0.0, 3.0, 16)
data = truth.solve(truth.init(0), y0, ts).ys + 0.01 * rng.standard_normal((16, 8, 2))


# 2. The two models, one spec each.
@pn.dynamics(state=2, nets={"H": pn.MLP([2, 32, 32, 1], activation="tanh")})
def hamiltonian_nn(t, u, p):
    dH = pn.grad(lambda x: p.H(x)[0])(u)        # ∂H/∂(q, p), by reverse mode inside the traced field
    return np.stack([dH[1], -dH[0]])


plain_node = pn.MLP([2, 32, 32, 2], activation="tanh")

control = pn.StepControl(rtol=1e-6, atol=1e-6)
models = {"Hamiltonian network": pn.ODEModel(hamiltonian_nn, control=control, backend="jax"),
          "plain neural ODE": pn.ODEModel(plain_node, control=control, backend="jax")}

# 3. The same fit for both: Adam on the trajectories (the loss compares every saved state).
fitted = {}
for name, model in models.items():
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=pn.CosineDecay(init_value=3e-3, decay_steps=STEPS)),
                         loss=pn.MSE)
    trainer.init(model.init(seed=1))
    for it in range(1, STEPS + 1):
        info = trainer.step(data[0], ts, data)
        if it % 500 == 0 or it == STEPS:
            print(f"{name:20s} step {it:5d}  loss {info.loss:.2e}")
    fitted[name] = trainer.params

# 4. Ten times the training horizon from a state not in the data: orbit error and energy drift.
start, long_ts = np.array([1.2, 0.0]), np.linspace(0.0, 30.0, 301)
exact = truth.solve(truth.init(0), start, long_ts).ys
print(f"\n{'model':20s} {'state error at t=30':>20s} {'max |H(u) - H(u0)|':>20s}")
for name, model in models.items():
    ys = model.solve(fitted[name], start, long_ts).ys
    drift = np.max(np.abs(energy(ys) - energy(start)))
    print(f"{name:20s} {np.linalg.norm(ys[-1] - exact[-1]):20.3e} {drift:20.3e}")
