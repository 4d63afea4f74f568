"""Native torch training: weights live in the compiled module, ``torch.optim`` updates them in place."""

from __future__ import annotations

import numpy as np
import torch

from ..._errors import non_finite_error
from ._compile import flat_values, load_flat
from ._optim_state import checked_entry


class TorchTrainer:
    """Runs :class:`pyneuralode.train.Trainer` steps for a :class:`TorchProgram`."""

    def __init__(self, program, optimizer, loss_type):
        self.program, self.optimizer_spec, self.reduce = program, optimizer, loss_type.reduce
        self.optimizer = None

    def init(self, params: np.ndarray) -> None:
        load_flat(self.program.field, params)
        self.optimizer = self.optimizer_spec.to_torch(self.program.field.flat_parameters())
        self._steps = 0

    def step(self, y0, ts, target):
        program = self.program
        if hasattr(self.optimizer_spec, "learning_rate"):  # scheduled SGD: torch has no piecewise schedule here
            for group in self.optimizer.param_groups:
                group["lr"] = self.optimizer_spec.learning_rate(self._steps)
        value, grads, _, _, stats = program.value_and_grads(program._tensor(y0), ts, program._tensor(target),
                                                            self.reduce)
        if not bool(torch.isfinite(value)):
            raise non_finite_error("loss")
        for param, grad in zip(program.field.flat_parameters(), grads):
            param.grad = torch.zeros_like(param) if grad is None else grad
        self.optimizer.step()
        self._steps += 1
        return float(value.detach()), stats

    def params(self) -> np.ndarray:
        return flat_values(self.program.field)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        out = {"opt_steps": np.array(self._steps)}
        for index, state in self.optimizer.state_dict()["state"].items():
            for name, value in state.items():
                out[f"opt_{index}_{name}"] = torch.as_tensor(value).detach().cpu().numpy()
        return out

    def load_optimizer_arrays(self, arrays) -> None:
        self._steps = int(arrays.get("opt_steps", 0))
        state_dict = self.optimizer.state_dict()
        params = self.program.field.flat_parameters()
        state: dict = {}
        for key, value in arrays.items():
            if key == "opt_steps":
                continue
            _, index, name = key.split("_", 2)
            value = checked_entry(key, value, params, int(index))
            device = self.program.device if value.ndim else "cpu"
            state.setdefault(int(index), {})[name] = torch.as_tensor(value, device=device)
        state_dict["state"] = state
        self.optimizer.load_state_dict(state_dict)
