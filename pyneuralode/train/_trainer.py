"""``Trainer``: one training-loop API for an ODEModel, each step run natively by its backend.

The backend keeps parameters and optimiser state in its own arrays between steps (optax on JAX, ``torch.optim``
on torch), so a step costs what a hand-written loop costs; numpy appears only at the edges (batches in, loss and
parameters out). Checkpoints carry the optimiser state, so ``--resume`` continues the exact same run.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._augment import augmented_loss_type, pad_features
from .._errors import SpecError
from .._losses import AbstractLoss, L1
from .._optim import AbstractOptimizer
from .._solution import Stats
from .._validate import check_params, check_state, check_times
from ._resume import NativeTrainerState


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What one training step reports: the loss before the update and the step's evaluation counts."""

    loss: float
    stats: Stats


class Trainer(NativeTrainerState):
    """Train ``model`` with ``optimizer`` on ``loss``; the backend runs the step natively.

    **Arguments:**

    - ``model``: an :class:`pyneuralode.ODEModel`.
    - ``optimizer``: ``pn.Adam(lr=...)``, ``pn.RMSprop(...)`` or ``pn.SGD(...)``.
    - ``loss``: a loss *type*, ``pn.L1`` (default) or ``pn.MSE``; each step passes its target.
    - ``devices``: JAX only — data-parallel training over several devices: a number of devices, a list of
      ``jax.Device`` or a one-axis ``jax.sharding.Mesh``. Each batch is split over them (the batch size must be a
      multiple of the device count), parameters and optimiser state are replicated, and the step is one compiled
      SPMD program. It takes the same solver steps as one device; results differ by reduction order only.
    """

    def __init__(self, model, *, optimizer: AbstractOptimizer, loss: type[AbstractLoss] = L1, devices=None):
        if not isinstance(optimizer, AbstractOptimizer):
            raise SpecError(f"optimizer must be pn.Adam(...), pn.RMSprop(...) or pn.SGD(...), got {optimizer!r}.")
        if not (isinstance(loss, type) and issubclass(loss, AbstractLoss)):
            raise SpecError(f"loss must be a loss type such as pn.L1 or pn.MSE, got {loss!r}.")
        self.model, self.optimizer, self.loss = model, optimizer, loss
        if model.augment:  # the loss sees the data features of the augmented state only (pn.ODEModel(augment=d))
            loss = augmented_loss_type(loss, model.state_shape[0])
        self._impl = model.program.make_trainer(optimizer, loss, devices=devices)
        self.steps_done = 0

    def init(self, params) -> None:
        """Start from the canonical flat ``params`` with a fresh optimiser state."""
        self._impl.init(check_params(params, self.model.num_params, self.model.dtype))
        self.steps_done = 0

    def step(self, y0, ts, target) -> StepInfo:
        """One optimisation step on the batch ``(y0, ts)`` against ``target`` (shape ``(len(ts), *y0.shape)``)."""
        dtype = self.model.dtype
        y0 = check_state(y0, self.model.state_shape, dtype)
        ts = check_times(ts, dtype)
        target = np.asarray(target, dtype=dtype)
        if target.shape != (len(ts), *y0.shape):
            raise SpecError(f"target has shape {target.shape} but the solution has shape {(len(ts), *y0.shape)}.")
        if self.model.augment:
            y0, target = pad_features(y0, self.model.augment), pad_features(target, self.model.augment)
        loss, stats = self._impl.step(y0, ts, target)
        self.steps_done += 1
        return StepInfo(loss, stats)
