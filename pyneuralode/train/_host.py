"""``pn.Trainer``'s step for a backend without a native optimiser: ``value_and_grad`` there, the update here.

The backend (Julia) computes the loss and its gradient in the canonical layout; the optimiser's update rule runs in
NumPy on the host, as PyTorch documents it (``torch.optim.Adam``/``RMSprop``/``SGD``, which optax reproduces with
the arguments pyneuralode passes in ``to_optax``), so a Julia run follows the same rule as a JAX or torch run.
``pn.LBFGS`` runs its iteration here too (:mod:`._host_lbfgs`: the two-loop recursion and SciPy's strong-Wolfe line
search), re-solving through the backend's ``value_and_grad`` at each line-search trial on the step's batch. The
update is computed in full before anything is assigned, so a step that raises changes nothing.
"""

from __future__ import annotations

import numpy as np

from .._errors import NotSupportedError
from .._losses import AbstractLoss
from .._optim import LBFGS, SGD, Adam, AbstractOptimizer, RMSprop
from ._host_lbfgs import lbfgs_step, new_state, require_scipy


def host_update(optimizer: AbstractOptimizer, params: np.ndarray, grad: np.ndarray, state: dict,
                step: int) -> tuple[np.ndarray, dict]:
    """``(new_params, new_state)`` after optimisation step ``step`` (0-based) with gradient ``grad``.

    - Adam: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g²``, ``p -= lr m̂ / (sqrt(v̂) + eps)`` with the bias
      corrections ``m̂ = m / (1 - b1^(step+1))``, ``v̂ = v / (1 - b2^(step+1))``;
    - RMSprop: ``v = alpha v + (1 - alpha) g²``, ``p -= lr g / (sqrt(v) + eps)``;
    - SGD: ``buf = momentum buf + g`` (``buf = g`` on the first step), ``p -= lr buf``;

    with ``lr`` the schedule's rate at ``step`` when ``optimizer.lr`` is a schedule.
    """
    schedule = optimizer.schedule
    lr = schedule(step) if schedule is not None else getattr(optimizer, "lr", None)
    if isinstance(optimizer, Adam):
        m = optimizer.b1 * state.get("m", 0.0) + (1 - optimizer.b1) * grad
        v = optimizer.b2 * state.get("v", 0.0) + (1 - optimizer.b2) * grad * grad
        m_hat = m / (1 - optimizer.b1 ** (step + 1))
        v_hat = v / (1 - optimizer.b2 ** (step + 1))
        return params - lr * m_hat / (np.sqrt(v_hat) + optimizer.eps), {"m": m, "v": v}
    if isinstance(optimizer, RMSprop):
        v = optimizer.alpha * state.get("v", 0.0) + (1 - optimizer.alpha) * grad * grad
        return params - lr * grad / (np.sqrt(v) + optimizer.eps), {"v": v}
    if isinstance(optimizer, SGD):
        buf = grad if "buf" not in state else optimizer.momentum * state["buf"] + grad
        return params - lr * buf, {"buf": buf}
    raise TypeError(f"no host update rule for {type(optimizer).__name__}")


class HostTrainer:
    """Runs :class:`pyneuralode.train.Trainer` steps for a program that offers ``value_and_grad`` only."""

    def __init__(self, program, optimizer: AbstractOptimizer, loss_type):
        if optimizer.needs_value_fn and not isinstance(optimizer, LBFGS):
            raise NotSupportedError(f"{type(optimizer).__name__} needs the loss as a function of the parameters "
                                    "inside the backend, which this backend does not offer: train with it on "
                                    "backend='jax' or 'torch'.")
        if isinstance(optimizer, LBFGS):
            require_scipy()
        self.program, self.optimizer, self.loss_type = program, optimizer, loss_type
        self._params: np.ndarray | None = None
        self._state: dict[str, np.ndarray] = {}
        self._steps = 0

    def _fresh_state(self, n: int) -> dict[str, np.ndarray]:
        # L-BFGS's memory has a fixed shape from the start, so a checkpoint's arrays can be checked against it.
        return new_state(n, self.optimizer.memory_size) if isinstance(self.optimizer, LBFGS) else {}

    def init(self, params: np.ndarray) -> None:
        self._params, self._steps = np.array(params), 0
        self._state = self._fresh_state(self._params.size)

    def step(self, y0, ts, loss):
        """One update; ``loss`` is the step's bound loss (``pn.Trainer`` passes one) or a target for
        ``loss_type``. Returns ``(loss value, stats, evaluations)``: the loss and statistics at the parameters
        before the update, and the number of loss-and-gradient evaluations (1, plus the line-search trials of
        ``pn.LBFGS``)."""
        loss = loss if isinstance(loss, AbstractLoss) else self.loss_type(loss)
        result = self.program.value_and_grad(self._params, y0, ts, loss)
        dtype = self._params.dtype
        if isinstance(self.optimizer, LBFGS):
            def value_and_grad(x):  # a line-search trial: the same batch at other parameters
                trial = self.program.value_and_grad(x.astype(dtype), y0, ts, loss)
                return trial.value, trial.grad_params

            params, state, trials = lbfgs_step(
                value_and_grad, self._params, result.value, result.grad_params, self._state,
                memory_size=self.optimizer.memory_size, max_linesearch_steps=self.optimizer.max_linesearch_steps)
        else:
            params, state = host_update(self.optimizer, self._params, result.grad_params, self._state, self._steps)
            trials = 0
        self._params, self._state, self._steps = params.astype(dtype), state, self._steps + 1
        return result.value, result.stats, 1 + trials

    def params(self) -> np.ndarray:
        return self._params.copy()

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        return {"opt_steps": np.array(self._steps), **{f"opt_{k}": np.asarray(v) for k, v in self._state.items()}}

    def load_optimizer_arrays(self, arrays) -> None:
        self._steps = int(arrays.get("opt_steps", 0))
        self._state = {**self._fresh_state(self._params.size),
                       **{k[len("opt_"):]: np.array(v) for k, v in arrays.items() if k != "opt_steps"}}
