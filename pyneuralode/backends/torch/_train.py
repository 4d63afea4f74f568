"""Native torch training: weights live in the compiled module, ``torch.optim`` updates them in place.

A step that fails changes nothing: every check (solves, finite loss and gradient) runs before
``optimizer.step()``, so a raised error leaves weights and optimiser state as they were.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ..._errors import SolveError, non_finite_error, trainer_not_initialised
from ._compile import flat_values, load_flat
from ._optim import TorchOptimizer


FAILED_TRIAL_PENALTY = 1e10
"""A line-search trial whose solve fails scores ``loss0 + FAILED_TRIAL_PENALTY * (1 + |loss0|)``."""


def check_finite(value: torch.Tensor, grads) -> None:
    """Raise the shared NaN/inf error unless the loss and every gradient are finite (one host sync)."""
    flags = [torch.isfinite(value).all(), *(torch.isfinite(g).all() for g in grads if g is not None)]
    if not bool(torch.stack(flags).all()):
        raise non_finite_error("loss or its gradient")


class FieldWeights:
    """What a trainer whose weights live in ``self.program.field`` and whose optimiser is ``self.optimizer`` (a
    :class:`._optim.TorchOptimizer`) hands out: the weights and the optimiser state, and the state back."""

    def params(self) -> np.ndarray:
        """The current weights as the canonical flat vector (a numpy copy)."""
        return flat_values(self.program.field)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        """The optimiser's state as named arrays (for a checkpoint)."""
        return self.optimizer.state_arrays()

    def load_optimizer_arrays(self, arrays) -> None:
        """Restore the optimiser's state from :meth:`optimizer_arrays`' arrays."""
        self.optimizer.load_state_arrays(arrays)


class TorchTrainer(FieldWeights):
    """Runs :class:`pyneuralode.train.Trainer` steps for a :class:`TorchProgram`.

    First-order optimisers get one gradient per step; ``pn.LBFGS`` gets a closure that re-solves on the same
    batch for each line-search trial (``torch.optim.LBFGS``'s interface)."""

    def __init__(self, program, optimizer, loss_type):
        self.program, self.optimizer_spec, self.kernel = program, optimizer, loss_type.evaluate
        self.optimizer = None

    def init(self, params: np.ndarray) -> None:
        load_flat(self.program.field, params)
        self.optimizer = TorchOptimizer(self.optimizer_spec, self.program.field.flat_parameters())

    def _evaluate(self, y0, ts, data):
        program = self.program
        value, grads, _, _, stats = program.value_and_grads(program._tensor(y0), ts, data, self.kernel)
        check_finite(value, grads)  # before the update: a failed step changes nothing
        for param, grad in zip(program.field.flat_parameters(), grads):
            param.grad = torch.zeros_like(param) if grad is None else grad
        return value, stats

    def step(self, y0, ts, loss):
        if self.optimizer is None:
            raise trainer_not_initialised()
        data = self.program.loss_tensors(loss)
        if not self.optimizer_spec.needs_value_fn:
            value, stats = self._evaluate(y0, ts, data)
            self.optimizer.step()
            return float(value.detach()), stats, 1
        first, trials = [], [0]

        def closure():
            trials[0] += 1
            try:
                value, stats = self._evaluate(y0, ts, data)
            except SolveError:
                if not first:  # at the current weights: nothing to back off from
                    raise
                # A trial the line search proposed whose solve failed (too many steps, a blow-up): a loss far
                # above the first one with a zero gradient fails the sufficient-decrease test, and torch's zoom
                # then backs off to a tenth of the step (its cubic interpolation would turn +inf into NaN). optax
                # treats a non-finite trial as failed too, and Julia's host line search an infinite loss.
                for param in self.program.field.flat_parameters():
                    param.grad = torch.zeros_like(param)
                start = first[0][0].detach()
                return start + FAILED_TRIAL_PENALTY * (1 + start.abs())
            first.append((value, stats))
            return value

        # The line search moves the weights before each trial; a trial that fails (a solve that cannot finish, a
        # NaN) must not leave them there: restore weights and optimiser state, then raise.
        params_before = flat_values(self.program.field)
        state_before = copy.deepcopy(self.optimizer.optimizer.state_dict())
        try:
            self.optimizer.step(closure)
        except BaseException:
            load_flat(self.program.field, params_before)
            self.optimizer.optimizer.load_state_dict(state_before)
            raise
        value, stats = first[0]
        return float(value.detach()), stats, trials[0]
