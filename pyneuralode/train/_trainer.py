"""``Trainer``: one training-loop API for an ODEModel, each step run natively by its backend.

The backend keeps parameters and optimiser state in its own arrays between steps (optax on JAX, ``torch.optim``
on torch), so a step costs what a hand-written loop costs; numpy appears only at the edges (batches in, loss and
parameters out). Checkpoints carry the optimiser state, so ``--resume`` continues the exact same run.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._augment import augmented_loss, pad_features
from .._errors import SpecError
from .._custom_loss import LossFunction, loss_family_mistake
from .._losses import AbstractLoss, L1
from .._optim import AbstractOptimizer, optimizer_mistake
from .._solution import Stats
from .._validate import check_params, check_state, check_times
from ._resume import NativeTrainerState


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """What one training step reports: the loss before the update, the statistics of the solve and gradient at
    the parameters before the update, and how many loss-and-gradient evaluations the step made (1, or more for a
    line-search optimiser such as ``pn.LBFGS``)."""

    loss: float
    stats: Stats
    evaluations: int = 1


def _check_loss_family(loss) -> None:
    """Raise unless ``loss`` makes losses from a step's arrays and has a static ``evaluate`` kernel."""
    if not (isinstance(loss, type) and issubclass(loss, AbstractLoss)) and not isinstance(loss, LossFunction):
        raise SpecError("loss must be a loss type such as pn.L1 or pn.MSE, or a function made with pn.loss, "
                        f"{loss_family_mistake(loss)}")


class Trainer(NativeTrainerState):
    """Train ``model`` with ``optimizer`` on ``loss``; the backend runs the step natively.

    **Arguments:**

    - ``model``: an :class:`pyneuralode.ODEModel`.
    - ``optimizer``: ``pn.Adam(lr=...)``, ``pn.RMSprop(...)``, ``pn.SGD(...)`` (``lr`` a number or a schedule such
      as ``pn.ExponentialDecay(...)``), or ``pn.LBFGS()`` for full-batch quasi-Newton steps.
    - ``loss``: a loss *type*, ``pn.L1`` (default) or ``pn.MSE``, or a function made with :func:`pyneuralode.loss`;
      each step passes its target (and, for the built-ins, optional ``mask=``/``weights=``; for your own loss, the
      extra arrays its function takes).
    - ``devices``: JAX only — data-parallel training over several devices: a number of devices, a list of
      ``jax.Device`` or a one-axis ``jax.sharding.Mesh``. Each batch is split over them (the batch size must be a
      multiple of the device count), parameters and optimiser state are replicated, and the step is one compiled
      SPMD program. It takes the same solver steps as one device; results differ by reduction order only.

    Start from ``Adam`` and finish with ``LBFGS`` (the universal-differential-equation recipe) by making a second
    trainer initialised from ``first.params``.
    """

    def __init__(self, model, *, optimizer: AbstractOptimizer, loss=L1, devices=None):
        if not isinstance(optimizer, AbstractOptimizer):
            raise SpecError("optimizer must be pn.Adam(...), pn.RMSprop(...), pn.SGD(...) or pn.LBFGS(...), "
                            f"{optimizer_mistake(optimizer)}")
        _check_loss_family(loss)
        self.model, self.optimizer, self.loss = model, optimizer, loss
        self._impl = model.program.make_trainer(optimizer, loss, devices=devices)
        self.steps_done = 0

    def init(self, params) -> None:
        """Start from the canonical flat ``params`` with a fresh optimiser state."""
        self._impl.init(check_params(params, self.model.num_params, self.model.dtype))
        self.steps_done = 0
        self._started()

    def step(self, y0, ts, target=None, **data) -> StepInfo:
        """One optimisation step on the batch ``(y0, ts)`` against ``target`` (shape ``(len(ts), *y0.shape)``).

        ``ts`` may also hold per-sample times, shape ``(batch, T)`` with ``target`` of shape ``(T, batch,
        *state)``: the step solves once at the union of the times and weighs each sample's own points only (see
        :meth:`pyneuralode.ODEModel.value_and_grad`).

        ``data``: the loss's further arrays — ``mask=``/``weights=`` for ``pn.L1``/``pn.MSE``, or the named
        arguments of your own :func:`pyneuralode.loss` function. A step that raises (bad input, a failed solve, a
        NaN or infinite loss or gradient) leaves the parameters and the optimiser state exactly as they were."""
        self._require_started()
        if target is None:  # e.g. step(y0, ts, loss=pn.MSE(data)), the form of model.value_and_grad
            given = isinstance(data.get("loss"), AbstractLoss)
            raise SpecError("Trainer.step takes the data to fit: trainer.step(y0, ts, target); "
                            + ("the loss kind belongs to the trainer: pn.Trainer(model, optimizer=..., "
                               "loss=pn.MSE), then trainer.step(y0, ts, data)." if given else
                               "target must have shape (len(ts), *y0.shape)."))
        dtype = self.model.dtype
        loss = self.loss(target, **data)
        if np.ndim(ts) == 2:
            y0, ts, union, index = self.model._per_sample_grid(y0, ts)
            loss.check_shape((ts.shape[1], *y0.shape))
            ts, loss = union, loss.on_union(index, union.size)
        y0 = check_state(y0, self.model.state_shape, dtype)
        ts = check_times(ts, dtype)
        loss.check_shape((len(ts), *y0.shape))
        if self.model.augment:  # the loss sees the data features of the augmented state only
            y0, loss = pad_features(y0, self.model.augment), augmented_loss(loss, self.model.augment)
        loss_value, stats, *evaluations = self._impl.step(y0, ts, loss)  # line-search trainers count evaluations
        self.steps_done += 1
        return StepInfo(loss_value, stats, *evaluations)
