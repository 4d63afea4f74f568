"""What a solve or a gradient returns: plain numpy arrays plus exact evaluation counts."""

from __future__ import annotations

import dataclasses

import numpy as np


NOT_COUNTED = -1
"""What a compiled solve returns for a count it did not take (an implicit solver with ``count_evaluations=False``);
:func:`counted` reads it as ``None``."""


def counted(value) -> int | None:
    """A count read back from a backend as an ``int``, or ``None`` where it was not taken (:data:`NOT_COUNTED`)."""
    value = int(round(float(value)))
    return None if value == NOT_COUNTED else value


@dataclasses.dataclass(frozen=True)
class Stats:
    """Counts of one call, identical in meaning on every backend (exact counts, not estimates).

    - ``nfe_forward``: vector-field evaluations of the forward solve (initial-step selection included).
    - ``nfe_backward``: evaluations in the backward pass — one per evaluation of the augmented adjoint dynamics
      (BacksolveAdjoint) or one per vector-field VJP (discretise-then-optimise adjoints). 0 for a plain solve.
    - ``steps_accepted``, ``steps_rejected``: the forward solver's steps.
    - ``backward_steps_accepted``, ``backward_steps_rejected``: the backward solve's steps (BacksolveAdjoint).

    Counts are exact for what each backend executes, so two backends can differ where their libraries do
    different work for the same steps (documented in the README: diffrax re-evaluates the first stage after a
    rejected step and differentiates rejected steps). Implicit solvers on JAX (``Kvaerno*``, ``KenCarp*``,
    ``ImplicitEuler``) count the forward solve's evaluations exactly (Newton iterations and Jacobian
    linearisations, accepted and rejected steps) inside the compiled solve, unless the solver is given
    ``count_evaluations=False`` (then ``nfe_forward`` is ``None``); their ``nfe_backward`` is ``None`` (not counted)
    for discretise-then-optimise adjoints, whose VJPs run inside diffrax's implicit differentiation.
    """

    nfe_forward: int | None = 0
    nfe_backward: int | None = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    backward_steps_accepted: int = 0
    backward_steps_rejected: int = 0

    @property
    def steps(self) -> int:
        """Forward steps attempted (accepted + rejected)."""
        return self.steps_accepted + self.steps_rejected

    def forward_row(self) -> tuple[int, int, int]:
        """``(nfe_forward, steps_accepted, steps_rejected)`` as an ensemble's per-member arrays hold them
        (:data:`NOT_COUNTED` for an evaluation count that was not taken)."""
        nfe = NOT_COUNTED if self.nfe_forward is None else self.nfe_forward
        return nfe, self.steps_accepted, self.steps_rejected

    def to_dict(self) -> dict[str, int]:
        """The counts as a plain ``dict`` (JSON-ready)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Solution:
    """The states at the requested times: ``ys`` of shape ``(len(ts), *y0.shape)``."""

    ts: np.ndarray
    ys: np.ndarray
    stats: Stats


@dataclasses.dataclass(frozen=True)
class ValueAndGrad:
    """A loss and its gradients: ``grad_params`` in the canonical flat layout, ``grad_y0`` shaped like ``y0``;
    ``grad_ts`` shaped like ``ts`` when asked for (``value_and_grad(..., grad_ts=True)``), else ``None``."""

    value: float
    grad_params: np.ndarray
    grad_y0: np.ndarray
    stats: Stats
    ys: np.ndarray | None = None
    grad_ts: np.ndarray | None = None
