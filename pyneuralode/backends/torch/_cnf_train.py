"""Native torch training of a CNF: weights live in the compiled module, ``torch.optim`` updates them in place."""

from __future__ import annotations

import numpy as np
import torch

from ..._errors import non_finite_error, trainer_not_initialised
from ..._flow_trainer import FlowStepInfo
from ..._solution import Stats
from .._base import refuse_devices
from ._compile import load_flat
from ._failures import BACKWARD
from ._optim import TorchOptimizer
from ._train import FieldWeights, check_finite


class TorchFlowTrainer(FieldWeights):
    """Runs :class:`pyneuralode.FlowTrainer` steps for a :class:`._cnf.TorchCNFProgram`."""

    def __init__(self, program, optimizer, loss, *, devices=None):
        refuse_devices(devices, "torch")
        # A program of its own: the trainer's weights live in its module, which cnf.log_prob/value_and_grad (which
        # load the flat vector they are given) and other trainers of the same flow must not overwrite.
        program = type(program)(program.cnf)
        self.program, self.optimizer_spec, self.loss = program, optimizer, loss
        self.optimizer = None

    def init(self, params: np.ndarray) -> None:
        load_flat(self.program.field, params)
        self.optimizer = TorchOptimizer(self.optimizer_spec, self.program.field.flat_parameters())

    def step(self, x, eps) -> FlowStepInfo:
        if self.optimizer is None:
            raise trainer_not_initialised()
        program = self.program
        self.optimizer.optimizer.zero_grad(set_to_none=True)
        value, nll, kin, jac = program.loss(program.tensor(x), None if eps is None else program.tensor(eps),
                                            self.loss.kinetic, self.loss.jacobian)
        if not bool(torch.isfinite(value)):
            raise non_finite_error("loss")
        program.counter.phase = "backward"
        with program._failures(where=BACKWARD):
            value.backward()
        program.counter.last_output = None
        check_finite(value, [p.grad for p in program.field.flat_parameters()])  # before the update: a failed
        self.optimizer.step()                                                   # step changes nothing
        stats = Stats(**program._forward_stats(), **program._backward_stats())
        return FlowStepInfo(*(float(v.detach()) for v in (value, nll, kin, jac)), stats)
