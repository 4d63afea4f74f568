"""Robertson's stiff chemical kinetics (Robertson 1966; Hairer & Wanner, *Solving ODEs II*, §IV.1).

Three species, three reactions::

    A       -> B        rate k1 [A]         k1 = 0.04
    B + B   -> C + B    rate k2 [B]^2       k2 = 3e7
    B + C   -> A + C    rate k3 [B][C]      k3 = 1e4

from ``[A, B, C] = [1, 0, 0]``, saved at log-spaced times on ``[1e-5, 1e5]``. The rates span nine orders of
magnitude, so an explicit solver needs steps of ~1e-4 for 1e5 time units (it stops at ``max_steps``).

The state is the concentrations divided by their scales ``SCALE`` (B never exceeds ~3.7e-5): the species-wise
normalisation Kim et al. (2021, "Stiff neural ordinary differential equations") found necessary to learn stiff
kinetics, which also makes an unweighted loss see all three species. The rate constants are ``positive``
parameters, so the flat parameter vector holds ``log k`` — the natural coordinates for rates that differ by 1e9.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._dynamics import Dynamics, dynamics
from ._options import check_options

RATES = (0.04, 3e7, 1e4)
"""The true ``(k1, k2, k3)``."""
Y0 = np.array([1.0, 0.0, 0.0])
"""Initial concentrations ``[A, B, C]``."""
SCALE = np.array([1.0, 3.65e-5, 1.0])
"""Each species' scale (B's maximum is 3.65e-5); the model's state is ``concentration / SCALE``."""
STIFF_HINT = "pn.Kvaerno5(), pn.KenCarp4() (JAX, Julia) or pn.Rodas5P(), pn.FBDF() (Julia)"


def robertson_dynamics(rates=RATES) -> Dynamics:
    """Robertson's kinetics on the scaled state, with trainable positive rates (initial values ``rates``)."""

    def robertson(t, u, p):
        a, b, c = u[0] * p.scale[0], u[1] * p.scale[1], u[2] * p.scale[2]  # concentrations
        r1, r2, r3 = p.k1 * a, p.k2 * b * b, p.k3 * b * c                   # reaction rates
        return np.stack([(r3 - r1) / p.scale[0], (r1 - r2 - r3) / p.scale[1], r2 / p.scale[2]])

    k1, k2, k3 = (float(k) for k in rates)
    return dynamics(robertson, state=3, params={"k1": k1, "k2": k2, "k3": k3}, constants={"scale": SCALE},
                    positive=("k1", "k2", "k3"))


def robertson_times(n: int = 40, *, t1: float = 1e5) -> np.ndarray:
    """``[0, then n log-spaced times on [1e-5, t1]]`` (the solution at ``ts[0] = 0`` is the initial state)."""
    return np.concatenate([[0.0], np.logspace(-5.0, np.log10(t1), n)])


def initial_state() -> np.ndarray:
    """The scaled initial state."""
    return Y0 / SCALE


def log_rates(rates=RATES) -> np.ndarray:
    """The flat parameter vector of ``rates`` (``positive`` parameters are stored as logarithms)."""
    return np.log(np.asarray(rates, dtype=np.float64))


def reference_solution(ts, rates=RATES, *, rtol: float = 1e-12, atol: float = 1e-14) -> np.ndarray:
    """The scaled state at ``ts`` from SciPy's Radau IIA (order 5) with the analytic Jacobian — an independent
    reference (needs ``scipy``)."""
    from scipy.integrate import solve_ivp

    k1, k2, k3 = rates

    def f(t, y):
        return [-k1 * y[0] + k3 * y[1] * y[2], k1 * y[0] - k2 * y[1] ** 2 - k3 * y[1] * y[2], k2 * y[1] ** 2]

    def jac(t, y):
        return [[-k1, k3 * y[2], k3 * y[1]],
                [k1, -2 * k2 * y[1] - k3 * y[2], -k3 * y[1]],
                [0.0, 2 * k2 * y[1], 0.0]]

    ts = np.asarray(ts, dtype=np.float64)
    sol = solve_ivp(f, (ts[0], ts[-1]), Y0, method="Radau", t_eval=ts, rtol=rtol, atol=atol, jac=jac)
    if not sol.success:
        raise RuntimeError(f"SciPy's Radau failed on Robertson: {sol.message}")
    return sol.y.T / SCALE


def noisy_data(ts, *, noise: float = 0.01, seed: int = 0, rates=RATES) -> np.ndarray:
    """The reference solution at ``ts`` with multiplicative Gaussian noise of relative size ``noise``."""
    clean = reference_solution(ts, rates)
    rng = np.random.default_rng(seed)
    return clean * (1.0 + noise * rng.standard_normal(clean.shape))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobertsonConfig:
    """Settings of ``pyneuralode stiff``: recover ``log k`` from noisy data with a stiff solver.

    The fit starts from the true ``log k`` plus ``perturb`` (in each coordinate, alternating sign) and runs Adam
    on the mean squared error of the scaled species.
    """

    backend: str = "jax"
    solver: str = "Kvaerno5"
    iters: int = 200
    lr: float = 0.02
    rtol: float = 1e-6
    atol: float = 1e-7
    points: int = 30
    data_noise: float = 0.01
    perturb: float = 0.5
    seed: int = 0
    eval_every: int = 10

    def __post_init__(self):
        check_options(self)
        check_stiff_solver(self.backend, self.solver)


def check_stiff_solver(backend: str, solver: str) -> None:
    """Refuse, before anything is built, a stiff ``solver`` that ``backend`` does not run, naming the backends
    that run it and the stiff solvers this backend has (as the command's flags)."""
    from .._errors import SpecError
    from .._solvers import STIFF_SOLVERS
    from ..backends._registry import REGISTRY, entry

    have = [s for s in STIFF_SOLVERS if s in entry(backend).solvers]
    if solver in have:
        return
    others = [name for name, e in REGISTRY.items() if solver in e.solvers]
    if not have:
        raise SpecError(f"--backend {backend} has no stiff solver: use --backend "
                        f"{' or '.join(n for n, e in REGISTRY.items() if set(STIFF_SOLVERS) & e.solvers)}.")
    raise SpecError(f"--solver {solver} does not run on --backend {backend}: use --backend {' or '.join(others)}, "
                    f"or a stiff solver that --backend {backend} has: --solver {', '.join(have)}.")
