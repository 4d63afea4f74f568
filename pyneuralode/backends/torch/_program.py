"""A model compiled for torch: solve and differentiate with torchdiffeq, numpy in and out.

- ``DirectAdjoint``: backpropagation through ``torchdiffeq.odeint`` (discretise-then-optimise).
- ``BacksolveAdjoint``: ``torchdiffeq.odeint_adjoint`` (the paper's adjoint method), with the adjoint object's
  rtol/atol (else the forward ones) and ``adjoint_options={"norm": "seminorm"}`` when ``seminorm=True``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._control import fixed_step_grid
from ..._errors import NotSupportedError, non_finite_error
from ..._losses import cast_arrays
from ..._solution import Solution, Stats, ValueAndGrad
from .._base import AbstractProgram, refuse_devices
from ._compile import VectorField, flat_grad, flat_values, load_flat, to_tensor
from ._failures import BACKWARD, torchdiffeq_failures
from ._methods import forward_options, integrate, method_name
from ._nfe import backward_counts, counting_field, forward_counts

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TorchProgram(AbstractProgram):
    """An :class:`pyneuralode.ODEModel` compiled to a torch module solved by torchdiffeq."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.dtype = _DTYPES[model.dtype]
        self.dtype_np = np.dtype(model.dtype)
        self.device = device
        self.field = VectorField(model.field, dtype=self.dtype, device=device)
        self.counter = counting_field(self.field, model.solver, model.control)
        self.method = method_name(model.solver)
        self.backsolve = model.adjoint.name == "BacksolveAdjoint"
        self._events: dict = {}  # bound event function -> its compiled module

    def native(self, params) -> NativeODE:
        """A :class:`NativeODE` with its own weights (``params``) and counters."""
        return NativeODE(TorchProgram(self.model, self.device), params)

    # ------------------------------------------------------------------ helpers
    def _tensor(self, array) -> torch.Tensor:
        return to_tensor(array, dtype=self.dtype, device=self.device)

    def loss_tensors(self, loss) -> dict[str, torch.Tensor]:
        """The loss's arrays as tensors on the device: real ones in the model's dtype, masks kept boolean."""
        arrays = cast_arrays(loss.data(), self.dtype_np)
        return {k: torch.as_tensor(v, device=self.device) for k, v in arrays.items()}

    def _check_fixed_grid(self, ts: np.ndarray) -> None:
        if not self.model.solver.adaptive:
            fixed_step_grid(ts, self.model.control.dt, self.model.control.max_steps)  # counts before building

    def _start(self, ts: np.ndarray, *, stalls: bool = True, **reset) -> None:
        """Zero the counters and, for adaptive solvers, watch the solve over ``ts`` for blow-up and (unless
        ``stalls`` is false) stiffness."""
        self.counter.reset(**reset)
        if self.model.solver.adaptive:
            self.counter.watch(ts, atol=self.model.control.smallest_atol, dtype=self.model.dtype, stalls=stalls)

    def _failures(self, **where):
        return torchdiffeq_failures(self.counter, max_steps=self.model.control.max_steps, solver=self.model.solver,
                                    backsolve=self.backsolve, **where)

    def _integrate(self, y0: torch.Tensor, ts: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        model = self.model
        return integrate(self.counter, y0, ts, solver=model.solver, control=model.control, adjoint=model.adjoint,
                         method=self.method, field=self.field, backsolve=adjoint)

    def _forward_stats(self) -> dict:
        return forward_counts(self.counter, adaptive=self.model.solver.adaptive)

    def _stats(self, *, forward: bool = True) -> Stats:
        """Forward (when there was a solve) and backward counts since the counter's last reset."""
        return Stats(**self._forward_stats() if forward else {},
                     **backward_counts(self.counter, adaptive=self.model.solver.adaptive, backsolve=self.backsolve))

    # ------------------------------------------------------------------ the program API
    def solve(self, params, y0, ts) -> Solution:
        if len(ts) == 1:
            return Solution(ts, np.asarray(y0)[None].copy(), Stats())
        self._check_fixed_grid(ts)
        load_flat(self.field, params)
        self._start(ts)
        with torch.no_grad(), self._failures():
            ys = self._integrate(self._tensor(y0), self._tensor(ts), adjoint=False)
        ys = ys.cpu().numpy()
        if not np.all(np.isfinite(ys)):
            raise non_finite_error()
        return Solution(ts, ys, Stats(**self._forward_stats()))

    def _event_module(self, bound, params):
        """The compiled event function (cached per traced event), holding ``params`` if it reads any."""
        if bound not in self._events:
            self._events[bound] = VectorField(bound, dtype=self.dtype, device=self.device)
        condition = self._events[bound]
        if condition.num_params:  # a dynamics field's event reads the field's own parameters
            load_flat(condition, params)
        return condition

    @property
    def event_time_tolerance(self) -> float:
        """torchdiffeq's bisection stops within ``atol`` in time."""
        return self.model.control.smallest_atol

    def locate_event(self, params, y0, t0, t1, bound, signs, arm):
        """Located by torchdiffeq's ``odeint_event`` (bisection on the dense output to ``atol`` in time), with
        the event ``min(h(t, y), ±(t1 - t))``, ``h`` the conditions' combined function (``pyneuralode._events``),
        which changes sign at the event or on reaching ``t1``: torchdiffeq's own loop has no end time. The steps
        are clipped onto ``t1`` as in :meth:`solve`."""
        from torchdiffeq import odeint_event
        if self.model.control.per_component_atol:
            raise NotSupportedError("Events on backend 'torch' need one StepControl atol: torchdiffeq also uses atol "
                                    "as the event's tolerance in time. Give one atol for all components, or use "
                                    "backend='jax'.")
        condition = self._event_module(bound.conditions, params)
        load_flat(self.field, params)
        ts_t, y0_t = self._tensor(np.array([t0, t1], dtype=self.dtype_np)), self._tensor(y0)
        signs_t, arm_t = self._tensor(np.asarray(signs, self.dtype_np)), self._tensor(np.asarray(arm, self.dtype_np))
        direction = 1.0 if t1 > t0 else -1.0
        self._start(np.array([t0, t1], dtype=self.dtype_np), stalls=False)  # t1 is a bound, maybe infinite
        with torch.no_grad(), self._failures():
            def combined(t, y):
                terms = torch.maximum(direction * (arm_t - t), signs_t * condition(t, y[None])[0].reshape(-1))
                return torch.min(terms)

            def first_crossing(t, y):
                # a state that overflowed turns the condition to +-inf or NaN, which torchdiffeq's loop would take
                # for a sign change, i.e. an event (a body falling for ever with t1 = inf "landed" at t = 2.7e153);
                # the loop already reads this function's sign on the host, so the check costs no extra sync
                if not bool(torch.isfinite(y).all()):
                    raise non_finite_error()
                return torch.minimum(combined(t, y), direction * (ts_t[1] - t))

            t_event, path = odeint_event(
                self.counter, y0_t, ts_t[0], event_fn=first_crossing, reverse_time=direction < 0,
                rtol=self.model.control.rtol, atol=self.model.control.atol, method=self.method,
                options=forward_options(self.model.solver, self.model.control, ts_t))
            stats = self._forward_stats()
            t_event = t_event.reshape(())
            # the end-time term crossed first only where the bisection ended within its tolerance of t1 (a
            # comparison of the two terms' values would not do for a boolean condition's ±1)
            occurred = bool(direction * (ts_t[1] - t_event) > 4 * self.event_time_tolerance)
            y_event = path[-1]
            if not occurred:  # the end time itself, not the bisection's estimate of it (within atol)
                t_event = ts_t[1]
                y_event = self._integrate(y0_t, ts_t, adjoint=False)[-1]
        return float(t_event), y_event.cpu().numpy(), occurred, stats

    def event_gradient(self, condition, params, t, y):
        """``(∂g/∂t, ∇_y g, ∂g/∂θ)`` of one event condition at ``(t, y)`` (autograd)."""
        condition = self._event_module(condition, params)
        t_t, y_t = self._tensor(np.asarray(t)).requires_grad_(True), self._tensor(y).requires_grad_(True)
        weights = condition.flat_parameters()
        g = condition(t_t, y_t[None])[0]
        d_t, d_y, *d_w = torch.autograd.grad(g, [t_t, y_t, *weights], allow_unused=True)
        return (0.0 if d_t is None else float(d_t), np.zeros(y.shape) if d_y is None else d_y.cpu().numpy(),
                flat_grad(condition, d_w) if weights else np.zeros(self.field.num_params))

    def value_and_grads(self, y0_t: torch.Tensor, ts: np.ndarray, data: dict, loss_kernel):
        """Loss and gradients with the module's current weights, all as tensors (no numpy round trip).

        Returns ``(value, param_grads, grad_y0, ys, stats)``; ``param_grads`` follow ``flat_parameters()``.
        The training loop calls this directly; :meth:`value_and_grad` wraps it for numpy callers.
        """
        counter = self.counter
        self._start(ts, count_vjps=not self.backsolve)
        if len(ts) == 1:
            ys = y0_t[None]
        else:
            self._check_fixed_grid(ts)
            with self._failures():
                ys = self._integrate(y0_t, self._tensor(ts), adjoint=self.backsolve)
            if not bool(torch.isfinite(ys).all()):
                raise non_finite_error()
        value = loss_kernel(torch, ys, data)
        counter.phase = "backward"
        params_t = self.field.flat_parameters()
        inputs = [*params_t, y0_t] if y0_t.requires_grad else params_t
        if value.requires_grad:
            with self._failures(where=BACKWARD):
                grads = list(torch.autograd.grad(value, inputs, allow_unused=True))
        else:  # nothing to differentiate: one save time (ys is y0) in a training step, whose y0 needs no gradient
            grads = [None] * len(inputs)
        counter.last_output = None
        grad_y0 = grads.pop() if y0_t.requires_grad else None
        return value, grads, grad_y0, ys, self._stats(forward=len(ts) > 1)

    def value_and_grad(self, params, y0, ts, loss) -> ValueAndGrad:
        load_flat(self.field, params)
        y0_t = self._tensor(y0).requires_grad_(True)
        data = self.loss_tensors(loss)
        value, grads, grad_y0, ys, stats = self.value_and_grads(y0_t, ts, data, loss.kernel())
        grad_params = flat_grad(self.field, grads)
        grad_y0 = np.zeros_like(np.asarray(y0)) if grad_y0 is None else grad_y0.detach().cpu().numpy()
        value_f = float(value.detach())
        if not (np.isfinite(value_f) and np.all(np.isfinite(grad_params)) and np.all(np.isfinite(grad_y0))):
            raise non_finite_error("loss or its gradient")
        return ValueAndGrad(value_f, grad_params, grad_y0, stats, ys.detach().cpu().numpy())

    def loss_cotangent(self, ys, loss):
        ys_t = self._tensor(ys).requires_grad_(True)
        (cotangent,) = torch.autograd.grad(loss.kernel()(torch, ys_t, self.loss_tensors(loss)), ys_t)
        return cotangent.cpu().numpy()

    def field_along(self, params, ts, ys):
        load_flat(self.field, params)
        with torch.no_grad():
            return torch.stack([self.field(t, y) for t, y in zip(self._tensor(ts), self._tensor(ys))]).cpu().numpy()

    def make_trainer(self, optimizer, loss_type, *, devices=None):
        """A native training loop (see :class:`pyneuralode.train.Trainer`)."""
        from ._train import TorchTrainer
        refuse_devices(devices, "torch")
        # A program of its own: the trainer's weights live in its module, which model.solve/value_and_grad
        # (which load the flat vector they are given) must not overwrite between steps.
        return TorchTrainer(TorchProgram(self.model, self.device), optimizer, loss_type)


class NativeODE(torch.nn.Module):
    """The torch-native face of a model: ``ode(y0, ts) -> ys`` (shape ``(len(ts), *y0.shape)``), solved by
    torchdiffeq with the model's solver, step control and adjoint — the calls ``model.solve`` makes — and
    differentiable with autograd (``BacksolveAdjoint``: ``odeint_adjoint``).

    - ``vector_field``: the compiled network, an ``nn.Module`` ``f(t, y)``; its parameters are this module's.
    - ``load_params(flat)`` / ``params()``: the canonical flat vector in and out (it starts as the vector
      ``model.native`` was given, ``model.init(0)`` by default).
    - ``stats``: a :class:`pyneuralode.Stats` of the latest call — forward counts after ``ode(y0, ts)``, backward
      ones once you have backpropagated through it — with the meaning ``model.value_and_grad`` gives them.

    ``y0`` and ``ts`` are taken in the model's dtype and on its device (differentiably, ``y0.to(...)``), as the
    JAX ``native()`` and ``model.solve`` take them: a float64 model solves in float64 whatever ``y0``'s dtype (a
    float32 ``y0`` used to run the whole solve in float32, at tolerances float32 cannot meet). Build the model
    with ``dtype="float32"`` for a float32 solve.
    """

    def __init__(self, program: TorchProgram, params):
        super().__init__()
        self.vector_field = program.field
        self._program = program
        self.load_params(params)

    def load_params(self, flat) -> None:
        """Copy the canonical flat vector (numpy or tensor) into the weights, in place."""
        load_flat(self.vector_field, flat)

    def params(self) -> np.ndarray:
        """The current weights as the canonical flat vector (a numpy copy)."""
        return flat_values(self.vector_field)

    def forward(self, y0: torch.Tensor, ts) -> torch.Tensor:
        program = self._program
        y0 = torch.as_tensor(y0).to(dtype=program.dtype, device=program.device)
        ts_t = torch.as_tensor(ts, dtype=program.dtype, device=program.device)
        ts_np = ts_t.detach().cpu().numpy()
        program._check_fixed_grid(ts_np)
        grad = torch.is_grad_enabled()
        program._start(ts_np, count_vjps=grad and not program.backsolve)
        with program._failures():
            ys = program._integrate(y0, ts_t, adjoint=grad and program.backsolve)
        # Every later evaluation is the backward pass of this solve (odeint_adjoint's augmented dynamics).
        program.counter.phase = "backward"
        program.counter.last_output = None
        return ys

    @property
    def stats(self) -> Stats:
        """The counts of the latest call (and of its backward pass, once run)."""
        return self._program._stats()
