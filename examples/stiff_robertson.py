"""Robertson's stiff chemical kinetics from Python: write the chemistry once, solve it with an implicit method,
check it against SciPy, and recover the rate constants from noisy data.

    python examples/stiff_robertson.py

Three species, rates spanning nine orders of magnitude (k1 = 0.04, k2 = 3e7, k3 = 1e4). An explicit solver would
need ~1e4-1e5 tiny steps and stops at ``max_steps``; an implicit one (``pn.Kvaerno5()``, ``pn.KenCarp4()``; on
Julia also ``pn.Rodas5P()``, ``pn.FBDF()``) takes a few hundred.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 3 if SMOKE else 150
SCALE = np.array([1.0, 3.65e-5, 1.0])   # each species' scale: the state is concentration / SCALE


@pn.dynamics(state=3, params={"k1": 0.04, "k2": 3e7, "k3": 1e4}, constants={"scale": SCALE},
             positive=("k1", "k2", "k3"))              # positive: the flat parameters hold log k
def robertson(t, u, p):
    a, b, c = u[0] * p.scale[0], u[1] * p.scale[1], u[2] * p.scale[2]
    r1, r2, r3 = p.k1 * a, p.k2 * b * b, p.k3 * b * c  # A -> B, 2B -> C + B, B + C -> A + C
    return np.stack([(r3 - r1) / p.scale[0], (r1 - r2 - r3) / p.scale[1], r2 / p.scale[2]])


model = pn.ODEModel(robertson, solver=pn.Kvaerno5(), control=pn.StepControl(rtol=1e-6, atol=1e-7),
                    backend="jax", dtype="float64")
ts = np.concatenate([[0.0], np.logspace(-5, 5, 30)])      # log-spaced saves on [1e-5, 1e5]
y0 = np.array([1.0, 0.0, 0.0]) / SCALE
true_log_k = model.init(seed=0)                            # the declared values, stored as log k

sol = model.solve(true_log_k, y0, ts)
print(f"Kvaerno5: {sol.stats.steps_accepted} steps, {sol.stats.nfe_forward} evaluations (exact, counted in-graph)")
try:
    from scipy.integrate import solve_ivp                  # an independent reference, if SciPy is installed

    def rates(t, y, k1=0.04, k2=3e7, k3=1e4):
        return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2], k2 * y[1] ** 2]

    ref = solve_ivp(rates, (0, ts[-1]), [1.0, 0, 0], method="Radau", t_eval=ts, rtol=1e-12, atol=1e-14).y.T
    print(f"max |pyneuralode - SciPy Radau(1e-12)| = {np.max(np.abs(sol.ys * SCALE - ref)):.2e} (concentrations)")
except ImportError:
    pass

# A PI step-size controller (JAX): Kvaerno5's default integral controller rejects about half of its steps here.
pi = model.replace(control=pn.StepControl(rtol=1e-6, atol=1e-7, pcoeff=0.2, icoeff=0.3)).solve(true_log_k, y0, ts)
print(f"Kvaerno5 + PI controller: {pi.stats.steps_accepted} steps ({pi.stats.steps_rejected} rejected), "
      f"{pi.stats.nfe_forward} evaluations; integral controller: {sol.stats.steps_accepted} steps "
      f"({sol.stats.steps_rejected} rejected), {sol.stats.nfe_forward} evaluations")

# The exact in-graph count costs ~3% of a stiff solve on JAX; count_evaluations=False leaves it out: the same
# steps and values, nfe_forward None (not counted, never estimated).
fast = model.replace(solver=pn.Kvaerno5(count_evaluations=False)).solve(true_log_k, y0, ts)
print(f"Kvaerno5(count_evaluations=False): {fast.stats.steps_accepted} steps, nfe_forward {fast.stats.nfe_forward}, "
      f"same values: {np.array_equal(fast.ys, sol.ys)}")

try:                                                       # an explicit solver on a stiff problem fails fast
    pn.ODEModel(robertson, solver=pn.Dopri5(), control=pn.StepControl(max_steps=1000), backend="jax",
                dtype="float64").solve(true_log_k, y0, ts)
except pn.MaxStepsError as err:
    print("Dopri5:", str(err).split(":")[0])

# Recover log k from 1%-noisy data, starting half a decade (in e-folds) away from the truth.
rng = np.random.default_rng(0)
data = sol.ys * (1 + 0.01 * rng.standard_normal(sol.ys.shape))
trainer = pn.Trainer(model, optimizer=pn.Adam(lr=0.05), loss=pn.MSE)
trainer.init(true_log_k + np.array([0.5, -0.5, 0.5]))
for it in range(1, ITERS + 1):
    info = trainer.step(y0, ts, data)
    if it % 25 == 0 or it == ITERS:
        err = np.max(np.abs(trainer.params - true_log_k))
        print(f"iter {it:3d}  loss {info.loss:.3e}  max |log k error| {err:.4f}")
print("fitted k:", np.exp(trainer.params), " true k:", np.exp(true_log_k))
