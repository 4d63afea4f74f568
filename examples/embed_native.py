"""Embed a pyneuralode model in your own torch and JAX code with ``model.native()``, and read its counts.

    python examples/embed_native.py

``native()`` hands you the backend's own object — a ``torch.nn.Module`` or an equinox module ``ode(y0, ts)`` —
solved with the model's solver, tolerances and adjoint, starting from the same canonical weights
(``model.init(0)``) on every backend, and counting evaluations exactly as ``model.value_and_grad`` does.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 3 if SMOKE else 200

field = pn.MLP([2, 16, 2], activation="tanh")
y0 = np.array([[1.0, 0.0], [0.0, 1.0]])
ts = np.linspace(0.0, 1.0, 5)
target = np.stack([y0 * np.cos(t) + y0[:, ::-1] * np.sin(t) * [1, -1] for t in ts])  # a rotation to fit

# ---- torch: a module inside your own training loop (BacksolveAdjoint: the paper's O(1)-memory gradient)
import torch  # noqa: E402

model = pn.ODEModel(field, control=pn.StepControl(rtol=1e-6, atol=1e-8), adjoint=pn.BacksolveAdjoint(),
                    backend="torch")
ode = model.native()
head = torch.nn.Linear(2, 2, dtype=torch.float64)            # your own layers around it
opt = torch.optim.Adam([*ode.parameters(), *head.parameters()], lr=1e-2)
for it in range(ITERS):
    opt.zero_grad()
    ys = ode(torch.as_tensor(y0), torch.as_tensor(ts))
    loss = ((head(ys) - torch.as_tensor(target)) ** 2).mean()
    loss.backward()
    opt.step()
print(f"torch: loss {loss.item():.4f}, {ode.stats.nfe_forward} forward / {ode.stats.nfe_backward} backward "
      "evaluations in the last step")
trained = ode.params()                                      # the canonical flat vector, ready for any backend

# ---- JAX: the same weights in an equinox module; a float64 model needs x64 on in your JAX code
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

jax.config.update("jax_enable_x64", True)
jode = model.replace(backend="jax").native(trained)


@eqx.filter_jit
@eqx.filter_value_and_grad(has_aux=True)
def loss_and_counts(jode):
    ys, stats = jode.solve(jnp.asarray(y0), jnp.asarray(ts))
    return jnp.mean((ys - target) ** 2), stats


(value, stats), grads = loss_and_counts(jode)
backward = pn.backends.jax.backward_counts(grads.probe)
print(f"jax: {int(stats['nfe_forward'])} forward / {int(backward['nfe_backward'])} backward evaluations, "
      f"|grad| {float(jnp.linalg.norm(grads.params)):.3e}")
