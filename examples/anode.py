"""Augmented neural ODEs (Dupont et al. 2019): a neural ODE cannot map -1 -> 1 and 1 -> -1; one extra dimension can.

    python examples/anode.py

``pn.ODEModel(field, augment=1)`` solves in R^2 from [x, 0] and reports only the data feature; the plain model
solves in R^1, where trajectories cannot cross. Both train with Adam on the two points; then the annulus A2 as a
``pn.Network`` with a ``pn.Augment`` layer before its ODE block, checked on torch with the same weights.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 3 if SMOKE else 300

x, y = pn.datasets.anode_a1()                       # x = [[-1], [1]], y = [[1], [-1]]
ts = np.array([0.0, 1.0])
control = pn.StepControl(rtol=1e-4, atol=1e-5)
models = {"NODE": pn.ODEModel(pn.MLP([1, 32, 32, 1], activation="relu"), control=control),
          "ANODE": pn.ODEModel(pn.MLP([2, 32, 32, 2], activation="relu"), control=control, augment=1)}
for name, model in models.items():
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=pn.MSE)
    trainer.init(model.init(seed=0))
    for _ in range(ITERS):
        info = trainer.step(x, ts, np.stack([x, y]))   # target at t=0 is x itself: only t=1 counts
    end = model.solve(trainer.params, x, ts).ys[-1, :, 0]
    print(f"{name:5s} ({model.num_params} params): y(1) = {np.round(end, 3)}, target [1, -1], "
          f"NFE forward {info.stats.nfe_forward}")

# A2: an annulus classifier with one augmented dimension, identical numbers on JAX and torch.
spec = pn.Sequential(pn.Augment(1), pn.ODEBlock(pn.MLP([3, 16, 16, 3], activation="relu")), pn.Linear(3, 2))
net = pn.Network(spec, input_shape=(2,), dtype="float64")
points, labels = pn.datasets.anode_a2(30 if SMOKE else 300, seed=0)
on = {b: net.replace(backend=b).value_and_grad(net.init(0), points, labels) for b in ("jax", "torch")}
print(f"A2 cross-entropy jax {on['jax'].value:.12f}, torch {on['torch'].value:.12f}; max |grad difference| "
      f"{np.abs(on['jax'].grad_params - on['torch'].grad_params).max():.1e}; NFE forward "
      f"{on['jax'].stats.nfe_forward} / {on['torch'].stats.nfe_forward}")
