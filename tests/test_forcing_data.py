"""Forcing from data: ``np.interp(t, times, values)`` inside ``pn.dynamics``, on every backend.

``y' = interp(t)`` integrates to the trapezoid sums of the data exactly; stepping onto the data times
(``StepControl(step_ts=times)``) removes the rejected steps at the kinks; a forcing whose values are a declared
parameter is learned with gradients that match finite differences; bad tables are refused naming the fix.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

from helpers import model

TIMES = np.array([0.0, 0.3, 0.7, 1.2, 2.0])
VALUES = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
TS = np.linspace(0.0, 2.0, 9)


@pn.dynamics(state=1, params={"gain": 1.0})
def driven(t, u, p):
    return p.gain * np.interp(t, TIMES, VALUES) + 0.0 * u


@pn.dynamics(state=2, params={"k": 0.7, "forcing": VALUES})
def learned(t, u, p):
    """A damped oscillator pushed by a forcing whose values are learned."""
    return np.stack([u[1], -p.k * u[0] - 0.1 * u[1] + np.interp(t, TIMES, p.forcing)])


def exact_integral(ts):
    """∫_0^t interp(s) ds: the trapezoid sums of the table, exact for a piecewise-linear function."""
    fine = np.union1d(TIMES, ts)
    values = np.interp(fine, TIMES, VALUES)
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(fine) * (values[1:] + values[:-1]) / 2)])
    return np.interp(ts, fine, cumulative)


def test_integral_of_the_data_is_exact_and_stepping_onto_the_data_times_saves_rejections(backend):
    on_knots = model(driven, backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-10, step_ts=TIMES))
    blind = model(driven, backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-10))
    params = on_knots.init(0)
    sol, other = on_knots.solve(params, np.array([0.5]), TS), blind.solve(params, np.array([0.5]), TS)
    np.testing.assert_allclose(sol.ys[:, 0], 0.5 + exact_integral(TS), rtol=0, atol=1e-12)
    assert 1e-10 < np.abs(other.ys[:, 0] - 0.5 - exact_integral(TS)).max() < 1e-7  # stepping across the kinks
    assert sol.stats.steps_rejected < other.stats.steps_rejected


def test_learned_forcing_gradients_match_finite_differences(backend):
    m = model(learned, backend=backend, control=pn.StepControl(rtol=1e-11, atol=1e-11, step_ts=TIMES))
    params, y0 = m.init(0), np.array([[1.0, 0.0], [0.2, 0.5]])
    target = np.zeros((len(TS), 2, 2))
    loss = pn.MSE(target)
    res = m.value_and_grad(params, y0, TS, loss=loss)
    fd = np.zeros_like(params)
    for i in range(len(params)):
        e = np.zeros_like(params)
        e[i] = 1e-6
        fd[i] = (loss(m.solve(params + e, y0, TS).ys) - loss(m.solve(params - e, y0, TS).ys)) / 2e-6
    np.testing.assert_allclose(res.grad_params, fd, rtol=1e-6, atol=1e-9)
    assert [s.name for s in m.param_layout()] == ["k", "forcing"]


@pytest.mark.parametrize("xp, fp, match", [
    (TIMES, np.ones((5, 2)), r"1-D xp and fp of the same non-zero length, got shapes \(5,\) and \(5, 2\); "
                             r"interpolate each channel"),
    (TIMES[::-1], VALUES, r"strictly increasing xp \(the data times\)"),
    (np.array([0.0, 1.0, 1.0]), np.ones(3), "drop repeated times"),
])
def test_bad_tables_are_refused_naming_the_fix(xp, fp, match):
    with pytest.raises(pn.SpecError, match=match):
        pn.dynamics(lambda t, u, p: np.interp(t, xp, fp) * u, state=1)


def test_periodic_interpolation_is_refused():
    with pytest.raises(pn.SpecError, match=r"np.interp\(..., period=...\) is not supported"):
        pn.dynamics(lambda t, u, p: np.interp(t, TIMES, VALUES, period=2.0) * u, state=1)


# ---------------------------------------------------------------------- smooth forcing: pn.Spline
DATA_T = np.linspace(0.0, 2.0, 9)
DATA = np.stack([np.sin(3 * DATA_T), np.exp(-DATA_T)], axis=1)   # two channels


def _interpolants():
    interpolate = pytest.importorskip("scipy.interpolate")
    return {"cubic": interpolate.CubicSpline(DATA_T, DATA),
            "cubic_natural": interpolate.CubicSpline(DATA_T, DATA[:, 0], bc_type="natural"),
            "pchip": interpolate.PchipInterpolator(DATA_T, DATA),
            "akima": interpolate.Akima1DInterpolator(DATA_T, DATA[:, 1], extrapolate=True),
            "bspline": interpolate.make_interp_spline(DATA_T, DATA, k=3),
            "linear_bspline": interpolate.make_interp_spline(DATA_T, DATA[:, 0], k=1)}


@pytest.mark.parametrize("name", ["cubic", "cubic_natural", "pchip", "akima", "bspline", "linear_bspline"])
def test_spline_equals_scipys_evaluation_inside_and_beyond_the_data(name):
    interpolant = _interpolants()[name]
    spline = pn.Spline(interpolant)
    t = np.concatenate([np.linspace(-0.5, 2.5, 97), DATA_T])   # the breakpoints themselves, and extrapolation
    np.testing.assert_allclose(np.array([spline(s) for s in t]), interpolant(t), rtol=0, atol=1e-13)
    rate = spline.derivative()   # and its derivative, as SciPy's (inside the data, where it is defined alike)
    inside = np.linspace(0.01, 1.99, 41)
    np.testing.assert_allclose(np.array([rate(s) for s in inside]), interpolant.derivative()(inside), rtol=0,
                               atol=1e-12)


@pytest.fixture(scope="module")
def spline_field():
    spline = pn.Spline(_interpolants()["cubic"])

    @pn.dynamics(state=2, params={"k": np.array([0.7, 1.3])})
    def spline_driven(t, u, p):
        return -p.k * u + spline(t) * np.stack([1.0, u[0]])
    return spline_driven


def test_spline_forced_field_on_every_backend(backend, spline_field):
    """The compiled field equals the NumPy reference (SciPy's values) and its gradients central differences, at
    times inside the data, on a breakpoint and beyond the last one."""
    from helpers import assert_field_matches_reference, unavailable_reason
    if unavailable_reason(backend):
        pytest.skip(unavailable_reason(backend))
    params = np.array([0.7, 1.3])
    u = np.array([[0.3, -0.4], [1.1, 0.2]])
    r = np.array([[0.5, -1.0], [2.0, 0.25]])
    for t in (0.37, DATA_T[3], 2.4):
        assert_field_matches_reference(backend, spline_field, params, t, u, r)


def test_spline_refusals():
    interpolate = pytest.importorskip("scipy.interpolate")
    with pytest.raises(pn.SpecError, match="pn.Spline takes a SciPy piecewise polynomial"):
        pn.Spline(np.sin)
    with pytest.raises(pn.SpecError, match=r"returns NaN outside its data instead: build it with extrapolate=True"):
        pn.Spline(interpolate.Akima1DInterpolator(DATA_T, DATA[:, 0]))
    spline = pn.Spline(interpolate.CubicSpline(DATA_T, DATA[:, 0]))
    with pytest.raises(pn.SpecError, match=r"pn.Spline takes one time \(a scalar\), got shape \(2,\)"):
        pn.dynamics(lambda t, u, p: spline(u), state=2)
    state_table = pn.dynamics(lambda t, u, p: np.stack([spline(u[0]), spline(u[1])]), state=2)  # entries: fine
    np.testing.assert_allclose(state_table.evaluate(np.zeros(0), 0.0, np.array([0.4, 1.7])),
                               interpolate.CubicSpline(DATA_T, DATA[:, 0])([0.4, 1.7]), atol=1e-13)
