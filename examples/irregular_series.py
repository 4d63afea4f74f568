"""Train on series observed at their own irregular times: per-sample ``ts`` of shape ``(batch, T)``.

    python examples/irregular_series.py [jax|torch]

A damped oscillator with unknown damping and stiffness; eight series start from different states and are each
observed at 12 random times of their own. ``Trainer.step`` (and ``model.value_and_grad``) take those times as one
``(batch, T)`` array with the target shaped ``(T, batch, 2)``: the batch is solved once at the union of all the
times and each series' loss sees only its own points. ``mask=`` leaves out single missing values on top.
"""

import os
import sys

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 5 if SMOKE else 300
BACKEND = sys.argv[1] if len(sys.argv) > 1 else "jax"


@pn.dynamics(state=2, params={"damping": 0.3, "stiffness": 2.0}, positive=("damping", "stiffness"))
def oscillator(t, u, p):
    return np.stack([u[1], -p.damping * u[1] - p.stiffness * u[0]])


model = pn.ODEModel(oscillator, control=pn.StepControl(rtol=1e-7, atol=1e-7), backend=BACKEND)
truth = model.init(seed=0)                                   # log of the declared values
rng = np.random.default_rng(0)
y0 = rng.uniform(-1.0, 1.0, (8, 2))
ts = np.concatenate([np.zeros((8, 1)), np.sort(rng.uniform(0.0, 6.0, (8, 11)), axis=1)], axis=1)  # own times
data = model.solve(truth, y0, ts).ys                         # (12, 8, 2): series b at ts[b]
data = data + 0.01 * rng.standard_normal(data.shape)
observed = np.ones(data.shape, bool)
observed[3:6, 2, 1] = False                                  # series 2 lost its velocity for three readings

trainer = pn.Trainer(model, optimizer=pn.Adam(lr=0.05), loss=pn.MSE)
trainer.init(truth + np.array([0.7, -0.5]))                  # start off: damping x2, stiffness x0.6
first = trainer.step(y0, ts, data, mask=observed)
for _ in range(ITERS - 1):
    last = trainer.step(y0, ts, data, mask=observed)
found = np.exp(trainer.params)
print(f"{BACKEND}: loss {first.loss:.4g} -> {last.loss:.4g} in {ITERS} steps, "
      f"{last.stats.nfe_forward} evaluations per solve")
print(f"damping {found[0]:.3f} (true 0.3), stiffness {found[1]:.3f} (true 2.0)")
if not SMOKE:
    assert np.allclose(found, [0.3, 2.0], rtol=0.05), found
