"""Smooth forcing from data (`pn.Spline`) and running until equilibrium (`pn.steady_state_event`, `t1=np.inf`).

    python examples/forcing_and_equilibrium.py

1. A damped oscillator driven by a measured record (41 samples). The record enters the field as a SciPy cubic
   spline wrapped in `pn.Spline`, or linearly through `np.interp`. The spline is smooth, so the solver takes fewer
   steps than it does across `np.interp`'s kinks. The two forcings agree to within the data's interpolation error.
2. A chemical relaxation with species on different scales, one absolute tolerance per species
   (`StepControl(atol=(...))`), solved with `t1=np.inf` until it reaches its steady state. The time of that and
   its derivative with respect to the rate are checked against the closed form.
"""

import os

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
T_END = 4.0 if SMOKE else 10.0

# 1. forcing from data
times = np.linspace(0.0, 10.0, 41)
record = np.sin(times) + 0.3 * np.sin(3.1 * times)
drive = pn.Spline(CubicSpline(times, record))


@pn.dynamics(state=2, params={"k": 0.7})
def spline_driven(t, u, p):
    return np.stack([u[1], -p.k * u[0] - 0.1 * u[1] + drive(t)])


@pn.dynamics(state=2, params={"k": 0.7})
def interp_driven(t, u, p):
    return np.stack([u[1], -p.k * u[0] - 0.1 * u[1] + np.interp(t, times, record)])


control = pn.StepControl(rtol=1e-8, atol=1e-8)
ts = np.linspace(0.0, T_END, 11)
results = {}
for name, field in (("cubic spline", spline_driven), ("np.interp", interp_driven)):
    model = pn.ODEModel(field, control=control, backend="jax")
    results[name] = model.solve(model.init(0), np.array([1.0, 0.0]), ts)
    stats = results[name].stats
    print(f"{name:13s}: {stats.steps_accepted} steps ({stats.steps_rejected} rejected), "
          f"{stats.nfe_forward} evaluations; y(T) = {results[name].ys[-1]}")
gap = np.max(np.abs(results["cubic spline"].ys - results["np.interp"].ys))
print(f"largest difference between the two forcings' solutions: {gap:.2e} (the interpolants differ by up to "
      f"{np.max(np.abs(drive(0.37) - np.interp(0.37, times, record))):.1e} between samples)")
assert results["cubic spline"].stats.nfe_forward < results["np.interp"].stats.nfe_forward and gap < 0.05


# 2. until equilibrium: A <-> B with B ~ 1e-4 of A (forward rate k, backward 1e4 k), per-species tolerances
@pn.dynamics(state=2, params={"k": 0.5})
def exchange(t, u, p):
    flow = p.k * u[0] - 1e4 * p.k * u[1]
    return np.stack([-flow, flow])


model = pn.ODEModel(exchange, control=pn.StepControl(rtol=1e-10, atol=(1e-12, 1e-16)), backend="jax")
event = pn.steady_state_event(rtol=1e-6, atol=1e-12)
hit = model.solve_event(model.init(0), np.array([1.0, 0.0]), event=event, t0=0.0, t1=np.inf, sensitivities=True)


def steady_time(k):
    """u1 - u1* decays as exp(-(1 + 1e4) k t): the time when rms(f) = 1e-12 + 1e-6 rms(u), by root finding."""
    rate, b_eq = (1 + 1e4) * k, 1.0 / (1 + 1e4)

    def g(t):
        e = np.exp(-rate * t)
        b = b_eq * (1 - e)
        f = rate * b_eq * e
        return np.sqrt(f * f) - (1e-12 + 1e-6 * np.sqrt(((1 - b) ** 2 + b ** 2) / 2))
    return brentq(g, 0.0, 1.0, xtol=1e-15)


exact = steady_time(0.5)
fd = (steady_time(0.5 + 1e-7) - steady_time(0.5 - 1e-7)) / 2e-7
print(f"steady state at t = {hit.t:.8f} (closed form {exact:.8f}), B/A = {hit.y[1] / hit.y[0]:.6e} (1e-4); "
      f"dt/dk = {hit.dt_dparams[0]:.6f} (closed form {fd:.6f}); {hit.stats.steps_accepted} steps")
# the derivative of a tolerance-limited time: 3e-4 relative here, 7e-5 at rtol 1e-12 (it converges)
assert abs(hit.t - exact) < 1e-6 and abs(hit.dt_dparams[0] - fd) < 1e-3 * abs(fd)
