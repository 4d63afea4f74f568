"""The gradient of a loss with respect to the save times ``ts``, the same formula on every backend.

For ``L(y(t_0), ..., y(t_n))`` with ``y(t_0) = y0`` and ``y' = f(t, y)``, moving a save time ``t_i`` moves the
saved state along the solution, and moving ``t_0`` moves the start of every trajectory:

    dL/dt_i = <∂L/∂y_i, f(t_i, y_i)>                              (i >= 1)
    dL/dt_0 = <∂L/∂y_0, f(t_0, y_0)> - <dL/dy0, f(t_0, y_0)>

where ``∂L/∂y_i`` is the loss's own derivative in the saved state and ``dL/dy0`` is the total gradient with
respect to the initial state (what ``value_and_grad`` returns as ``grad_y0``). These are the derivatives of the
exact flow evaluated on the computed solution — what torchdiffeq's ``odeint_adjoint`` returns for ``t`` and what
SciMLSensitivity's adjoints give for ``tspan`` — so every backend and every adjoint gives the same numbers from the
same ``ys`` and ``grad_y0``. Finite differences of an adaptive solve agree with them to about the solver
tolerance (the steps move with the times).

Each backend supplies two pieces (:class:`pyneuralode.backends._base.AbstractProgram`): ``loss_cotangent`` and
``field_along``; the contraction is here, in NumPy.
"""

from __future__ import annotations

import numpy as np


def save_time_gradients(program, params, ts, ys, grad_y0, loss, *, batched: bool) -> np.ndarray:
    """``dL/dts`` of each trajectory, shape ``(len(ts), batch)`` (sum over the batch for shared times).

    ``ys`` and ``grad_y0`` are the program's, in the caller's shape (unbatched when ``batched`` is false).
    """
    cotangent = program.loss_cotangent(ys, loss)
    if not batched:
        ys, cotangent, grad_y0 = ys[:, None], cotangent[:, None], grad_y0[None]
    rates = program.field_along(params, ts, ys)
    state_axes = tuple(range(2, ys.ndim))
    per_trajectory = np.sum(cotangent * rates, axis=state_axes)
    per_trajectory[0] -= np.sum(grad_y0 * rates[0], axis=tuple(a - 1 for a in state_axes))
    return per_trajectory
