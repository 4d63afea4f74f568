"""A bouncing ball: events chained bounce after bounce, and gravity and restitution fitted from bounce times.

    python examples/bouncing_ball.py

torchdiffeq's ``examples/bouncing_ball.py`` learns a ball's gravity and restitution through its event times. Here
the same physics: ``x' = v``, ``v' = -g`` between bounces; at each impact (the event ``x = 0``) the velocity flips
and shrinks, ``v -> -e v``. Each flight is one ``model.solve_event``; its sensitivities (``dt_dparams``,
``dt_dy0``, ``dy_dparams``, ``dy_dy0``) chain through the bounces by the chain rule, in NumPy, giving the
derivatives of every bounce time with respect to ``(g, e, h0)``. They are checked against finite differences,
then Gauss-Newton recovers ``g`` and ``e`` from noisy bounce times of a drop from a known height (the times depend
on ``g`` and ``h0`` only through ``h0 / g``, so one of the two must be known). The closed form
(``t1 = sqrt(2 h0 / g)``, then flights of ``2 e^k sqrt(2 h0 / g)``) checks the solves. Last, an event whose
condition changes sign twice within one step is missed, and ``pn.StepControl(dtmax=...)`` finds it.
"""

import os

import numpy as np

import pyneuralode as pn

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
BOUNCES = 3 if SMOKE else 6
ITERS = 1 if SMOKE else 6
LIFT = 1e-9   # each flight starts this far above the floor: an event function must be nonzero where a solve starts


@pn.dynamics(state=2, params={"g": 9.81})
def flight(t, u, p):
    return np.stack([u[1], -p.g])


floor = pn.Event(lambda t, u, p: u[0])
model = pn.ODEModel(flight, solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-10, atol=1e-10), backend="jax")


def bounce_times(theta, bounces=BOUNCES):
    """Bounce times and their Jacobian with respect to ``theta = (g, e, h0)`` (forward-mode chain rule)."""
    g, e, h0 = theta
    state, t = np.array([h0, 0.0]), 0.0
    d_state = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])    # d state / d theta
    d_t = np.zeros(3)                                        # d t / d theta
    times, jac = [], []
    for _ in range(bounces):
        hit = model.solve_event(np.array([g]), state, event=floor, t0=t, t1=t + 60.0, sensitivities=True)
        # The flight is autonomous: its duration depends on the start state and g, not on when it starts.
        d_t = d_t + hit.dt_dparams[0] * np.array([1.0, 0.0, 0.0]) + hit.dt_dy0 @ d_state
        d_landing = np.outer(hit.dy_dparams[:, 0], [1.0, 0.0, 0.0]) + hit.dy_dy0 @ d_state
        t = hit.t
        times.append(t)
        jac.append(d_t)
        # the impact: v -> -e v, and the next flight starts just above the floor
        state = np.array([LIFT, -e * hit.y[1]])
        d_state = np.array([[0.0, 0.0, 0.0], -e * d_landing[1] + np.array([0.0, -hit.y[1], 0.0])])
    return np.array(times), np.array(jac)


def closed_form(theta, bounces=BOUNCES):
    g, e, h0 = theta
    first = np.sqrt(2 * h0 / g)
    flights = 2 * e ** np.arange(1, bounces) * first
    return first + np.concatenate([[0.0], np.cumsum(flights)])


truth = np.array([9.81, 0.8, 2.0])                            # g, restitution, drop height
times, jac = bounce_times(truth)
print("bounce times      ", np.round(times, 6))
print("closed form       ", np.round(closed_form(truth), 6), f"(max difference {np.max(np.abs(times - closed_form(truth))):.1e})")

# the chained sensitivities against central differences of the whole chain
eps = 1e-6
fd = np.stack([(bounce_times(truth + eps * np.eye(3)[k])[0] - bounce_times(truth - eps * np.eye(3)[k])[0])
               / (2 * eps) for k in range(3)], axis=1)
print(f"d(bounce times)/d(g, e, h0): chained vs finite differences, max difference {np.max(np.abs(jac - fd)):.1e}")

# fit g and e to noisy bounce times (1 ms timing noise) by Gauss-Newton, the drop height known
rng = np.random.default_rng(0)
observed = times + 1e-3 * rng.standard_normal(times.size)
theta = np.array([8.0, 0.7, truth[2]])
for it in range(ITERS):
    fitted, jac = bounce_times(theta)
    residual = fitted - observed
    theta[:2] -= np.linalg.lstsq(jac[:, :2], residual, rcond=None)[0]
    print(f"iteration {it + 1}: g {theta[0]:.4f}, e {theta[1]:.5f}, rms residual {np.sqrt(np.mean(residual ** 2)):.2e} s")
print(f"fitted g {theta[0]:.3f} (true 9.81), e {theta[1]:.4f} (true 0.8)")

# Events are found by a change of sign between step ends (as in diffrax and torchdiffeq). Thrown up from the floor
# at 5 m/s (apex 1.274 m at 0.51 s), the ball passes 1.25 m on the way up and again 0.14 s later on the way down;
# one step of the smooth flight strides over both, and the crossing is missed. StepControl(dtmax=...) below the
# time between the crossings finds the first one.
threshold = pn.Event(lambda t, u, p: u[0] - 1.25)
up = np.array([LIFT, 5.0])
first = (5.0 - np.sqrt(25.0 - 2 * 9.81 * (1.25 - LIFT))) / 9.81
for dtmax in (None, 0.05):
    bounded = model.replace(control=pn.StepControl(rtol=1e-10, atol=1e-10, dtmax=dtmax))
    hit = bounded.solve_event(model.init(0), up, event=threshold, t0=0.0, t1=0.9)
    print(f"dtmax={dtmax}: occurred {hit.occurred}, t {hit.t:.6f} (first crossing {first:.6f}), "
          f"{hit.stats.steps_accepted} steps")
