"""Put an ODE block inside your own equinox model and train it with optax, keeping gradients and NFE.

    python examples/equinox_optax.py

The same task as ``torch_module.py`` (classify two moons with an encoder, an ODE block and a head), written the
JAX way. ``model.native()`` on the JAX backend is an equinox module ``ode(y0, ts) -> ys`` holding the canonical
flat parameters (``model.init(0)``); it is jit-able and differentiable with ``eqx.filter_value_and_grad`` through
the model's gradient method. Its evaluation counts come out without host callbacks: ``ode.solve`` returns the
forward counts beside the states, and the gradient with respect to ``ode.probe`` carries the backward ones.
"""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pyneuralode as pn
from pyneuralode.backends.jax import backward_counts

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS, BATCH = (3, 64) if SMOKE else (300, 256)
HIDDEN = 8
TS = jnp.array([0.0, 1.0])


def moons(n, seed):
    """Two moons (FFJORD's scaling) with their labels: the first half of the points is moon 0."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    label = np.arange(n) >= n // 2
    x = np.where(label[:, None], np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1), np.stack([np.cos(t), np.sin(t)], 1))
    x = (x + 0.1 * rng.standard_normal((n, 2))) * 2 + np.array([-1.0, -0.2])
    return jnp.asarray(x, jnp.float32), jnp.asarray(label, jnp.int32)


ode_model = pn.ODEModel(pn.MLP([HIDDEN, 32, HIDDEN], activation="tanh"), solver=pn.Dopri5(),
                        control=pn.StepControl(rtol=1e-4, atol=1e-5), adjoint=pn.BacksolveAdjoint(),
                        backend="jax", dtype="float32")


class Classifier(eqx.Module):
    encoder: eqx.nn.Linear
    ode: eqx.Module                                       # pyneuralode's native block
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.encoder = eqx.nn.Linear(2, HIDDEN, key=k1)
        self.ode = ode_model.native()                     # weights = ode_model.init(0), as on every backend
        self.head = eqx.nn.Linear(HIDDEN, 2, key=k2)

    def __call__(self, x):
        ys, stats = self.ode.solve(jax.vmap(self.encoder)(x), TS)    # the batch is y0's leading axis
        return jax.vmap(self.head)(ys[-1]), stats


def loss_fn(net, x, y):
    logits, stats = net(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), stats


net = Classifier(jax.random.PRNGKey(0))
# Train every float array except the probe: it only counts the backward pass, it is not a weight.
weights = jax.tree_util.tree_map(eqx.is_inexact_array, net)
weights = eqx.tree_at(lambda n: n.ode.probe, weights, replace=False)
optimizer = optax.adam(1e-2)
opt_state = optimizer.init(eqx.filter(net, weights))


@eqx.filter_jit
def step(net, opt_state, x, y):
    (loss, stats), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(net, x, y)
    stats = {**stats, **backward_counts(grads.ode.probe)}        # backward NFE from the probe's gradient
    updates, opt_state = optimizer.update(eqx.filter(grads, weights), opt_state, eqx.filter(net, weights))
    return eqx.apply_updates(net, updates), opt_state, loss, stats


for it in range(1, ITERS + 1):
    x, y = moons(BATCH, seed=it)
    net, opt_state, loss, stats = step(net, opt_state, x, y)
    if it % 50 == 0 or it == ITERS:
        print(f"iter {it:3d}  loss {float(loss):.4f}  NFE forward {int(stats['nfe_forward'])} "
              f"backward {int(stats['nfe_backward'])}")

x, y = moons(2000, seed=0)
logits, _ = eqx.filter_jit(net)(x)
print(f"test accuracy {float(jnp.mean(jnp.argmax(logits, 1) == y)):.1%}")

# The trained block, back as pyneuralode's canonical vector: the same numbers run on every backend.
flat = np.asarray(net.ode.params)
z0 = np.asarray(jax.vmap(net.encoder)(x[:5]))
print("torch agrees:", np.allclose(ode_model.replace(backend="torch").solve(flat, z0, [0.0, 1.0]).ys[-1],
                                   np.asarray(net.ode(jnp.asarray(z0), TS)[-1]), atol=1e-4))
