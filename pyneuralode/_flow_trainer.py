"""``FlowTrainer``: train a :class:`pyneuralode.CNF` with each step run natively by its backend.

Parameters and optimiser state stay in the backend's arrays between steps (optax state on JAX, with one
jit-compiled step; ``torch.optim`` on torch); numpy appears only at the edges (a batch and its noise in, the
loss and counts out). Hutchinson noise is drawn by the caller or, if omitted, from the flow's generator.
"""

from __future__ import annotations

import dataclasses


from ._errors import SpecError
from ._nll import NLL
from ._optim import AbstractOptimizer, optimizer_mistake
from ._solution import Stats
from .train._resume import NativeTrainerState
from ._validate import check_params
from ._options import checked_options


@dataclasses.dataclass(frozen=True)
class FlowStepInfo:
    """One step's loss (before the update), its parts, and its evaluation counts."""

    loss: float
    nll: float
    kinetic: float
    jacobian: float
    stats: Stats


_TRAINERS = {"jax": "pyneuralode.backends.jax._cnf_train:JaxFlowTrainer",
             "torch": "pyneuralode.backends.torch._cnf_train:TorchFlowTrainer"}


class FlowTrainer(NativeTrainerState):
    """Train ``cnf`` with ``optimizer`` (``pn.Adam(...)`` etc.) on ``loss`` (``pn.NLL(...)``, default plain NLL)."""

    def __init__(self, cnf, *, optimizer: AbstractOptimizer, loss: NLL | None = None, devices=None):
        import importlib

        if not isinstance(optimizer, AbstractOptimizer):
            raise SpecError(f"optimizer must be pn.Adam(...), pn.RMSprop(...) or pn.SGD(...), "
                            f"{optimizer_mistake(optimizer)}")
        if optimizer.needs_value_fn:
            raise SpecError(f"optimizer must be pn.Adam(...), pn.RMSprop(...) or pn.SGD(...), got {optimizer!r} "
                            "(a line-search optimiser such as pn.LBFGS needs a deterministic full-batch loss; "
                            "it is available in pn.Trainer).")
        loss = NLL() if loss is None else loss
        if not isinstance(loss, NLL):
            raise SpecError(f"loss must be pn.NLL(...), got {loss!r}.")
        if cnf.backend not in _TRAINERS:
            from ._errors import NotSupportedError
            raise NotSupportedError(f"FlowTrainer has no native training loop for backend {cnf.backend!r} yet: use "
                                    f"backend={' or '.join(map(repr, _TRAINERS))} (the canonical parameters carry "
                                    "over), or loop over cnf.value_and_grad(...) with your own update.")
        self.cnf, self.optimizer, self.loss = cnf, optimizer, loss
        module_name, cls_name = _TRAINERS[cnf.backend].split(":")
        self._impl = getattr(importlib.import_module(module_name), cls_name)(cnf.program, optimizer, loss,
                                                                            devices=devices)
        self.steps_done = 0

    def init(self, params) -> None:
        """Start from the canonical flat ``params`` with a fresh optimiser state."""
        self._impl.init(check_params(params, self.cnf.num_params, self.cnf.dtype))
        self.steps_done = 0
        self._started()

    @checked_options
    def step(self, x, *, noise=None) -> FlowStepInfo:
        """One optimisation step on the batch ``x`` (``(N, D)``); ``noise`` is Hutchinson's ``ε`` (optional).

        A step that raises leaves the parameters and the optimiser state exactly as they were."""
        self._require_started()
        x = self.cnf._x(x)
        eps = self.cnf._noise(noise, x)
        info = self._impl.step(x, eps)
        self.steps_done += 1
        return info
