"""The latent-ODE spirals of Chen et al. (2018) §5 / App. E, as torchdiffeq's ``examples/latent_ode.py``
(``generate_spiral2d``) draws them, numpy only.

Two Archimedean spirals on ``ntotal = 1000`` equally-spaced angles in ``[0, 6π]``: counter-clockwise
``r = a + b θ`` centred at ``(5, 0)`` and clockwise ``r = a + 50 b / (6π + 1 - θ)`` centred at ``(-5, 0)``
(``a = 0``, ``b = 0.3``). Each of the ``n`` series picks one of the two (half clockwise on average, a fair coin) and a
random window of ``times = 100`` consecutive points starting at index ``times ... ntotal - times``; its time axis is
the first ``times`` angles, ``ts = linspace(0, 6π, 1000)[:100]``, shared by every series. Observations add
Gaussian noise ``noise`` (default 0.1, ``generate_spiral2d``'s default).

:func:`subsample` draws each series' irregular observation times: ``k`` of the ``times`` points, sorted.
"""

from __future__ import annotations

import numpy as np

from .._errors import SpecError


def latent_spirals(n: int = 1000, seed: int = 0, *, times: int = 100, noise: float = 0.1, ntotal: int = 1000,
                   dtype="float64"):
    """``(ts, truth, observed, clockwise)``: times ``(times,)``, noise-free ``(n, times, 2)``, noisy ``(n, times, 2)``
    and a boolean ``(n,)``; seeded ``numpy.random.default_rng(seed)``."""
    for value, what in ((n, "n"), (times, "times")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SpecError(f"latent_spirals {what} must be a positive integer, got {value!r}.")
    if ntotal < 3 * times:
        raise SpecError(f"latent_spirals needs ntotal >= 3 * times, got ntotal={ntotal}, times={times}.")
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise SpecError(f"latent_spirals noise must be a number >= 0, got {noise!r}.")
    rng = np.random.default_rng(seed)
    stop, a, b = 6 * np.pi, 0.0, 0.3
    theta = np.linspace(0.0, stop, ntotal)
    z_cw = stop + 1.0 - theta
    r_cw = a + b * 50.0 / z_cw
    cw = np.stack([r_cw * np.cos(z_cw) - 5.0, r_cw * np.sin(z_cw)], axis=1)
    r_cc = a + b * theta
    cc = np.stack([r_cc * np.cos(theta) + 5.0, r_cc * np.sin(theta)], axis=1)
    starts = rng.integers(times, ntotal - times, size=n)   # torchdiffeq: uniform over [nsample, ntotal - nsample)
    clockwise = rng.random(n) <= 0.5
    truth = np.stack([(cw if c else cc)[s:s + times] for s, c in zip(starts, clockwise)])
    observed = truth + noise * rng.standard_normal(truth.shape)
    return theta[:times].astype(dtype), truth.astype(dtype), observed.astype(dtype), clockwise


def subsample(n: int, times: int, k: int, seed: int) -> np.ndarray:
    """Per-series observation indices ``(n, k)``: ``k`` of ``times`` points each, sorted; seeded."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= times:
        raise SpecError(f"subsample k must be an integer in [1, {times}], got {k!r}.")
    rng = np.random.default_rng(seed)
    return np.sort(np.stack([rng.choice(times, k, replace=False) for _ in range(n)]), axis=1)
