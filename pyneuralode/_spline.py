"""``Spline``: smooth forcing from data inside a traced function (a piecewise polynomial of ``t``).

Measured inputs — a drug dose, a temperature record, a control signal — enter a field as an interpolant of their
samples. ``np.interp`` gives the linear one. A cubic spline, PCHIP or Akima interpolant (what diffrax's
``CubicInterpolation`` and DataInterpolations.jl give, and what SciPy users already build) is a piecewise
polynomial, and SciPy's objects cannot run on traced values. ``Spline`` holds the same breakpoints and
coefficients and evaluates them with ordinary NumPy operations that the tracer records. Every backend therefore
compiles it with the ops it already has, and ``pn.grad`` differentiates it.

On interval ``k`` (``x[k] <= t < x[k+1]``) the value is ``sum_m c[m, k] (t - x[k])^(order - m)``, SciPy's
``PPoly`` convention. Below the first breakpoint and above the last, the end polynomials extrapolate, as SciPy's
do by default. All intervals are evaluated at once and the one that holds ``t`` is selected by a mask, so the
graph has a fixed dozen ops whatever the number of samples.
"""

from __future__ import annotations

import numpy as np

from ._errors import SpecError


class _Pieces:
    """Breakpoints ``x`` and coefficients ``c`` (SciPy's ``PPoly`` attributes)."""

    def __init__(self, x, c):
        self.x, self.c = x, c


def _from_bspline(spline) -> _Pieces:
    """A SciPy ``BSpline``'s piecewise-polynomial form (``PPoly.from_spline``, one channel at a time: it takes
    one-dimensional coefficients only)."""
    try:
        from scipy.interpolate import BSpline, PPoly
    except ImportError:  # pragma: no cover - a BSpline comes from SciPy
        raise SpecError("pn.Spline of a BSpline needs SciPy to convert it (PPoly.from_spline).") from None
    coefficients = np.asarray(spline.c)
    flat = coefficients.reshape(coefficients.shape[0], -1)
    pieces = [PPoly.from_spline(BSpline(spline.t, flat[:, j], spline.k)) for j in range(flat.shape[1])]
    c = np.stack([piece.c for piece in pieces], axis=-1).reshape(*pieces[0].c.shape, *coefficients.shape[1:])
    return _Pieces(pieces[0].x, c)


class Spline:
    """A piecewise polynomial of time, callable inside ``pn.dynamics`` (and on NumPy values, where it equals
    SciPy's evaluation).

    ```python
    from scipy.interpolate import CubicSpline

    dose = pn.Spline(CubicSpline(t_data, dose_data))          # also PchipInterpolator, Akima1DInterpolator,
                                                               # make_interp_spline(...) or scipy's PPoly
    @pn.dynamics(state=1, params={"k": 0.3})
    def pk(t, u, p):
        return -p.k * u + dose(t)
    ```

    **Arguments:** ``interpolant``, a SciPy piecewise polynomial (any object with breakpoints ``x`` and
    coefficients ``c`` of shape ``(order + 1, intervals, *channels)``) or a SciPy ``BSpline`` (converted with
    ``PPoly.from_spline``). Data with several channels (samples of shape ``(n, C)``) give a value of shape ``(C,)``.
    The samples are constants of the field (no gradient flows to them); for forcing values that are learned, use
    ``np.interp(t, t_data, p.values)``.
    """

    def __init__(self, interpolant):
        if hasattr(interpolant, "t") and hasattr(interpolant, "k") and not hasattr(interpolant, "x"):
            interpolant = _from_bspline(interpolant)
        x, c = getattr(interpolant, "x", None), getattr(interpolant, "c", None)
        try:
            x, c = np.asarray(x, dtype=np.float64), np.asarray(c, dtype=np.float64)
        except (TypeError, ValueError):
            x = c = None
        if x is None or c is None or x.ndim != 1 or x.size < 2 or c.ndim < 2 or c.shape[1] != x.size - 1:
            raise SpecError(f"pn.Spline takes a SciPy piecewise polynomial (CubicSpline, PchipInterpolator, "
                            f"Akima1DInterpolator, PPoly) or a BSpline, got {type(interpolant).__name__}.")
        if x.size >= 2 and c.ndim >= 2 and c.shape[1] == x.size - 1 and np.all(np.diff(x) >= 0):
            keep = np.diff(x) > 0  # a BSpline's repeated end knots give empty intervals: drop them
            x, c = np.append(x[:-1][keep], x[1:][keep][-1:]), c[:, keep]
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(c))) or x.size < 2 or not np.all(np.diff(x) > 0):
            raise SpecError("pn.Spline needs finite coefficients and strictly increasing breakpoints.")
        if getattr(interpolant, "extrapolate", True) not in (True, None):
            raise SpecError(f"pn.Spline extrapolates with the end polynomials (SciPy's extrapolate=True); this "
                            f"{type(interpolant).__name__} returns NaN outside its data instead: build it with "
                            "extrapolate=True, e.g. Akima1DInterpolator(t, y, extrapolate=True).")
        self.breakpoints, self.coefficients = x, c
        channels = c.shape[2:]
        pad = (slice(None),) + (None,) * len(channels)  # the interval axis first, broadcast over the channels
        big = np.finfo(np.float64).max  # open ends: the first and last polynomials extrapolate
        self._start = x[:-1][pad]
        self._lower = np.concatenate([[-big], x[1:-1]])[pad]
        self._upper = np.concatenate([x[1:-1], [big]])[pad]

    @property
    def order(self) -> int:
        """The polynomials' degree (3 for a cubic spline)."""
        return self.coefficients.shape[0] - 1

    def __call__(self, t):
        if np.ndim(t) != 0:
            raise SpecError(f"pn.Spline takes one time (a scalar), got shape {np.shape(t)}: evaluate entries one by "
                            "one and join them with np.stack([...]).")
        dt = t - self._start
        value = self.coefficients[0]
        for coefficient in self.coefficients[1:]:  # Horner's rule
            value = value * dt + coefficient
        inside = (t >= self._lower) & (t < self._upper)  # exactly one interval holds t
        return np.sum(np.where(inside, value, 0.0), axis=0)

    def derivative(self) -> Spline:
        """The spline of ``d/dt`` of this one (one degree lower), for a forcing's rate inside a field as diffrax's
        ``interpolation.derivative(t)`` gives it; equal to SciPy's ``interpolant.derivative()``."""
        if self.order == 0:
            return Spline(_Pieces(self.breakpoints, np.zeros_like(self.coefficients)))
        powers = np.arange(self.order, 0, -1).reshape(-1, *(1,) * (self.coefficients.ndim - 1))
        return Spline(_Pieces(self.breakpoints, self.coefficients[:-1] * powers))

    def __repr__(self) -> str:
        channels = int(np.prod(self.coefficients.shape[2:]))
        return f"Spline(order={self.order}, breakpoints={self.breakpoints.size}, channels={channels})"
