"""A pendulum on a free cart: a mass matrix solved inside the field, and events with directions and booleans.

    python examples/cart_pendulum.py

A cart of mass ``M`` rolls freely on a rail and carries a pendulum (bob mass ``m``, length ``l``, angle ``theta``
from the downward vertical). Lagrange's equations give ``A(q) q'' = F(q, q')`` with a state-dependent mass matrix

    A = [[M + m, m l cos(theta)], [m l cos(theta), m l^2]],   F = [m l theta'^2 sin(theta), -m g l sin(theta)],

so the field solves a 2x2 linear system at every evaluation: ``np.linalg.solve(A, F)``, one graph op on every
backend (``jnp.linalg.solve``, ``torch.linalg.solve``, Julia's ``\\``), differentiable for training. The script

1. checks the solve against physics: the energy ``T + V`` is conserved and the horizontal momentum
   ``(M + m) x' + m l cos(theta) theta'`` too (no force acts along the rail);
2. asks *directed* questions with ``pn.Event(fn, direction=...)``: when does the bob first swing through the
   bottom moving right (``theta`` crosses 0 upwards, ``direction=1``)? and, with two conditions at once, does the
   cart leave ``[-0.3, 0.3]`` on the right or the left first (``hit.which``)?
3. stops on a *boolean* condition (``abs(theta) > 1`` rad), located to the time tolerance by bisection;
4. differentiates an event time with respect to the bob's mass (``sensitivities=True``) and checks it against
   central differences;
5. runs the same field on torch (same steps, the same event time to torchdiffeq's bisection tolerance).
"""

import numpy as np

import pyneuralode as pn

G = 9.81


@pn.dynamics(state=4, params={"m": 0.3, "l": 0.5}, constants={"M": 1.0, "g": G}, positive=("m", "l"))
def cart_pendulum(t, u, p):
    x, theta, v, omega = u[0], u[1], u[2], u[3]
    c, s = np.cos(theta), np.sin(theta)
    mass = np.stack([np.stack([p.M + p.m, p.m * p.l * c]), np.stack([p.m * p.l * c, p.m * p.l ** 2])])
    force = np.stack([p.m * p.l * omega ** 2 * s, -p.m * p.g * p.l * s])
    accel = np.linalg.solve(mass, force)                 # A(q) q'' = F(q, q')
    return np.concatenate([np.stack([v, omega]), accel])


def energy_and_momentum(m, l, u):
    x, theta, v, omega = u[..., 0], u[..., 1], u[..., 2], u[..., 3]
    kinetic = 0.5 * (1.0 + m) * v ** 2 + m * l * v * omega * np.cos(theta) + 0.5 * m * l ** 2 * omega ** 2
    return kinetic - m * G * l * np.cos(theta), (1.0 + m) * v + m * l * np.cos(theta) * omega


control = pn.StepControl(rtol=1e-10, atol=1e-10)
model = pn.ODEModel(cart_pendulum, solver=pn.Dopri5(), control=control, backend="jax")
params = model.init(seed=0)                              # [m, l] (positive: stored as their logarithms)
m, l = 0.3, 0.5
y0 = np.array([0.0, 0.8, 0.4, 0.0])                     # cart pushed right, pendulum released at 0.8 rad

# 1. conservation laws along a solve
ts = np.linspace(0.0, 10.0, 201)
ys = model.solve(params, y0[None], ts).ys[:, 0]
energy, momentum = energy_and_momentum(m, l, ys)
print(f"over 10 s: energy drift {np.ptp(energy):.1e} J, horizontal momentum drift {np.ptp(momentum):.1e} kg m/s")

# 2. directed events
through_bottom = pn.Event(lambda t, u, p: u[1], direction=1)          # theta rising through 0: moving right
first = hit = model.solve_event(params, y0, event=through_bottom, t0=0.0, t1=20.0)
print(f"the bob first swings through the bottom moving right at t = {hit.t:.6f} s "
      f"(theta' = {hit.y[3]:+.4f} rad/s > 0)")
either_way = model.solve_event(params, y0, event=pn.Event(lambda t, u, p: u[1]), t0=0.0, t1=20.0)
print(f"  (without a direction the first crossing is at t = {either_way.t:.6f} s, theta' = {either_way.y[3]:+.4f})")

rail = pn.Event(lambda t, u, p: np.stack([u[0] - 0.3, u[0] + 0.3]), direction=(1, -1))
hit = model.solve_event(params, y0, event=rail, t0=0.0, t1=20.0)
print(f"the cart leaves [-0.3, 0.3] on the {('right', 'left')[hit.which]} at t = {hit.t:.6f} s (x = {hit.y[0]:+.8f})")
assert abs(hit.y[0] - 0.3) < 1e-8 and hit.which == 0

# 3. a boolean condition: stop once the swing exceeds 1 rad either way (located by bisection)
wide = pn.Event(lambda t, u, p: np.abs(u[1]) > 1.0)
hit = model.solve_event(params, np.array([0.0, 0.8, 0.0, 3.0]), event=wide, t0=0.0, t1=20.0)
print(f"a kicked swing passes 1 rad at t = {hit.t:.6f} s (theta = {hit.y[1]:.6f})")
assert hit.occurred and abs(abs(hit.y[1]) - 1.0) < 1e-6

# 4. d(event time)/d(bob mass) against central differences (the mass is stored as its logarithm)
hit = model.solve_event(params, y0, event=through_bottom, t0=0.0, t1=20.0, sensitivities=True)
eps = 1e-5
shifted = [model.solve_event(params + s * eps * np.array([1.0, 0.0]), y0, event=through_bottom, t0=0.0,
                             t1=20.0).t for s in (1, -1)]
fd = (shifted[0] - shifted[1]) / (2 * eps)
print(f"d t_bottom / d log m: {hit.dt_dparams[0]:.8f} (central differences {fd:.8f})")
assert abs(hit.dt_dparams[0] - fd) < 1e-5 * max(1.0, abs(fd))

# 5. the same field and event on torch
try:
    other = model.replace(backend="torch").solve_event(params, y0, event=through_bottom, t0=0.0, t1=20.0)
    print(f"torch: t = {other.t:.6f} s; jax - torch = {first.t - other.t:.1e} s; evaluations "
          f"{first.stats.nfe_forward} vs {other.stats.nfe_forward}")
except pn.BackendUnavailable as err:
    print(f"(torch not installed: {err})")
