"""``pn.LBFGS`` on the host, for a backend that offers ``value_and_grad`` only (Julia).

One call of :func:`lbfgs_step` is one L-BFGS iteration (Nocedal & Wright, *Numerical Optimization*, 2nd ed.):

1. the search direction ``d = -H g`` from the two-loop recursion (Alg. 7.4) over the last ``memory_size`` curvature
   pairs ``(s, y)``, with the initial inverse Hessian ``H₀ = γ I``, ``γ = sᵀy / yᵀy`` of the newest pair (eq. 7.20).
   Without pairs (the first iteration, or after a reset) ``d = -g · min(1, 1/‖g‖₁)``, torch's first step: a unit
   step along the raw gradient could throw an ODE solve far out of its domain;
2. SciPy's strong-Wolfe line search (``scipy.optimize.line_search``: Alg. 3.5/3.6, ``c1 = 1e-4``, ``c2 = 0.9``),
   trying the unit step first, with every trial one more loss-and-gradient evaluation on the same batch and at most
   ``max_linesearch_steps`` trials (SciPy's own bracketing and zoom limits are 10 each; the bound here is enforced
   by counting). A trial whose solve fails (:class:`pyneuralode.SolveError`: too many steps, a blow-up) counts as an
   infinite loss, so the search backs off, as optax's line search does with a non-finite value;
3. the new pair ``s = α d``, ``y = g(x + α d) − g(x)``, kept when ``sᵀy > 1e-10`` (torch's rule; the curvature
   condition that keeps ``H`` positive definite).

When no step satisfies the Wolfe conditions within the trials (near the minimum, where rounding hides the
decrease, or when the direction is poor), the iteration moves to the best trial that lowered the loss, if any, and
discards the curvature pairs so that the next iteration restarts from a scaled gradient step.

Only NumPy runs here; SciPy is needed for the line search (pyneuralode's core depends on NumPy alone).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np

from .._errors import BackendUnavailable, SolveError, non_finite_error

CURVATURE_MIN = 1e-10
"""A pair ``(s, y)`` is kept only when ``sᵀy`` exceeds this (``torch.optim.LBFGS``'s threshold)."""


def require_scipy() -> None:
    """Raise :class:`pyneuralode.BackendUnavailable` (with the install command) when SciPy cannot be imported."""
    if importlib.util.find_spec("scipy") is None:
        raise BackendUnavailable("pn.LBFGS on backend 'julia' runs its line search with SciPy "
                                 "(scipy.optimize.line_search), which is not installed: pip install scipy "
                                 "(or pip install 'pyneuralode[julia]').")


def new_state(n: int, memory_size: int) -> dict[str, np.ndarray]:
    """An empty L-BFGS memory for ``n`` parameters: ``s``/``y`` of shape ``(memory_size, n)`` (oldest pair first,
    rows ``[memory_size - pairs:]`` in use) and the number of ``pairs`` held."""
    return {"s": np.zeros((memory_size, n)), "y": np.zeros((memory_size, n)), "pairs": np.array(0)}


def two_loop(grad: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``H g`` for the L-BFGS inverse-Hessian approximation of the pairs ``s[i], y[i]`` (oldest first, at least
    one): Nocedal & Wright Alg. 7.4 with ``H₀ = (sᵀy / yᵀy) I`` from the newest pair."""
    q = np.array(grad, dtype=np.float64)
    rho = 1.0 / np.einsum("ij,ij->i", y, s)
    alpha = np.zeros(len(s))
    for i in reversed(range(len(s))):  # newest to oldest
        alpha[i] = rho[i] * (s[i] @ q)
        q -= alpha[i] * y[i]
    r = (s[-1] @ y[-1]) / (y[-1] @ y[-1]) * q
    for i in range(len(s)):  # oldest to newest
        beta = rho[i] * (y[i] @ r)
        r += s[i] * (alpha[i] - beta)
    return r


def first_direction(grad: np.ndarray) -> np.ndarray:
    """The direction without curvature pairs: ``-g · min(1, 1/‖g‖₁)`` (``torch.optim.LBFGS``'s first step)."""
    return -grad * min(1.0, 1.0 / float(np.sum(np.abs(grad))))


class _TooManyTrials(Exception):
    """Raised inside the line search when its budget of trials is spent."""


class _Trials:
    """The loss and its gradient as two functions of the parameters, for ``scipy.optimize.line_search``, which asks
    for them separately and at the same points: each new point costs ONE ``value_and_grad`` (cached by point)."""

    def __init__(self, value_and_grad, limit: int):
        self.value_and_grad, self.limit = value_and_grad, limit
        self.points: list[tuple[np.ndarray, float, np.ndarray]] = []

    def _at(self, x: np.ndarray, *, force: bool = False) -> tuple[float, np.ndarray]:
        for point, value, grad in self.points:
            if np.array_equal(point, x):
                return value, grad
        if len(self.points) >= self.limit and not force:
            raise _TooManyTrials
        try:
            value, grad = self.value_and_grad(x)
            value, grad = float(value), np.asarray(grad, dtype=np.float64)
            if not (np.isfinite(value) and np.all(np.isfinite(grad))):
                value = np.inf
        except SolveError:  # a trial too far for the solver: infinitely bad, the search backs off
            value, grad = np.inf, np.full(x.shape, np.nan)
        self.points.append((np.array(x), value, grad))
        return value, grad

    def value(self, x):
        return self._at(x)[0]

    def grad(self, x):
        return self._at(x)[1]


def lbfgs_step(value_and_grad, params: np.ndarray, value: float, grad: np.ndarray, state: dict, *,
               memory_size: int, max_linesearch_steps: int) -> tuple[np.ndarray, dict, int]:
    """One L-BFGS iteration from ``params`` where the loss is ``value`` with gradient ``grad``.

    ``value_and_grad(x) -> (value, grad)`` evaluates the loss at other parameters (float64 vectors) on the same
    batch. Returns ``(new_params, new_state, trials)``: ``trials`` is the number of line-search evaluations. The
    inputs are not modified, so a caller that discards the result (an exception) keeps its old state.
    """
    from scipy.optimize import line_search

    x = np.asarray(params, dtype=np.float64)
    g = np.asarray(grad, dtype=np.float64)
    if not (np.isfinite(value) and np.all(np.isfinite(g))):
        raise non_finite_error("loss or its gradient")
    s, y, pairs = state["s"], state["y"], int(state["pairs"])
    if not np.any(g):  # a stationary point: nothing to do
        return x, state, 0
    d = -two_loop(g, s[len(s) - pairs:], y[len(y) - pairs:]) if pairs else first_direction(g)
    slope = float(g @ d)
    if not (np.isfinite(slope) and slope < 0):  # rounding made H lose positive definiteness: restart
        pairs, d = 0, first_direction(g)
        slope = float(g @ d)
    trials = _Trials(value_and_grad, max_linesearch_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LineSearchWarning when no Wolfe point is found: handled below
        try:
            alpha, *_ = line_search(trials.value, trials.grad, x, d, gfk=g, old_fval=float(value), c1=1e-4,
                                    c2=0.9, maxiter=max_linesearch_steps)
        except _TooManyTrials:
            alpha = None
    if alpha is not None and np.isfinite(alpha) and alpha > 0:
        new_x = x + alpha * d
        _, new_g = trials._at(new_x, force=True)  # evaluated by the search's Wolfe test
        step, change = new_x - x, new_g - g
        new_s, new_y = s, y
        if step @ change > CURVATURE_MIN:
            new_s = np.concatenate([s[1:], step[None]])
            new_y = np.concatenate([y[1:], change[None]])
            pairs = min(pairs + 1, memory_size)
        return new_x, {"s": new_s, "y": new_y, "pairs": np.array(pairs)}, len(trials.points)
    # No Wolfe point: the best trial that lowered the loss (if any), and a fresh start for the next iteration.
    best = min(trials.points, key=lambda p: p[1], default=None)
    new_x = best[0] if best is not None and best[1] < value else x
    return new_x, new_state(len(x), memory_size), len(trials.points)
