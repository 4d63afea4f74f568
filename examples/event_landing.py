"""Terminating events: when does a falling body land? Fit its air drag from measured landing times.

    python examples/event_landing.py

A body dropped from height ``h`` falls with quadratic air drag, ``dv/dt = -g - c v |v|``, and the solve stops
where ``pn.Event`` says: at the first time the height ``x`` crosses zero. ``model.solve_event`` returns that time,
the state there and, with ``sensitivities=True``, their derivatives with respect to the parameters and the initial
state (the implicit function theorem on the solve). The script checks the drag-free case against the closed form
``t* = sqrt(2 h / g)``, then recovers the drag coefficient ``c`` from noisy landing times of drops from five
heights by Gauss-Newton on ``t*(c)`` (the five drops and their derivatives as one ``model.solve_event_ensemble``
with ``sensitivities=True``), spreads the landing time over an uncertain drag (one vectorised solve of all the
samples), and solves the fitted model on the other backend to show they agree.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
ITERS = 2 if SMOKE else 6
G = 9.81


@pn.dynamics(state=2, params={"drag": 0.05}, constants={"g": G}, positive=("drag",))
def falling(t, u, p):
    x, v = u[0], u[1]
    return np.stack([v, -p.g - p.drag * v * np.abs(v)])


ground = pn.Event(lambda t, u, p: u[0])                        # height crosses zero
control = pn.StepControl(rtol=1e-9, atol=1e-9)
model = pn.ODEModel(falling, solver=pn.Dopri5(), control=control, backend="jax")


def landing(log_drag, height, sensitivities=False):
    return model.solve_event(np.array([log_drag]), np.array([height, 0.0]), event=ground, t0=0.0, t1=60.0,
                             sensitivities=sensitivities)


# 1. No drag (c -> 0): the closed form
hit = landing(np.log(1e-12), 20.0)
print(f"drag-free drop from 20 m: t* = {hit.t:.10f} s (exact {np.sqrt(40.0 / G):.10f}), "
      f"v* = {hit.y[1]:.6f} m/s, {hit.stats.nfe_forward} evaluations")

# 2. Landing times measured from five heights (true drag 0.02 / m, 10 ms timing noise)
heights = np.array([5.0, 10.0, 20.0, 40.0, 80.0])
true_log_drag = np.log(0.02)
rng = np.random.default_rng(0)
observed = np.array([landing(true_log_drag, h).t for h in heights]) + 0.01 * rng.standard_normal(heights.size)

log_drag = np.log(0.1)                                         # a poor first guess
for it in range(ITERS):
    # the five drops as one ensemble: one vectorised solve, each member with its own derivatives
    drops = model.solve_event_ensemble(np.array([log_drag]), np.stack([heights, np.zeros_like(heights)], axis=1),
                                       event=ground, t0=0.0, t1=60.0, sensitivities=True)
    residual = drops.t - observed
    jac = drops.dt_dparams[:, 0]                               # d t* / d log(drag), one per drop
    log_drag -= float(jac @ residual / (jac @ jac))            # Gauss-Newton on one parameter
    print(f"iteration {it + 1}: drag {np.exp(log_drag):.5f} / m, rms residual {np.sqrt(np.mean(residual ** 2)):.4f} s")
print(f"fitted drag {np.exp(log_drag):.4f} / m (true 0.02)")

# 3. The landing time under an uncertain drag: 200 samples of it, one vectorised solve of all the members
samples = (log_drag + 0.2 * rng.standard_normal(20 if SMOKE else 200))[:, None]   # log-normal drag, 20% spread
spread = model.solve_event_ensemble(samples, np.array([40.0, 0.0]), event=ground, t0=0.0, t1=60.0)
assert spread.ok.all() and spread.occurred.all()
print(f"40 m drop, drag known to +-20%: landing at {np.mean(spread.t):.3f} s +- {np.std(spread.t):.3f} s "
      f"(5-95%: {np.percentile(spread.t, 5):.3f} - {np.percentile(spread.t, 95):.3f} s, {spread.size} members)")

# 4. The same event on torch: same steps, the same landing time to torchdiffeq's bisection tolerance (atol in time)
try:
    other = model.replace(backend="torch")
    a = landing(log_drag, 40.0)
    b = other.solve_event(np.array([log_drag]), np.array([40.0, 0.0]), event=ground, t0=0.0, t1=60.0)
    print(f"40 m drop: jax t* = {a.t:.10f} s, torch t* = {b.t:.10f} s; evaluations {a.stats.nfe_forward} vs "
          f"{b.stats.nfe_forward}")
except pn.BackendUnavailable as err:
    print(f"(torch not installed: {err})")
