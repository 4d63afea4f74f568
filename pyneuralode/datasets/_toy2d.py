"""2-D toy densities for continuous normalizing flows, generated in numpy from a seed.

The definitions follow FFJORD's ``lib/toy_data.py`` (``inf_train_gen``) — same shapes, scales and noise
levels — with scikit-learn's ``make_moons`` / ``make_circles`` / ``make_swiss_roll`` written out in numpy
(no sklearn).
The random streams differ from FFJORD's (``numpy.random.default_rng(seed)`` here), the distributions do not.
One deviation: FFJORD's pinwheel returns ``5 * (n // 5)`` points; here every dataset returns exactly ``n``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._errors import SpecError
from .._validate import check_dtype
from .._options import checked_options


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """sklearn ``make_moons(n, noise=0.1)``, then ``* 2 + (-1, -0.2)`` (FFJORD)."""
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1),
                        np.stack([1.0 - np.cos(t_in), 0.5 - np.sin(t_in)], 1)])
    x = x[rng.permutation(n)] + rng.normal(scale=0.1, size=(n, 2))
    return x * 2.0 + np.array([-1.0, -0.2])


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    """sklearn ``make_circles(n, factor=0.5, noise=0.08)``, then ``* 3`` (FFJORD): radii 3 and 1.5."""
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0.0, 2 * np.pi, n_in, endpoint=False)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1),
                        0.5 * np.stack([np.cos(t_in), np.sin(t_in)], 1)])
    x = x[rng.permutation(n)] + rng.normal(scale=0.08, size=(n, 2))
    return x * 3.0


EIGHT_GAUSSIAN_CENTERS = 4.0 * np.array(
    [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)], dtype=float)
EIGHT_GAUSSIAN_CENTERS[4:] /= np.sqrt(2.0)
"""The centres of ``8gaussians`` before FFJORD's final division by 1.414: radius 4, every 45 degrees."""


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """Eight isotropic Gaussians (std 0.5) on a circle of radius 4, all divided by 1.414 (FFJORD)."""
    centers = EIGHT_GAUSSIAN_CENTERS[rng.integers(0, 8, size=n)]
    return (rng.normal(scale=0.5, size=(n, 2)) + centers) / 1.414


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    """Five spiral arms (radial std 0.3, tangential std 0.1, rate 0.25), scaled by 2 (FFJORD)."""
    num_classes, rate = 5, 0.25
    rads = np.linspace(0.0, 2 * np.pi, num_classes, endpoint=False)
    features = rng.normal(size=(n, 2)) * np.array([0.3, 0.1])
    features[:, 0] += 1.0
    labels = np.arange(n) % num_classes
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
    rotations = np.reshape(rotations.T, (-1, 2, 2))
    return 2.0 * rng.permutation(np.einsum("ti,tij->tj", features, rotations))


def _swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    """sklearn ``make_swiss_roll(n, noise=1.0)`` projected on its (x, z) plane, divided by 5 (FFJORD)."""
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) + rng.normal(size=(n, 2))
    return x / 5.0


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform on the 8 dark squares of a 4x4 checkerboard covering [-4, 4]^2 (FFJORD)."""
    x1 = rng.uniform(size=n) * 4.0 - 2.0
    x2 = rng.uniform(size=n) - 2.0 * rng.integers(0, 2, size=n) + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2.0


TOY_2D: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": _moons,
    "circles": _circles,
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "swissroll": _swissroll,
    "checkerboard": _checkerboard,
}
TOY_2D_NAMES = tuple(TOY_2D)
"""The densities :func:`pyneuralode.datasets.toy_2d` draws from (FFJORD's toy sets)."""


@checked_options
def toy_2d(name: str, n: int, seed: int, *, dtype="float64") -> np.ndarray:
    """``n`` samples of a 2-D toy density, as FFJORD's ``inf_train_gen(name, batch_size=n)``.

    **Arguments:**
    - ``name``: one of ``moons``, ``circles``, ``8gaussians``, ``pinwheel``, ``swissroll``, ``checkerboard``.
    - ``n``: number of points (at least 1).
    - ``seed``: non-negative integer; the same seed gives the same points.
    - ``dtype``: ``"float64"`` (default) or ``"float32"``.

    **Returns:** array of shape ``(n, 2)``.
    """
    if not isinstance(name, str) or name not in TOY_2D:
        raise SpecError(f"Unknown 2-D dataset {name!r}: choose one of {', '.join(TOY_2D_NAMES)}.")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpecError(f"n must be a positive integer number of points, got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}.")
    dtype = check_dtype(dtype)
    points = TOY_2D[name](int(n), np.random.default_rng(int(seed)))
    return np.ascontiguousarray(points, dtype=dtype)
