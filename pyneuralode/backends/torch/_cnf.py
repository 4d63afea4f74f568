"""A :class:`pyneuralode.CNF` compiled for torch: autograd traces, torchdiffeq solves, the torch backend's counters.

The augmented state is one tensor ``(N, D + 1)`` (``(N, D + 3)`` with the RNODE integrals), the layout the JAX
backend solves, so torchdiffeq's RMS error norm sees the same numbers (a tuple state would switch torchdiffeq to
its max-of-RMS mixed norm and change the steps). Solver options, step matching and failure translation are the
torch backend's (:mod:`._methods`, :mod:`._failures`); counting is :class:`._nfe.CountingField` around the
augmented dynamics, so one augmented evaluation is one NFE.

- Exact trace: ``D`` calls of ``torch.autograd.grad`` (row ``i`` of ``∂f/∂z`` for every sample at once), as
  torchdiffeq's ``examples/cnf.py`` computes it; ``create_graph`` whenever gradients are being recorded.
- Hutchinson: one ``autograd.grad`` with ``grad_outputs=ε`` (``εᵀ ∂f/∂z``), as FFJORD's ``divergence_approx``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..._errors import non_finite_error
from ..._flow_results import Density, FlowValueAndGrad
from ..._solution import Stats
from ._backend import select_device
from ._compile import VectorField, flat_grad, load_flat, to_tensor
from ._failures import BACKWARD, torchdiffeq_failures
from ._methods import integrate, method_name
from ._nfe import backward_counts, counting_field, forward_counts

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class AugmentedField(torch.nn.Module):
    """``forward(t, state)`` for ``state = [z, l (, kinetic, jacobian)]``: ``[f, tr(∂f/∂z) (, ||f||², ||J||²)]``.

    ``eps`` (Hutchinson's noise, ``(N, D)``) is set before each solve and held fixed through it; ``None`` means
    the exact trace. ``regularised`` adds the two RNODE integrands.
    """

    def __init__(self, field: VectorField, dim: int):
        super().__init__()
        self.field = field
        self.dim = dim
        self.eps = None
        self.regularised = False

    def forward(self, t, state):
        dim = self.dim
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            z = state[:, :dim]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            f = self.field(t, z)
            if self.eps is None:
                rows = [torch.autograd.grad(f[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0]
                        for i in range(dim)]
                trace = sum(row[:, i] for i, row in enumerate(rows))
                jac_sq = sum((row * row).sum(-1) for row in rows) if self.regularised else None
            else:
                e_jac = torch.autograd.grad(f, z, grad_outputs=self.eps, create_graph=create_graph)[0]
                trace = (e_jac * self.eps).sum(-1)
                jac_sq = (e_jac * e_jac).sum(-1) if self.regularised else None
        parts = [f, trace[:, None]]
        if self.regularised:
            parts += [(f * f).sum(-1)[:, None], jac_sq[:, None]]
        out = torch.cat(parts, dim=-1)
        return out if create_graph else out.detach()


def base_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` row by row."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


class TorchCNFProgram:
    """The torch program of one :class:`pyneuralode.CNF`. :meth:`loss` is the native training step's body."""

    def __init__(self, cnf):
        self.cnf = cnf
        self.dtype = _DTYPES[cnf.dtype]
        self.device = select_device(cnf.device)
        self.dim = cnf.dim
        self.field = VectorField(cnf.field, dtype=self.dtype, device=self.device)
        self.augmented = AugmentedField(self.field, self.dim)
        self.counter = counting_field(self.augmented, cnf.solver, cnf.control)
        self.method = method_name(cnf.solver)
        self.backsolve = cnf.adjoint.name == "BacksolveAdjoint"
        self.ts = torch.tensor([cnf.t1, cnf.t0], dtype=self.dtype, device=self.device)  # data -> base

    def native(self) -> VectorField:
        """The compiled field ``f(t, z)`` as a ``torch.nn.Module``."""
        return self.field

    def tensor(self, array) -> torch.Tensor:
        return to_tensor(array, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ solving
    def _start(self, **reset) -> None:
        """Zero the counters and watch adaptive solves for blow-up and stiffness (pyneuralode._stepwatch)."""
        self.counter.reset(**reset)
        if self.cnf.solver.adaptive:
            self.counter.watch(self.ts.detach().cpu().numpy(), atol=self.cnf.control.atol, dtype=self.cnf.dtype)

    def _failures(self, **where):
        return torchdiffeq_failures(self.counter, max_steps=self.cnf.control.max_steps, solver=self.cnf.solver,
                                    backsolve=self.backsolve, **where)

    def _integrate(self, state0: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        cnf = self.cnf
        return integrate(self.counter, state0, self.ts, solver=cnf.solver, control=cnf.control, adjoint=cnf.adjoint,
                         method=self.method, field=self.field, backsolve=adjoint)

    def _state0(self, x: torch.Tensor, regularised: bool) -> torch.Tensor:
        extra = 3 if regularised else 1
        return torch.cat([x, torch.zeros(x.shape[0], extra, dtype=x.dtype, device=x.device)], dim=-1)

    def _forward_stats(self) -> dict:
        return forward_counts(self.counter, adaptive=self.cnf.solver.adaptive)

    def _backward_stats(self) -> dict:
        return backward_counts(self.counter, adaptive=self.cnf.solver.adaptive, backsolve=self.backsolve)

    # ------------------------------------------------------------------ the numpy API
    def density(self, params, x, eps) -> Density:
        load_flat(self.field, params)
        self.augmented.eps = None if eps is None else self.tensor(eps)
        self.augmented.regularised = False
        self._start()
        with torch.no_grad(), self._failures():
            state = self._integrate(self._state0(self.tensor(x), False), adjoint=False)[-1]
        state = state.cpu().numpy()
        if not np.all(np.isfinite(state)):
            raise non_finite_error()
        z, delta = state[:, :self.dim], state[:, self.dim]
        logp = base_log_prob(torch.as_tensor(z)).numpy() + delta
        return Density(logp, z, delta, Stats(**self._forward_stats()))

    def loss(self, x: torch.Tensor, eps: torch.Tensor | None, kinetic_weight: float, jacobian_weight: float):
        """``(loss, nll, kinetic, jacobian)`` tensors with the module's current weights, recorded for autograd.

        Call ``.backward()`` (or ``torch.autograd.grad``) on ``loss`` with ``self.counter.phase = "backward"``
        to count backward evaluations; :meth:`value_and_grad` does.
        """
        regularised = kinetic_weight > 0 or jacobian_weight > 0
        self.augmented.eps = eps
        self.augmented.regularised = regularised
        self._start(count_vjps=not self.backsolve)
        with self._failures():
            state = self._integrate(self._state0(x, regularised), adjoint=self.backsolve)[-1]
        if not bool(torch.isfinite(state).all()):
            raise non_finite_error()
        dim = self.dim
        nll = -(base_log_prob(state[:, :dim]) + state[:, dim]).mean()
        if regularised:
            kinetic, jacobian = -state[:, dim + 1].mean(), -state[:, dim + 2].mean()
        else:
            kinetic = jacobian = torch.zeros((), dtype=state.dtype, device=state.device)
        return nll + kinetic_weight * kinetic + jacobian_weight * jacobian, nll, kinetic, jacobian

    def value_and_grad(self, params, x, eps, loss) -> FlowValueAndGrad:
        load_flat(self.field, params)
        x_t = self.tensor(x).requires_grad_(True)
        value, nll, kinetic, jacobian = self.loss(x_t, None if eps is None else self.tensor(eps),
                                                  loss.kinetic, loss.jacobian)
        self.counter.phase = "backward"
        params_t = self.field.flat_parameters()
        with self._failures(where=BACKWARD):
            *grads, grad_x = torch.autograd.grad(value, [*params_t, x_t], allow_unused=True)
        self.counter.last_output = None
        grad_params = flat_grad(self.field, grads)
        grad_x = np.zeros_like(np.asarray(x)) if grad_x is None else grad_x.detach().cpu().numpy()
        value_f = float(value.detach())
        if not (np.isfinite(value_f) and np.all(np.isfinite(grad_params)) and np.all(np.isfinite(grad_x))):
            raise non_finite_error("loss or its gradient")
        stats = Stats(**self._forward_stats(), **self._backward_stats())
        return FlowValueAndGrad(value_f, grad_params, grad_x, stats, float(nll.detach()),
                                float(kinetic.detach()), float(jacobian.detach()))
