"""Terminating events on backend "julia", the parts that need no Julia: the Python glue of ``JuliaProgram`` against a
stand-in PyNeuralODEJL (:mod:`test_julia_loss`'s exact linear ODE ``dy/dt = W y``, with ``event_forward`` and
``event_gradient`` following solve.jl's and dynamics.jl's documented returns), compared with the JAX backend on the
same field and event; and the Julia functions the glue calls, exported with the arguments it passes.

The julia-marked tests of :mod:`test_events` run the real thing wherever Julia exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq

import pyneuralode as pn
from pyneuralode._events import _PICK_ENTRY

from helpers import unavailable_reason
from test_julia_loss import StandIn, _Value, expm, stand_in_model

W = np.array([[-0.3, 1.1], [-0.9, -0.2]])
Y0 = np.array([1.0, 0.5])
LEVEL = 0.5
CROSSING = pn.Event(lambda t, u, p: u[0] - LEVEL)


class EventStandIn(StandIn):
    """The stand-in plus events: the first crossing of ``y[0] = LEVEL`` of the exact solution, found by a scan
    and Brent's method (to round-off), and the event function's gradient (``(0, [1, 0], [])``: it reads the
    state only)."""

    def build_dynamics(self, source, sample, nparams, nets, consts, const_shapes, *, dtype, device):
        self._log("build_dynamics", source, tuple(sample), nparams, dtype, device)
        return {"source": source}

    def event_forward(self, field, ev, opts, u0, t0, t1, signs, arm):
        self._log("event_forward", np.asarray(u0).shape, t0, t1, tuple(signs), tuple(arm))
        w, u0 = field["w"], np.asarray(u0, dtype=np.float64)

        def g(t):
            return (expm(w * (t - t0)) @ u0)[0] - LEVEL
        grid = np.linspace(t0, t1, 4001)
        values = np.array([g(t) for t in grid])
        crossed = np.flatnonzero(np.sign(values[1:]) != np.sign(values[0]))
        t = brentq(g, grid[crossed[0]], grid[crossed[0] + 1], xtol=1e-15) if crossed.size else t1
        y = expm(w * (t - t0)) @ u0
        return (t, _Value(y.astype(field["dtype"])), bool(crossed.size), 42, 42, 7, 0, 0, "Success", "")

    def event_gradient(self, ev, y, t):
        self._log("event_gradient", np.asarray(y).shape, t)
        return 0.0, _Value([1.0, 0.0]), _Value(np.zeros(0))


def test_julia_event_glue_matches_jax():
    """The event time, state and sensitivities through JuliaProgram's glue (the core's implicit-function-theorem
    assembly over the stand-in's exact gradients) against the JAX backend's root-find derivatives."""
    if unavailable_reason("jax"):
        pytest.skip(unavailable_reason("jax"))
    stand_in = EventStandIn([_PICK_ENTRY])
    julia = stand_in_model(stand_in, control=pn.StepControl(rtol=1e-10, atol=1e-10))
    jax_model = pn.ODEModel(pn.Linear(2, 2, bias=False), control=pn.StepControl(rtol=1e-10, atol=1e-10),
                            backend="jax")
    params = W.reshape(-1)
    hit = julia.solve_event(params, Y0, event=CROSSING, t0=0.0, t1=5.0, sensitivities=True)
    ref = jax_model.solve_event(params, Y0, event=CROSSING, t0=0.0, t1=5.0, sensitivities=True)
    assert hit.occurred and ref.occurred and abs(hit.t - ref.t) < 1e-9
    np.testing.assert_allclose(hit.y, ref.y, atol=1e-9)
    assert hit.stats.nfe_forward == 42 and hit.stats.steps_accepted == 7 and hit.stats.nfe_backward is None
    for name in ("dt_dparams", "dt_dy0", "dy_dparams", "dy_dy0"):
        np.testing.assert_allclose(getattr(hit, name), getattr(ref, name), rtol=1e-6, atol=1e-8, err_msg=name)
    (source, sample, nparams, dtype, device), = stand_in.calls["build_dynamics"]  # built once, on the CPU
    assert sample == (2,) and nparams == 0 and dtype == "float64" and device == "cpu"
    assert "v1 = u" in source and "v1[1]" in source and "0.5" in source  # u[0] - LEVEL, 1-based
    julia.solve_event(params, Y0, event=CROSSING, t0=0.0, t1=5.0)
    assert len(stand_in.calls["build_dynamics"]) == 1 and len(stand_in.calls["event_forward"]) == 2
    # the combined function's signs (g starts at 0.5 > 0) and no re-arming
    assert stand_in.calls["event_forward"][0][-2:] == ((1.0,), (-np.inf,))


def test_julia_event_glue_without_a_crossing():
    stand_in = EventStandIn([_PICK_ENTRY])
    julia = stand_in_model(stand_in)
    hit = julia.solve_event(W.reshape(-1), Y0, event=CROSSING, t0=0.0, t1=0.1, sensitivities=True)
    assert not hit.occurred and hit.t == 0.1 and np.all(hit.dt_dparams == 0.0)
    np.testing.assert_allclose(hit.y, expm(W * 0.1) @ Y0, rtol=1e-12)
    assert "event_gradient" not in stand_in.calls  # no crossing, no theorem


def test_the_julia_event_functions_are_exported_with_the_arguments_the_glue_passes():
    import pyneuralode.backends.julia._program as glue

    src = Path(glue.__file__).resolve().parents[2] / "julia" / "src"
    package = (src / "PyNeuralODEJL.jl").read_text()
    exports = set(re.findall(r"[\w!]+", " ".join(re.findall(r"^export (.*(?:\n {4}.*)*)", package, re.M))))
    assert {"event_forward", "event_gradient", "event_value"} <= exports
    solve_jl, dynamics_jl = (src / "solve.jl").read_text(), (src / "dynamics.jl").read_text()
    forward = re.search(r"^function event_forward\((.*?)\)\n", solve_jl, re.M | re.S).group(1)
    assert [a.split("::")[0].strip() for a in forward.split(",")] == ["f", "ev", "opts", "u0", "t0", "t1", "signs",
                                                                      "arm"]
    gradient = re.search(r"^function event_gradient\((.*?)\)\n", dynamics_jl, re.M).group(1)
    assert [a.split("::")[0].strip() for a in gradient.split(",")] == ["ev", "u", "t"]
    # the ten values event_forward returns are the ten the glue unpacks
    returned = re.search(r"return \(t, y, occurred, nfe, _stats\(sol\)\.\.\., status, join", solve_jl)
    assert returned, "event_forward's return changed: update JuliaProgram.locate_event"
