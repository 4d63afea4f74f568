"""Train the paper's spiral from Python, then check the trained weights on a second backend.

    python examples/spiral.py

The field is Chen et al.'s ``f(t, y) = MLP(y**3)`` (2 -> 50 -> 2, tanh); training follows torchdiffeq's
``examples/ode_demo.py``: random windows of 10 points, mean absolute error, here Adam at lr 1e-2.
"""

import os

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.spiral import sample_batch, spiral_data, spiral_field

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 5 if SMOKE else 500

model = pn.ODEModel(spiral_field(), solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-5, atol=1e-6),
                    backend="jax")
ts, ys = spiral_data()                                   # the true spiral, 1000 points on [0, 25]
trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=pn.L1)
trainer.init(model.init(seed=0))                         # canonical flat weights: the same on every backend

rng = np.random.default_rng(0)
for it in range(1, ITERS + 1):
    y0, t, target = sample_batch(rng, ts, ys)
    info = trainer.step(y0, t, target)
    if it % 100 == 0 or it == ITERS:
        print(f"iter {it:4d}  loss {info.loss:.4f}  NFE forward {info.stats.nfe_forward}")

# The same weights on torch: outputs, gradients and NFE side by side.
params = trainer.params
print(pn.compare(model, backends=("jax", "torch"), params=params, y0=ys[0], ts=ts[:200],
                 loss=pn.L1(ys[:200])))
