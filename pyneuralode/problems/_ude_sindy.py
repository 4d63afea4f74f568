"""Symbolic regression of the learned missing terms with pysindy (optional: ``pip install "pyneuralode[sindy]"``).

The UDE paper's last step: the network ``U`` evaluated along the trajectory is regressed, by sequentially
thresholded least squares (SINDy, Brunton et al. 2016; ``pysindy.STLSQ``), on polynomials in ``x, y`` up to degree
2. If the network learned the true interactions, the result is ``U₁ ≈ −0.9 xy`` and ``U₂ ≈ 0.8 xy``.
"""

from __future__ import annotations

import numpy as np

from .._errors import BackendUnavailable


def require_pysindy():
    """The ``pysindy`` module, or the error naming the install (checked before training, not after it)."""
    try:
        import pysindy
    except ImportError:
        raise BackendUnavailable('--sindy needs pysindy: pip install "pyneuralode[sindy]" (or pip install '
                                 'pysindy).') from None
    return pysindy


def recover_terms(states: np.ndarray, terms: np.ndarray, *, threshold: float = 0.1) -> dict:
    """``{"equations": [...], "features": [...], "coefficients": [[...], [...]]}`` for ``terms ≈ Θ(states) ξ``."""
    ps = require_pysindy()
    model = ps.SINDy(feature_library=ps.PolynomialLibrary(degree=2), optimizer=ps.STLSQ(threshold=threshold))
    model.fit(np.asarray(states), t=1.0, x_dot=np.asarray(terms), feature_names=["x", "y"])
    names = ["U1", "U2"]
    equations = [f"{n} = {' '.join(eq.split())}" for n, eq in zip(names, model.equations(precision=4))]
    return {"equations": equations, "features": list(model.get_feature_names()),
            "coefficients": np.asarray(model.coefficients()).tolist()}
