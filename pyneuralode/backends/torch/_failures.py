"""Map torchdiffeq's failures onto pyneuralode's errors, with the wording every backend shares.

torchdiffeq signals failure with bare assertions (``_impl/rk_common.py``): ``'max_num_steps exceeded'``,
``'underflow in dt'`` and ``'non-finite values in state'``. An underflowing step almost always means the state
blew up (NaN makes the error ratio NaN, the next step NaN, then ``min_step`` = 0), so it is reported as a
non-finite state when the last evaluation was non-finite, and as a stiffness problem otherwise.
"""

from __future__ import annotations

import contextlib

from ..._errors import SolveError, max_steps_error, non_finite_error
from ._nfe import CountingField, StepLimitExceeded

BACKWARD = "backward (adjoint) solve"


@contextlib.contextmanager
def torchdiffeq_failures(counter: CountingField, *, max_steps: int, where: str = "forward solve"):
    """Translate the failures of the torchdiffeq calls inside the block (``where`` names the solve)."""
    try:
        yield
    except StepLimitExceeded:
        raise max_steps_error(max_steps) from None
    except AssertionError as err:
        message = str(err)
        if "max_num_steps exceeded" in message:
            raise max_steps_error(max_steps, where=where) from None
        if "non-finite values" in message or ("underflow in dt" in message and not counter.output_finite()):
            raise non_finite_error() from None
        if "underflow in dt" in message:
            raise SolveError(f"The {where}'s step size underflowed to zero: the solution may blow up in finite "
                             "time, or the problem is stiff; check the dynamics and inputs, shorten the time span, "
                             "or try a stiff solver such as pn.Kvaerno5() on another backend.") from None
        raise
