"""Native torch training of a CNF: weights live in the compiled module, ``torch.optim`` updates them in place."""

from __future__ import annotations

import numpy as np
import torch

from ..._errors import non_finite_error
from ..._flow_trainer import FlowStepInfo
from ..._solution import Stats
from .._base import refuse_devices
from ._compile import flat_values, load_flat
from ._optim_state import checked_entry
from ._failures import BACKWARD


class TorchFlowTrainer:
    """Runs :class:`pyneuralode.FlowTrainer` steps for a :class:`._cnf.TorchCNFProgram`."""

    def __init__(self, program, optimizer, loss, *, devices=None):
        refuse_devices(devices, "torch")
        self.program, self.optimizer_spec, self.loss = program, optimizer, loss
        self.optimizer = None

    def init(self, params: np.ndarray) -> None:
        load_flat(self.program.field, params)
        self.optimizer = self.optimizer_spec.to_torch(self.program.field.flat_parameters())

    def step(self, x, eps) -> FlowStepInfo:
        program = self.program
        self.optimizer.zero_grad(set_to_none=True)
        value, nll, kin, jac = program.loss(program.tensor(x), None if eps is None else program.tensor(eps),
                                            self.loss.kinetic, self.loss.jacobian)
        if not bool(torch.isfinite(value)):
            raise non_finite_error("loss")
        program.counter.phase = "backward"
        with program._failures(where=BACKWARD):
            value.backward()
        program.counter.last_output = None
        self.optimizer.step()
        stats = Stats(**program._forward_stats(), **program._backward_stats())
        return FlowStepInfo(*(float(v.detach()) for v in (value, nll, kin, jac)), stats)

    def params(self) -> np.ndarray:
        return flat_values(self.program.field)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for index, state in self.optimizer.state_dict()["state"].items():
            for name, value in state.items():
                out[f"opt_{index}_{name}"] = torch.as_tensor(value).detach().cpu().numpy()
        return out

    def load_optimizer_arrays(self, arrays) -> None:
        state_dict = self.optimizer.state_dict()
        params = self.program.field.flat_parameters()
        state: dict = {}
        for key, value in arrays.items():
            _, index, name = key.split("_", 2)
            value = checked_entry(key, value, params, int(index))
            device = self.program.device if value.ndim else "cpu"
            state.setdefault(int(index), {})[name] = torch.as_tensor(value, device=device)
        state_dict["state"] = state
        self.optimizer.load_state_dict(state_dict)
