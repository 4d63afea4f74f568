"""The toy problems of augmented neural ODEs (Dupont, Doucet & Teh 2019, §4), numpy only.

- ``A_1`` (``g_1d``): on the line, ``-1 -> 1`` and ``1 -> -1``. A neural ODE's flow preserves order on the line, so
  it cannot represent this map at all: its best is to send both points to 0.
- ``A_2`` (concentric spheres in 2-D): class 0 inside radius ``r1``, class 1 in the annulus ``r2 <= |x| <= r3``.
  Dupont et al. use ``r1 = 0.5``, ``r2 = 1``, ``r3 = 1.5`` with twice as many outer points as inner ones.
"""

from __future__ import annotations

import numpy as np

from .._errors import SpecError


def anode_a1(*, dtype="float64") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the two points ``x = [[-1], [1]]`` and their targets ``y = [[1], [-1]]``."""
    x = np.array([[-1.0], [1.0]], dtype=dtype)
    return x, -x


def anode_a2(n: int, seed: int, *, r1: float = 0.5, r2: float = 1.0, r3: float = 1.5,
             dtype="float64") -> tuple[np.ndarray, np.ndarray]:
    """``(x, labels)``: ``n`` points of the 2-D annulus problem, a third inside ``r1`` (label 0) and two thirds
    with radius in ``[r2, r3]`` (label 1), directions uniform, radii uniform in each range (Dupont et al.'s
    ``ConcentricSphere``), shuffled; seeded ``numpy.random.default_rng(seed)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 3:
        raise SpecError(f"anode_a2 needs n >= 3 points, got {n!r}.")
    if not 0 < r1 < r2 < r3:
        raise SpecError(f"anode_a2 radii must satisfy 0 < r1 < r2 < r3, got {r1}, {r2}, {r3}.")
    rng = np.random.default_rng(seed)
    inner = n // 3
    labels = np.concatenate([np.zeros(inner, np.int64), np.ones(n - inner, np.int64)])
    radius = np.where(labels == 0, rng.uniform(0.0, r1, n), rng.uniform(r2, r3, n))
    angle = rng.uniform(0.0, 2 * np.pi, n)
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    order = rng.permutation(n)
    return x[order].astype(dtype), labels[order]
