"""A latent ODE on irregularly-sampled spirals (Chen et al. 2018 §5), each series with its own observation times.

    python examples/latent_ode_spirals.py

Each spiral is observed at 30 of its 100 times; ``pn.union_times`` puts a batch on the union of its series' times
with a mask, so one ODE solve serves the whole batch and each series' likelihood sees only its own points. Then the
trained weights are checked on torch: the same ELBO and gradient, float64, with the same ε.
"""

import os

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.latent import LatentTrainer

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
N, ITERS, BATCH = (24, 3, 8) if SMOKE else (1000, 300, 100)

ts, truth, observed, clockwise = pn.datasets.latent_spirals(N, seed=0)
index = pn.datasets.subsample(N, len(ts), 30, seed=1)             # 30 irregular times per spiral
times = [ts[i] for i in index]
values = [observed[b, i] for b, i in enumerate(index)]

# torch: each batch has its own union of times, a new shape that JAX would compile again (fixed grids suit JAX)
model = pn.LatentODE(obs_dim=2, latent_dim=4, rnn_hidden=25, control=pn.StepControl(rtol=1e-3, atol=1e-4),
                     backend="torch")
trainer = LatentTrainer(model, pn.Adam(lr=1e-2))
trainer.init(model.init(seed=0))
rng = np.random.default_rng(0)
for it in range(1, ITERS + 1):
    batch = rng.choice(N, BATCH, replace=False)
    # the union of this batch's times plus t0 = 0 (the time of z(t0)), with one mask row per series
    union, mask, x = pn.union_times([times[b] for b in batch], [values[b] for b in batch], start=0.0)
    res = trainer.step(union, x, mask, rng.standard_normal((BATCH, 4)))
    if it % 50 == 0 or it == ITERS:
        print(f"iter {it:4d}  -ELBO {res.value:9.3f}  KL {res.kl.mean():.3f}  NFE forward {res.stats.nfe_forward}")

# Reconstruct a few spirals at all 100 times from their 30 observations (posterior mean) and score them.
full_mask = np.zeros((4, len(ts)), bool)
np.put_along_axis(full_mask, index[:4], True, axis=1)
pred = model.predict(trainer.params, ts, observed[:4], ts, full_mask)
print(f"RMSE vs the noise-free spirals, 4 series x 100 times: {np.sqrt(np.mean((pred - truth[:4]) ** 2)):.4f}")

# JAX and torch agree on the ELBO and its gradient (float64, fixed ε).
check = model.replace(dtype="float64", control=pn.StepControl(rtol=1e-9, atol=1e-9))
eps = rng.standard_normal((4, 4))
on = {b: check.replace(backend=b).value_and_grad(trainer.params.astype(np.float64), ts, observed[:4], full_mask,
                                                  eps=eps) for b in ("jax", "torch")}
print(f"-ELBO jax {on['jax'].value:.12f}, torch {on['torch'].value:.12f}; max relative gradient difference "
      f"{np.abs(on['jax'].grad_params - on['torch'].grad_params).max() / np.abs(on['torch'].grad_params).max():.1e}")
