"""How every backend tells a blow-up, a stiff problem and a plain step limit apart while an adaptive solve runs.

One rule, applied to every attempted step (accepted or rejected) of an adaptive solve, on every backend: the
JAX backend runs it inside diffrax's step-size controller, torch in torchdiffeq's step callbacks (with
:class:`StepWatch` below), Julia in OrdinaryDiffEq's per-step ``unstable_check`` (``julia/src/solve.jl``).
For a step of size ``h`` from time ``t`` with state ``y``, in a solve towards ``t_end`` that has attempted ``n``
steps (this one included) of at most ``max_steps``:

- **blow-up** when ``h <= eps * max(|t|, |t_end|)``, ``eps`` the machine epsilon of the model's dtype: the step
  size has underflowed to what the arithmetic can resolve. Together with a state that became NaN or infinite it
  is reported as :class:`pyneuralode.NonFiniteError` (a finite-time singularity, or ``y' = 1000 y`` overflowing):
  more steps cannot help, so it is never a ``MaxStepsError``.
- **stiff** when, for ``PATIENCE`` consecutive steps, the step was *starved* — ``STARVATION * h * (max_steps -
  n) < |t_end - t|``, i.e. at that step size the rest of the interval needs more than ``STARVATION`` (two) times
  the steps that are left — while the state stayed bounded (``max|y| <= GROWTH * (max|y| at the start of the run
  + atol)``). An explicit solver on a stiff problem shows exactly this: its steps collapse to the stability
  limit, orders of magnitude below the interval, and stay there while the solution barely moves. (Hairer's DOPRI5 code also waits for consecutive
  positive tests — 15 of its eigenvalue estimate ``h|λ| > 3.25`` — and OrdinaryDiffEq's auto-switching algorithms
  for ``maxstiffstep`` of them; this test needs no stage values, so every backend can apply it, at the price of
  more patience.) The solve stops there with a :class:`pyneuralode.MaxStepsError` that comes early and names the
  stiff solvers, instead of spending all ``max_steps`` first. A growing state is not stiff: a blow-up in progress
  keeps stepping until it underflows (the same end as OrdinaryDiffEq's "dt was forced below floating point
  epsilon").

The automatic first step (Hairer's rule) is never smaller than ``FIRST_STEP_MARGIN`` times the underflow
threshold at the start, ``eps * max(|t0|, |t_end|)``: for a first-order method on a problem with a large second
derivative, Hairer's rule can propose a step below what the arithmetic resolves (1.6e-13 for implicit Euler on
Robertson's kinetics over [0, 1e5], where the threshold is 2.2e-11), which would read as a blow-up before the solve
has begun. OrdinaryDiffEq clamps its initial step the same way (``ode_determine_initdt`` returns at least
``nextfloat(dtmin)``); the margin lets the first step be rejected twice before the rule could fire.

Raising ``max_steps`` relaxes the stiff test (more steps are left), so a user who really wants the long solve can
always have it. The factor ``STARVATION`` keeps a solve that will finish from being stopped: a step size that
varies along the solution (a forced pendulum at rtol 1e-9: 3961 steps in all, taking smaller steps in some phases
than on average) made ``h * (max_steps - n) < |t_end - t|`` hold for 200 steps in a row near the end of a budget
the solve would have kept (``max_steps=4096``). It cannot tell a stiff stall from a span that is merely too long
for ``max_steps`` (a harmonic oscillator at rtol 1e-8 over [0, 600] needs ~8000 steps of 4096): both are
projected to fail, and stopping early is right for both, so the message names both causes and their remedies. A
larger factor would leave the too-long solve to run out its steps but delays a stiff diagnosis in proportion:
with ``max_steps=100000``, ``y' = diag(-1, -1e4) y`` on [0, 100] needs ~3e5 Dopri5 steps, starved by a factor
of three, so a factor of ten would stop it only after ~70 000 steps instead of 200.

A solve that waits for an event (``model.solve_event``) is not watched for stalls: its ``t_end`` is a bound it
usually never reaches, so "too few steps left to reach it" says nothing about stiffness (a generous bound such as
``t1 = 1e6`` tripped the test after 200 ordinary steps). Its end may also be infinite; the underflow threshold
then uses ``|t|`` alone (:func:`time_scale`).
"""

from __future__ import annotations

import math

PATIENCE = 200
"""Consecutive starved steps with a bounded state before a solve is declared stiff."""
GROWTH = 10.0
"""How much ``max|y|`` may grow over a starved run and still count as bounded."""
STARVATION = 2.0
"""A step is starved when at its size the rest of the interval needs more than this many times the steps left."""

FIRST_STEP_MARGIN = 100.0
"""The automatic first step is at least this many times the underflow threshold ``eps * max(|t0|, |t_end|)``."""

EPS = {"float32": 2.0**-23, "float64": 2.0**-52}
"""Machine epsilon of each model dtype (``numpy.finfo(dtype).eps``) for the underflow test."""


def time_scale(*times: float) -> float:
    """``max |t|`` over the finite ``times`` (0 if none): the scale of the round-off in a time, where an event
    solve's end may be infinite."""
    return max((abs(float(t)) for t in times if math.isfinite(t)), default=0.0)


class StepWatch:
    """The rule above in plain Python, fed one attempted step at a time (the torch backend's callbacks).

    ``check(t, h, ymax)`` returns ``None`` while all is well, else ``"blow_up"`` or ``"stiff"``; ``ymax()``
    returns ``max|y|`` and is called only on starved steps.
    """

    def __init__(self, *, t_end: float, max_steps: int, atol: float, dtype: str, stalls: bool = True):
        self.t_end = float(t_end)
        self.stalls = stalls  # False: the blow-up test only (an event solve, whose end is a bound)
        self.max_steps = max_steps
        self.atol = atol
        self.eps = EPS[dtype]
        self.steps = 0
        self.run = 0
        self.ref = 0.0

    def check(self, t: float, h: float, ymax) -> str | None:
        self.steps += 1
        h = abs(h)
        if not h > self.eps * time_scale(t, self.t_end):
            return "blow_up"
        if self.stalls and STARVATION * h * (self.max_steps - self.steps) < abs(self.t_end - t):
            size = ymax()
            if self.run == 0:
                self.ref = size
            self.run += 1
            if self.run >= PATIENCE and math.isfinite(size) and size <= GROWTH * (self.ref + self.atol):
                return "stiff"
        else:
            self.run = 0
        return None
