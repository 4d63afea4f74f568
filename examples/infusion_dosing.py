"""Forcing that switches on and off: a drug infusion, declared to the solver with ``jump_ts``, and its
elimination rate and infusion rate recovered from blood samples.

    python examples/infusion_dosing.py

One-compartment pharmacokinetics: the concentration ``c`` obeys ``dc/dt = R(t)/V - k c``, where the infusion
``R(t)`` runs at ``rate`` from t = 1 h to t = 3 h and is zero otherwise, ``V`` is the volume of distribution (known)
and ``k`` the elimination rate (learned, kept positive). The switch times go to the solver as ``jump_ts``: it
steps onto each switch and restarts after it, instead of hunting for the kink with rejected steps. The script
prints the evaluations with and without them, the error against the closed-form solution, and the fit.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 5 if SMOKE else 300
ON, OFF, VOLUME = 1.0, 3.0, 2.0                             # infusion from 1 h to 3 h; V = 2 L


@pn.dynamics(state=1, params={"k": 0.5, "rate": 1.0}, constants={"volume": VOLUME}, positive=("k", "rate"))
def infusion(t, c, p):
    dose = np.where(t < ON, 0.0, np.where(t < OFF, p.rate, 0.0))   # a step input: on at ON, off at OFF
    return dose / p.volume - p.k * c


def exact(t, k, rate):
    """The closed form: the infusion's approach to rate/(V k), then exponential decay after it stops."""
    plateau = rate / (VOLUME * k)
    during = plateau * (1 - np.exp(-k * (np.clip(t, ON, OFF) - ON)))
    return during * np.exp(-k * np.clip(t - OFF, 0.0, None))


ts = np.linspace(0.0, 10.0, 21)                             # samples every 30 minutes
c0 = np.zeros(1)
true = dict(k=0.3, rate=4.0)
truth = np.log([true["k"], true["rate"]])                   # positive params are stored as their logs
for jumps in ((), (ON, OFF)):
    model = pn.ODEModel(infusion, solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-8, atol=1e-8, jump_ts=jumps),
                        backend="jax", dtype="float64")
    sol = model.solve(truth, c0, ts)
    err = np.max(np.abs(sol.ys[:, 0] - exact(ts, **true)))
    print(f"jump_ts={jumps}: {sol.stats.nfe_forward} evaluations, {sol.stats.steps_rejected} rejected steps, "
          f"max error vs closed form {err:.1e}")

rng = np.random.default_rng(0)
samples = exact(ts, **true)[:, None] * (1 + 0.03 * rng.standard_normal((ts.size, 1)))   # 3% assay noise
trainer = pn.Trainer(model, optimizer=pn.Adam(lr=0.05), loss=pn.MSE)
trainer.init(model.init(seed=0))                            # start from the declared k = 0.5, rate = 1.0
for it in range(1, ITERS + 1):
    report = trainer.step(c0, ts, samples)
    if it % 100 == 0:
        print(f"Adam {it:4d}  loss {report.loss:.3e}")
k, rate = np.exp(trainer.params)
print(f"after {ITERS} Adam steps: loss {report.loss:.2e}, k = {k:.3f} /h (true {true['k']}), "
      f"rate = {rate:.3f} mg/h (true {true['rate']})")
