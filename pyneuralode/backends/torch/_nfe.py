"""Exact evaluation and step counts for torchdiffeq solves (identical in meaning to the JAX and Julia counts).

torchdiffeq has no counter; its examples put ``self.nfe += 1`` in ``forward`` (``examples/odenet_mnist.py``),
and it reports steps through the callbacks it looks up on the function (``callback_step``,
``callback_accept_step``, ``callback_reject_step`` and their ``*_adjoint`` twins for the backward solve; see
``_impl/misc.py`` ``_check_inputs`` and ``_impl/adjoint.py``). :class:`CountingField` is that function: it wraps
the compiled field and counts with Python integers, which costs nothing next to an evaluation.

What is counted:

- forward NFE: every call of the field while ``phase == "forward"`` (initial-step selection included);
- BacksolveAdjoint backward NFE: every call during ``phase == "backward"``: torchdiffeq's augmented dynamics
  calls the field exactly once per evaluation (``adjoint.py`` ``augmented_dynamics``);
- DirectAdjoint backward NFE: vector-field VJPs actually executed by autograd. Each forward output that requires
  grad gets a tensor hook; autograd runs the hook exactly when it computes that output's cotangent, i.e. when it
  executes that evaluation's VJP. Evaluations that do not reach the loss (rejected steps, the initial-step probe)
  run no VJP and are not counted.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._stepwatch import StepWatch


class StepLimitExceeded(Exception):
    """Raised from a solver callback when a solve attempts more than ``max_steps`` steps."""


class SolveStopped(Exception):
    """Raised from a solver callback when :class:`pyneuralode._stepwatch.StepWatch` sees a blow-up or stiffness
    (``kind`` is ``"blow_up"`` or ``"stiff"``; ``backward`` says which solve)."""

    def __init__(self, kind: str, backward: bool):
        super().__init__(kind)
        self.kind, self.backward = kind, backward


class CountingField(torch.nn.Module):
    """``forward(t, y) = field(t, y)``, counting evaluations, VJPs and steps, and enforcing ``max_steps``.

    ``max_steps`` bounds the forward solve's attempted steps (accepted + rejected) over the whole solve, the
    meaning of diffrax's ``max_steps`` (torchdiffeq's ``max_num_steps`` counts per output interval).
    """

    def __init__(self, field: torch.nn.Module, *, max_steps: int):
        super().__init__()
        self.field = field
        self.max_steps = max_steps
        self.reset()

    def reset(self, *, count_vjps: bool = False) -> None:
        """Zero every counter; ``count_vjps`` hooks each differentiable output (DirectAdjoint)."""
        self.phase = "forward"
        self.count_vjps = count_vjps
        self.nfe_forward = 0
        self.nfe_backward = 0
        self.vjps = 0
        self.steps_attempted = 0
        self.steps_accepted = 0
        self.steps_rejected = 0
        self.backward_steps_attempted = 0
        self.backward_steps_accepted = 0
        self.backward_steps_rejected = 0
        self.last_output = None

    def forward(self, t, y):
        out = self.field(t, y)
        if self.phase == "forward":
            self.nfe_forward += 1
            if self.count_vjps and out.requires_grad:
                out.register_hook(self._count_vjp)
        else:
            self.nfe_backward += 1
        self.last_output = out
        return out

    def _count_vjp(self, grad):
        self.vjps += 1

    # torchdiffeq callback of every solver, once per attempted step (fixed-grid solvers: once per step).
    def callback_step(self, t0, y0, dt):
        self.steps_attempted += 1
        if self.steps_attempted > self.max_steps:
            raise StepLimitExceeded()

    def callback_step_adjoint(self, t0, y0, dt):
        self.backward_steps_attempted += 1


class AdaptiveCountingField(CountingField):
    """:class:`CountingField` plus the accepted/rejected-step callbacks of torchdiffeq's adaptive solvers.

    Kept apart because torchdiffeq warns when a fixed-grid solver is handed callbacks it never calls.

    After :meth:`watch` it also applies :mod:`pyneuralode._stepwatch`'s rule to every attempted step, forward
    over the whole solve and backward per save interval (torchdiffeq solves the adjoint interval by interval),
    and stops the solve with :class:`SolveStopped`.
    """

    def watch(self, ts: np.ndarray, *, atol: float, dtype: str, stalls: bool = True) -> None:
        """Watch the next solve over save times ``ts`` (until the next :meth:`reset`); ``stalls=False`` keeps the
        blow-up test only (an event solve, whose end is a bound)."""
        self._watch_config = dict(max_steps=self.max_steps, atol=atol, dtype=dtype)
        self._ts = np.asarray(ts, dtype=np.float64)
        self._forward_watch = StepWatch(t_end=self._ts[-1], stalls=stalls, **self._watch_config)
        self._backward_watch = None

    def reset(self, **kwargs) -> None:
        super().reset(**kwargs)
        self._forward_watch = self._backward_watch = None

    @staticmethod
    def _check(watch: StepWatch, t0, y0, dt, *, backward: bool) -> None:
        parts = y0 if isinstance(y0, (tuple, list)) else (y0,)  # the backward solve's state is a tuple
        kind = watch.check(float(t0), float(dt),
                           lambda: max(float(p.detach().abs().max()) for p in parts if p.numel()))
        if kind is not None:
            raise SolveStopped(kind, backward)

    def callback_step(self, t0, y0, dt):
        super().callback_step(t0, y0, dt)
        if self._forward_watch is not None:
            self._check(self._forward_watch, t0, y0, dt, backward=False)

    def callback_step_adjoint(self, t0, y0, dt):
        super().callback_step_adjoint(t0, y0, dt)
        if self._forward_watch is None:
            return
        # The backward solve of the interval holding t ends at the save time just before t (in forward order).
        direction = 1.0 if self._ts[-1] > self._ts[0] else -1.0
        index = max(0, int(np.searchsorted(direction * self._ts, direction * float(t0), side="left")) - 1)
        end = self._ts[index]
        if self._backward_watch is None or self._backward_watch.t_end != end:
            self._backward_watch = StepWatch(t_end=end, **self._watch_config)
        self._check(self._backward_watch, t0, y0, dt, backward=True)

    def callback_accept_step(self, t0, y0, dt):
        self.steps_accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.steps_rejected += 1

    # ... and of the backward (adjoint) solve; its step limit is torchdiffeq's own per-interval max_num_steps,
    # which matches diffrax's per-interval backward solves.
    def callback_accept_step_adjoint(self, t0, y0, dt):
        self.backward_steps_accepted += 1

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self.backward_steps_rejected += 1


def counting_field(field: torch.nn.Module, solver, control) -> CountingField:
    """``field`` wrapped in the counter for ``solver`` (one that also counts accepted and rejected steps for an
    adaptive solver), stopping a solve after ``control.max_steps`` steps."""
    counter_cls = AdaptiveCountingField if solver.adaptive else CountingField
    return counter_cls(field, max_steps=control.max_steps)


def forward_counts(counter: CountingField, *, adaptive: bool) -> dict:
    """The forward solve's evaluations and steps since ``counter``'s last reset (a fixed-step solver accepts every
    step it attempts)."""
    accepted = counter.steps_accepted if adaptive else counter.steps_attempted
    return {"nfe_forward": counter.nfe_forward, "steps_accepted": accepted, "steps_rejected": counter.steps_rejected}


def backward_counts(counter: CountingField, *, adaptive: bool, backsolve: bool) -> dict:
    """The backward pass's evaluations (the adjoint solve's with ``backsolve``, else the vector-Jacobian products
    of backpropagation) and steps since ``counter``'s last reset."""
    accepted = counter.backward_steps_accepted if adaptive else counter.backward_steps_attempted
    return {"nfe_backward": counter.nfe_backward if backsolve else counter.vjps,
            "backward_steps_accepted": accepted, "backward_steps_rejected": counter.backward_steps_rejected}
