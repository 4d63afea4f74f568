"""A :class:`pyneuralode.Network` compiled for torch: one ``nn.Module``, ODE blocks solved by torchdiffeq.

Each plain layer (or composite such as an MLP) is the spec compiler's :class:`._compile.VectorField`; each
``ODEBlock`` is an :class:`ODEBlockModule` that solves with the same torchdiffeq calls, options
(:mod:`._methods`), exact counters (:mod:`._nfe`) and failure translation (:mod:`._failures`) as an
``ODEModel``'s :class:`._program.TorchProgram`. Parameters are registered in canonical order, so
:func:`._compile.load_flat` and :func:`._compile.flat_grad` work on the whole network.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from ..._blocks import ODEBlock, Residual
from ..._classify import CrossEntropy
from ..._errors import NotSupportedError, SpecError, non_finite_error, trainer_not_initialised
from ..._layers import Sequential
from ..._params import param_layout
from ..._solution import Stats
from .._base import refuse_devices
from ._compile import VectorField, flat_grad, flat_values, load_flat, to_tensor
from ._failures import BACKWARD, torchdiffeq_failures
from ._methods import integrate, method_name
from ._nfe import backward_counts, counting_field, forward_counts
from ._optim import TorchOptimizer
from ._train import check_finite

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_LOSSES = {CrossEntropy: F.cross_entropy}


def loss_fn(loss):
    """The torch implementation of a classification loss object."""
    if type(loss) not in _LOSSES:
        raise NotSupportedError(f"{type(loss).__name__} is not available on backend 'torch'.")
    return _LOSSES[type(loss)]


class ODEBlockModule(torch.nn.Module):
    """``forward(x) = y(t1)`` of ``dy/dt = field(t, y)``, ``y(0) = x``, solved by torchdiffeq with the block's
    solver, step control and adjoint (:func:`._methods.integrate`, as ``TorchProgram``)."""

    def __init__(self, block: ODEBlock, *, dtype, device):
        super().__init__()
        self.block = block
        self.field = VectorField(block.field, dtype=dtype, device=device)
        self.counter = counting_field(self.field, block.solver, block.control)
        self.method = method_name(block.solver)
        self.backsolve = block.adjoint.name == "BacksolveAdjoint"
        self.register_buffer("ts", torch.tensor([0.0, block.t1], dtype=dtype, device=device), persistent=False)

    def forward(self, x):
        """One solve; the counters restart here, so they always describe the latest call."""
        return self.solve(x, self.ts)[-1]

    def solve(self, x, ts):
        """The states at every time of ``ts`` (a tensor), with the block's solver, control and adjoint."""
        block, control = self.block, self.block.control
        self.counter.reset(count_vjps=torch.is_grad_enabled() and not self.backsolve)
        if block.solver.adaptive:  # the blow-up/stiffness watch every backend applies (pyneuralode._stepwatch)
            self.counter.watch(ts.detach().cpu().numpy(), atol=control.atol,
                               dtype=str(ts.dtype).removeprefix("torch."))
        with torchdiffeq_failures(self.counter, max_steps=control.max_steps, solver=block.solver,
                                  backsolve=self.backsolve):
            ys = integrate(self.counter, x, ts, solver=block.solver, control=control, adjoint=block.adjoint,
                           method=self.method, field=self.field,
                           backsolve=self.backsolve and torch.is_grad_enabled())
        self.counter.phase = "backward"  # every later evaluation is this solve's backward pass
        if not bool(torch.isfinite(ys).all()):
            raise non_finite_error()
        return ys

    def forward_stats(self) -> dict:
        return forward_counts(self.counter, adaptive=self.block.solver.adaptive)

    def stats(self, *, backward: bool) -> Stats:
        """This block's counts since the last ``counter.reset``."""
        if not backward:
            return Stats(**self.forward_stats())
        return Stats(**self.forward_stats(),
                     **backward_counts(self.counter, adaptive=self.block.solver.adaptive, backsolve=self.backsolve))


class _Leaf(torch.nn.Module):
    def __init__(self, field: VectorField):
        super().__init__()
        self.field = field

    def forward(self, x):
        return self.field(torch.zeros((), dtype=x.dtype, device=x.device), x)


class _Chain(torch.nn.Module):
    def __init__(self, children):
        super().__init__()
        self.layers = torch.nn.ModuleList(children)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class _Skip(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


class NetworkModule(torch.nn.Module):
    """The compiled network: ``forward(x) -> logits``. ``flat_parameters()`` lists its parameters in canonical
    order and ``blocks`` its :class:`ODEBlockModule` s; this is what ``Network.native()`` returns (its own copy,
    starting from the flat vector it was given): ``load_params(flat)``/``params()`` move the canonical vector in
    and out, and ``stats``/``block_stats()`` are the blocks' counts of the latest call and of its backward pass
    once run, with the meaning ``Network.value_and_grad`` gives them."""

    def __init__(self, spec, *, dtype, device):
        super().__init__()
        self._slot_params: list = []
        self.blocks: list[ODEBlockModule] = []
        self.body = self._build(spec, dtype=dtype, device=device)
        self._slots = param_layout(spec)
        shapes = [tuple(p.shape) for p in self._slot_params]
        if shapes != [s.shape for s in self._slots]:  # pragma: no cover - guards the layout contract
            raise AssertionError("torch network parameters are out of canonical order")
        self.num_params = self._slots[-1].stop if self._slots else 0

    def _build(self, layer, **kw):
        if isinstance(layer, Sequential):
            return _Chain([self._build(child, **kw) for child in layer.layers])
        if isinstance(layer, Residual):
            return _Skip(self._build(layer.layer, **kw))
        if isinstance(layer, ODEBlock):
            module = ODEBlockModule(layer, **kw)
            self.blocks.append(module)
            self._slot_params += module.field.flat_parameters()
            return module
        field = VectorField(layer, **kw)
        self._slot_params += field.flat_parameters()
        return _Leaf(field)

    def forward(self, x):
        return self.body(x)

    def flat_parameters(self) -> list[torch.nn.Parameter]:
        """The parameter tensors in canonical flat-vector order."""
        return list(self._slot_params)

    def load_params(self, flat) -> None:
        """Copy the canonical flat vector (numpy or tensor) into the weights, in place."""
        load_flat(self, flat)

    def params(self) -> np.ndarray:
        """The current weights as the canonical flat vector (a numpy copy)."""
        return flat_values(self)

    def block_stats(self) -> list[Stats]:
        """Each ODE block's counts of the latest call (backward ones once its backward pass has run)."""
        return [block.stats(backward=True) for block in self.blocks]

    @property
    def stats(self) -> Stats:
        """The blocks' counts of the latest call, summed."""
        from ..._network import sum_stats
        return sum_stats(tuple(self.block_stats()))

    def reset_counters(self, *, training: bool) -> None:
        for block in self.blocks:
            block.counter.reset(count_vjps=training and not block.backsolve)


class TorchNetworkProgram:
    """The torch program of one :class:`pyneuralode.Network`; numpy in and out."""

    def __init__(self, network, device: torch.device):
        self.network = network
        self.dtype = _DTYPES[network.dtype]
        self.device = device
        self.module = NetworkModule(network.spec, dtype=self.dtype, device=device)

    def _tensor(self, array, dtype=None) -> torch.Tensor:
        return to_tensor(array, dtype=dtype or self.dtype, device=self.device)

    def apply(self, params, x):
        load_flat(self.module, params)
        self.module.reset_counters(training=False)
        with torch.no_grad():
            logits = self.module(self._tensor(x))
        logits = logits.cpu().numpy()
        if not np.all(np.isfinite(logits)):
            raise non_finite_error("network output")
        return logits, [b.stats(backward=False) for b in self.module.blocks]

    def loss_and_grads(self, x: torch.Tensor, labels: torch.Tensor, loss):
        """Loss and parameter gradients with the module's current weights, as tensors (for training loops).

        Returns ``(value, grads, logits, block_stats)``; ``grads`` follow ``flat_parameters()``."""
        module = self.module
        module.reset_counters(training=True)
        logits = module(x)
        value = loss_fn(loss)(logits, labels)
        for block in module.blocks:
            block.counter.phase = "backward"
        guard = (torchdiffeq_failures(module.blocks[0].counter, max_steps=module.blocks[0].block.control.max_steps,
                                      where=BACKWARD) if module.blocks else contextlib.nullcontext())
        with guard:
            grads = torch.autograd.grad(value, module.flat_parameters(), allow_unused=True)
        for block in module.blocks:
            block.counter.last_output = None
        return value, grads, logits, [b.stats(backward=True) for b in module.blocks]

    def value_and_grad(self, params, x, labels, loss):
        load_flat(self.module, params)
        value, grads, logits, block_stats = self.loss_and_grads(
            self._tensor(x), self._tensor(labels, torch.int64), loss)
        grad = flat_grad(self.module, grads)
        value = float(value.detach())
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            raise non_finite_error("loss or its gradient")
        return value, grad, logits.detach().cpu().numpy(), block_stats

    def make_trainer(self, optimizer, loss, *, devices=None):
        """A native training loop (optimiser state kept in the backend's arrays)."""
        refuse_devices(devices, "torch")
        # A program of its own: the trainer's weights live in its module, which net.apply/value_and_grad (which
        # load the flat vector they are given) and other trainers of the same network must not overwrite.
        return TorchNetworkTrainer(TorchNetworkProgram(self.network, self.device), optimizer, loss)

    def native(self, params) -> NetworkModule:
        """A :class:`NetworkModule` of its own, ``forward(x) -> logits``, holding ``params``."""
        module = NetworkModule(self.network.spec, dtype=self.dtype, device=self.device)
        module.load_params(params)
        return module


class TorchNetworkTrainer:
    """A native training loop for a network: autograd gradients (through each block's adjoint) and a
    ``torch.optim`` update (with the optimiser's schedule); the weights live in the module between steps."""

    def __init__(self, program: TorchNetworkProgram, optimizer, loss):
        if optimizer.needs_value_fn:
            raise SpecError("A network trains on mini-batches: use pn.Adam, pn.RMSprop or pn.SGD (a line-search "
                            "optimiser such as pn.LBFGS needs a deterministic full-batch loss; see pn.Trainer).")
        self.program, self.loss, self.optimizer = program, loss, optimizer
        self.opt = TorchOptimizer(optimizer, program.module.flat_parameters())
        self._started = False

    @property
    def steps(self) -> int:
        return self.opt.steps

    def init(self, params) -> None:
        load_flat(self.program.module, params)
        self.opt = TorchOptimizer(self.optimizer, self.program.module.flat_parameters())
        self._started = True

    def step(self, x, labels):
        """One update on the batch; returns ``(loss, logits, [block stats])`` (numpy)."""
        if not self._started:
            raise trainer_not_initialised()
        program = self.program
        value, grads, logits, stats = program.loss_and_grads(program._tensor(x), program._tensor(labels, torch.int64),
                                                             self.loss)
        check_finite(value, grads)  # before the update: a failed step changes nothing
        for param, grad in zip(program.module.flat_parameters(), grads):
            param.grad = grad
        self.opt.step()
        return float(value.detach()), logits.detach().cpu().numpy(), stats

    def get_params(self) -> np.ndarray:
        return flat_values(self.program.module)

    def state_arrays(self) -> dict:
        """Parameters and optimiser state (with the step count) as named numpy arrays (for checkpoints)."""
        return {"params": self.get_params(), **self.opt.state_arrays()}

    def load_state_arrays(self, arrays) -> None:
        """Restore what :meth:`state_arrays` returned."""
        self.init(arrays["params"])
        self.opt.load_state_arrays(arrays)
