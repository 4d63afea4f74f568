"""Map torchdiffeq's failures onto pyneuralode's errors, with the wording every backend shares.

torchdiffeq signals failure with bare assertions (``_impl/rk_common.py``): ``'max_num_steps exceeded'``,
``'underflow in dt'`` and ``'non-finite values in state'``; both of the latter are a blow-up in the
classification every backend shares (:mod:`pyneuralode._stepwatch`), whose step watch usually stops the solve
first (:class:`._nfe.SolveStopped`).
"""

from __future__ import annotations

import contextlib

from ..._errors import BLOW_UP, STIFF, max_steps_error, non_finite_error, solve_failure
from ._nfe import CountingField, SolveStopped, StepLimitExceeded

BACKWARD = "backward (adjoint) solve"


@contextlib.contextmanager
def torchdiffeq_failures(counter: CountingField, *, max_steps: int, where: str = "forward solve", solver=None,
                         backsolve: bool = False):
    """Translate the failures of the torchdiffeq calls inside the block (``where`` names the solve).

    An underflowing step (torchdiffeq's ``'underflow in dt'``) and a non-finite state are one failure, a blow-up
    (see :mod:`pyneuralode._stepwatch`); ``solver``/``backsolve`` tailor the advice.
    """
    advice = dict(solver=solver, backend="torch", backsolve=backsolve)
    try:
        yield
    except StepLimitExceeded:
        raise max_steps_error(max_steps, solver=solver, backend="torch") from None
    except SolveStopped as stop:
        raise solve_failure(STIFF if stop.kind == "stiff" else BLOW_UP, max_steps=max_steps,
                            where=BACKWARD if stop.backward else "forward solve", **advice) from None
    except AssertionError as err:
        message = str(err)
        if "max_num_steps exceeded" in message:
            raise max_steps_error(max_steps, where=where, **advice) from None
        if "non-finite values" in message or "underflow in dt" in message:
            raise non_finite_error("state", where, backend="torch", backsolve=backsolve) from None
        raise
