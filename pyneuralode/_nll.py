"""``NLL``: the loss of a continuous normalizing flow, with optional RNODE/FFJORD regularisation weights."""

from __future__ import annotations

import dataclasses
import math
import numbers

from ._errors import SpecError
from ._options import CheckedOptions


def _weight(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise SpecError(f"NLL {name} must be a finite number >= 0 (0 turns the term off), got {value!r}.")
    return float(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NLL(metaclass=CheckedOptions):
    """Mean negative log-likelihood ``-mean_i log p(x_i)`` of a batch, plus optional regularisers.

    **Arguments (keyword-only):**

    - ``kinetic``: weight of the kinetic energy ``∫ ||f(t, z(t))||² dt`` (RNODE, Finlay et al. 2020).
    - ``jacobian``: weight of the Jacobian Frobenius norm ``∫ ||∂f/∂z||_F² dt`` (RNODE). With
      ``trace="hutchinson"`` it is estimated with the same noise as the trace, ``||εᵀ ∂f/∂z||²`` (unbiased);
      with ``trace="exact"`` it is exact.

    Both integrals run over the flow's interval and are averaged over the batch. A nonzero weight adds the
    integral to the solved state, so the solver's step control also sees it (as in RNODE's code).
    """

    kinetic: float = 0.0
    jacobian: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "kinetic", _weight(self.kinetic, "kinetic"))
        object.__setattr__(self, "jacobian", _weight(self.jacobian, "jacobian"))

    @property
    def regularised(self) -> bool:
        """Whether any regularisation term is on (the solve then carries two extra integrals)."""
        return self.kinetic > 0 or self.jacobian > 0
