"""Discover missing physics: a universal differential equation (UDE) on Lotka–Volterra, Adam then L-BFGS.

    python examples/ude_lotka_volterra.py

We know the prey grows (αx) and the predators die (−δy); the interaction terms are missing and a small network
U(x, y) learns them from 21 noisy observations on [0, 5] (the SciML "missing physics" showcase). The full
command with checkpoints, metrics and a picture is ``pyneuralode ude``.
"""

import os

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.ude import UDEConfig, lotka_volterra_data, missing_terms

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ADAM, LBFGS = (3, 2) if SMOKE else (3000, 300)

# 1. The data: the true system observed at t = 0, 0.25, ..., 5 with noise.
u0, ts, clean, data = lotka_volterra_data(UDEConfig())


# 2. The model: known physics plus a network, written once in NumPy, run natively by JAX (or torch).
@pn.dynamics(state=2, constants={"alpha": 1.3, "delta": 1.8},
             nets={"U": pn.MLP([2, 5, 5, 5, 2], activation="rbf")})
def lotka_volterra_ude(t, u, p):
    m = p.U(u)
    return np.stack([p.alpha * u[0] + m[0], -p.delta * u[1] + m[1]])


model = pn.ODEModel(lotka_volterra_ude, solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-6, atol=1e-6),
                    backend="jax")

# 3. Adam with a decaying learning rate on a growing window of the data (a mask: the untrained model's trajectory
#    explodes late in [0, 5], so the fit starts on t <= 1), then L-BFGS on all of it from where Adam stopped.
adam = pn.Trainer(model, optimizer=pn.Adam(lr=pn.ExponentialDecay(init_value=0.02, decay_rate=0.1,
                                                                   transition_steps=ADAM)), loss=pn.MSE)
adam.init(model.init(seed=0))
for it in range(1, ADAM + 1):
    horizon = min(5.0, 1.0 + 4.0 * it / (ADAM / 2))
    window = np.broadcast_to((ts <= horizon)[:, None], data.shape)
    info = adam.step(data[0], ts, data, mask=window)
    if it % 500 == 0 or it == ADAM:
        print(f"Adam   {it:5d}  loss {info.loss:.3e} on t <= {horizon:.2f}")
lbfgs = pn.Trainer(model, optimizer=pn.LBFGS(), loss=pn.MSE)
lbfgs.init(adam.params)
for it in range(1, LBFGS + 1):
    info = lbfgs.step(data[0], ts, data)
    if it % 100 == 0 or it == LBFGS:
        print(f"L-BFGS {it:5d}  loss {info.loss:.3e}  ({info.evaluations} evaluations this step)")

# 4. Did U learn the missing terms (−βxy, γxy)? Evaluate the field in NumPy and subtract the known part.
params = lbfgs.params
du = lotka_volterra_ude.evaluate(params, 0.0, clean)
learned = du - np.stack([1.3 * clean[:, 0], -1.8 * clean[:, 1]], axis=1)
truth = missing_terms(clean)
print(f"U vs true interaction terms along the data: relative L2 error "
      f"{np.linalg.norm(learned - truth) / np.linalg.norm(truth):.3e}")

# The same model and weights on torch: the fit is one definition, any backend.
print(pn.compare(model, backends=("jax", "torch"), params=params, y0=data[0], ts=ts, loss=pn.MSE(data)))
