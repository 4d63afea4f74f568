"""What a continuous normalizing flow returns: numpy arrays plus the same exact counts as an ODE solve."""

from __future__ import annotations

import dataclasses

import numpy as np

from ._solution import Stats


@dataclasses.dataclass(frozen=True)
class Density:
    """The log-density of a batch ``x`` (``(N, D)``) and where the flow carried it.

    - ``log_prob``: ``log p(x)``, shape ``(N,)``.
    - ``z``: the base points ``z(t0)``, shape ``(N, D)``.
    - ``delta_logp``: ``log p(x) - log N(z; 0, I)`` = ``-∫_{t0}^{t1} tr(∂f/∂z) dt`` (exact or estimated), ``(N,)``.
    - ``stats``: counts of the augmented solve (one evaluation = one field evaluation plus its trace).
    """

    log_prob: np.ndarray
    z: np.ndarray
    delta_logp: np.ndarray
    stats: Stats


@dataclasses.dataclass(frozen=True)
class FlowValueAndGrad:
    """A flow's loss and its gradients (``grad_params`` in the canonical flat layout, ``grad_x`` like ``x``).

    ``value = nll + kinetic_weight * kinetic + jacobian_weight * jacobian``; ``kinetic`` and ``jacobian`` are the
    batch means of the regularisation integrals (0 when their weight is 0, since they are not solved for).
    """

    value: float
    grad_params: np.ndarray
    grad_x: np.ndarray
    stats: Stats
    nll: float
    kinetic: float = 0.0
    jacobian: float = 0.0
