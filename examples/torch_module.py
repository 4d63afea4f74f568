"""Put an ODE block inside your own torch.nn.Module and train it with a plain PyTorch loop.

    python examples/torch_module.py

The classifier is an encoder, a pyneuralode ODE block and a linear head; the task is two interleaved moons (points
labelled by moon). ``model.native()`` on the torch backend is an ``nn.Module`` ``ode(y0, ts) -> ys`` that solves
with the model's solver, tolerances and gradient method (here the paper's adjoint, ``BacksolveAdjoint``), starting
from the same weights as every other backend (``model.init(0)``). Its parameters are ordinary
``nn.Parameter``s, so ``torch.optim`` trains them with the rest of your model; ``ode.stats`` has the evaluation
counts of the latest call — forward, and backward once you have backpropagated — with the meaning of ``pn.Stats``.
"""

import os

import numpy as np
import torch

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS, BATCH = (3, 64) if SMOKE else (300, 256)
HIDDEN = 8
torch.manual_seed(0)


def moons(n, seed):
    """Two moons (FFJORD's scaling) with their labels: the first half of the points is moon 0."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    label = np.arange(n) >= n // 2
    x = np.where(label[:, None], np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1), np.stack([np.cos(t), np.sin(t)], 1))
    x = (x + 0.1 * rng.standard_normal((n, 2))) * 2 + np.array([-1.0, -0.2])
    return torch.tensor(x, dtype=torch.float32), torch.tensor(label, dtype=torch.int64)


ode_model = pn.ODEModel(pn.MLP([HIDDEN, 32, HIDDEN], activation="tanh"), solver=pn.Dopri5(),
                        control=pn.StepControl(rtol=1e-4, atol=1e-5), adjoint=pn.BacksolveAdjoint(),
                        backend="torch", dtype="float32")


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(2, HIDDEN)
        self.ode = ode_model.native()                    # an nn.Module: ode(y0, ts) -> ys, weights = init(0)
        self.head = torch.nn.Linear(HIDDEN, 2)
        self.register_buffer("ts", torch.tensor([0.0, 1.0]))

    def forward(self, x):
        return self.head(self.ode(self.encoder(x), self.ts)[-1])    # the state at t = 1


net = Classifier()
optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
for it in range(1, ITERS + 1):
    x, y = moons(BATCH, seed=it)
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    optimizer.step()
    if it % 50 == 0 or it == ITERS:
        s = net.ode.stats                                # counts of this step's forward and backward solves
        print(f"iter {it:3d}  loss {loss.item():.4f}  NFE forward {s.nfe_forward} backward {s.nfe_backward}")

x, y = moons(2000, seed=0)
with torch.no_grad():
    accuracy = (net(x).argmax(1) == y).float().mean().item()
print(f"test accuracy {accuracy:.1%}")

# The trained block, back as pyneuralode's canonical vector: the same numbers run on every backend.
flat = net.ode.params()
z0 = net.encoder(x[:5]).detach().numpy()
print("JAX agrees:", np.allclose(ode_model.replace(backend="jax").solve(flat, z0, [0.0, 1.0]).ys[-1],
                                 net.ode(torch.tensor(z0), net.ts)[-1].detach().numpy(), atol=1e-4))
