"""A neutral optimiser spec run by ``torch.optim``: the optimiser, its learning-rate scheduler, the step count, and
its whole state as named numpy arrays (for checkpoints that resume exactly)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ._optim_state import checked_entry

# torch.optim.LBFGS keeps Python lists of tensors (its curvature pairs) and Python numbers in its state; they are
# stored as stacked arrays / 0-d arrays under these key suffixes and rebuilt on load. Its "al" list is scratch
# space rewritten before every use, so it is not stored.
_LIST, _NUMBER, _SCRATCH = "__list", "__number", ("al",)


class TorchOptimizer:
    """``spec.to_torch(params)`` plus the scheduler of ``spec.schedule``, stepped once after every update."""

    def __init__(self, spec, params):
        self.spec, self.params = spec, list(params)
        self.optimizer = spec.to_torch(self.params)
        schedule = spec.schedule
        self.scheduler = schedule.to_torch(self.optimizer) if schedule is not None else None
        self.frozen_after = schedule.torch_frozen_after() if schedule is not None else None
        self.steps = 0

    @property
    def lr(self) -> float:
        """The learning rate the next update uses."""
        return float(self.optimizer.param_groups[0]["lr"])

    def _advance_schedule(self) -> None:
        self.steps += 1
        if self.scheduler is not None and (self.frozen_after is None or self.steps <= self.frozen_after):
            self.scheduler.step()

    def step(self, closure=None):
        """One update (``closure`` for line-search optimisers, as ``torch.optim`` wants it); then the schedule."""
        result = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self._advance_schedule()
        return result

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Step count and optimiser state as ``opt_*`` numpy arrays (the learning rate follows from the count)."""
        out = {"opt_steps": np.array(self.steps)}
        for index, state in self.optimizer.state_dict()["state"].items():
            for name, value in state.items():
                key = f"opt_{index}_{name}"
                if name in _SCRATCH:
                    continue
                if isinstance(value, list):
                    out[key + _LIST] = (torch.stack([torch.as_tensor(v) for v in value]).detach().cpu().numpy()
                                        if value else np.zeros((0,)))
                elif isinstance(value, torch.Tensor):  # a copy: .numpy() shares memory that step() updates in place
                    out[key] = value.detach().cpu().numpy().copy()
                else:
                    out[key + _NUMBER] = np.array(value)
        return out

    def load_state_arrays(self, arrays) -> None:
        """Restore what :meth:`state_arrays` returned into this (freshly made) optimiser."""
        state: dict = {}
        for key, value in arrays.items():
            if key == "opt_steps" or not key.startswith("opt_"):
                continue
            _, index, name = key.split("_", 2)
            if name.endswith(_LIST):
                name, value = name[:-len(_LIST)], [torch.as_tensor(v) for v in value]
            elif name.endswith(_NUMBER):
                name, value = name[:-len(_NUMBER)], value.item()
            else:
                if not self.spec.needs_value_fn:  # per-parameter state (L-BFGS keeps flat vectors on parameter 0)
                    value = checked_entry(key, value, self.params, int(index))
                value = torch.as_tensor(value, device=self.params[0].device if value.ndim else "cpu")
            state.setdefault(int(index), {})[name] = value
        state_dict = self.optimizer.state_dict()
        state_dict["state"] = state
        self.optimizer.load_state_dict(state_dict)
        # The schedule is replayed, not stored: torch's schedulers update the rate recursively, so replaying the
        # same number of scheduler steps reproduces the same floating-point rates exactly.
        steps = int(arrays.get("opt_steps", 0))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")
            for _ in range(steps):
                self._advance_schedule()
        self.steps = steps
