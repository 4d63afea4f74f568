"""The contract a backend implements: compile a model once, then solve and differentiate with numpy in/out."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np


class AbstractProgram(abc.ABC):
    """A model compiled for one backend. Inputs arrive validated, as numpy arrays of the model's dtype."""

    @abc.abstractmethod
    def solve(self, params, y0, ts):
        """Return a :class:`pyneuralode.Solution` (numpy ``ys`` of shape ``(len(ts), *y0.shape)``)."""

    @abc.abstractmethod
    def value_and_grad(self, params, y0, ts, loss):
        """Return a :class:`pyneuralode.ValueAndGrad` with gradients in the canonical layout."""

    @abc.abstractmethod
    def loss_cotangent(self, ys, loss):
        """The derivative of ``loss`` with respect to the saved states ``ys`` (numpy, shaped like ``ys``, which
        has the caller's shape: unbatched when ``y0`` was)."""

    @abc.abstractmethod
    def field_along(self, params, ts, ys):
        """``f(ts[i], ys[i])`` at every saved state: ``ys`` batched, ``(len(ts), batch, *state)`` (numpy). These
        evaluations are not part of a solve and are not counted in any :class:`pyneuralode.Stats`."""

    def solve_ensemble(self, inputs, ts, *, devices=None):
        """The members of ``inputs`` (a :class:`pyneuralode._ensemble.EnsembleInputs`) solved one after another
        (backends that vectorise override this). ``devices=`` off JAX is refused by the model
        (:func:`pyneuralode._ensemble.refuse_ensemble_devices`) before any backend sees it."""
        from .._ensemble import loop_ensemble
        return loop_ensemble(self.solve, inputs, ts)

    @property
    def event_time_tolerance(self) -> float:
        """How closely :meth:`locate_event` locates an event time (relative to the times' scale)."""
        return float(np.finfo(self.model.dtype).eps) ** 0.75

    def locate_in_direction(self, params, y0, t0, t1, bound):
        """The event located by :meth:`locate_event`, honouring each condition's direction
        (:func:`pyneuralode._events.locate_in_direction`): ``(t, y, occurred, which, signs, arm, stats)``."""
        from .._events import event_margin, locate_in_direction
        from .._stepwatch import time_scale
        step = float(np.sign(t1 - t0)) * 4.0 * self.event_time_tolerance * max(1.0, time_scale(t0, t1))

        def probe(t, y):  # just past t along the solution (for boolean conditions: see _events.fired)
            f = self.field_along(params, np.array([t], dtype=self.model.dtype),
                                 np.asarray(y, dtype=self.model.dtype)[None, None])[0, 0]
            return t + step, y + step * f
        return locate_in_direction(lambda signs, arm: self.locate_event(params, y0, t0, t1, bound, signs, arm),
                                   bound, params, y0, t0, t1,
                                   event_margin(t0, t1, self.model.dtype, self.event_time_tolerance), probe)

    def solve_event(self, params, y0, t0, t1, bound, *, sensitivities=False):
        """Solve to the first crossing of ``bound`` (a :class:`pyneuralode._events.BoundEvent`) or to ``t1``: the
        backend's :meth:`locate_event` (through :meth:`locate_in_direction`), then, if asked, the sensitivities by
        the implicit function theorem from its :meth:`event_gradient` of the condition that fired and its own
        gradients of the solve to the event time (:func:`pyneuralode._events.implicit_sensitivities`). Backends
        that differentiate through their root find override this."""
        from .._events import EventSolution, implicit_sensitivities
        from .._solution import Stats
        t, y, occurred, which, _, _, stats = self.locate_in_direction(params, y0, t0, t1, bound)
        if not (np.isfinite(t) and np.all(np.isfinite(y))):
            from .._errors import non_finite_error
            raise non_finite_error()
        extra = {}
        if sensitivities:
            gradient = self.event_gradient(bound.component(which), params, t, y) if occurred else None
            extra = implicit_sensitivities(self.model, params, y0, t0, t, y, gradient)
        return EventSolution(t, y, occurred, Stats(**stats, nfe_backward=None if sensitivities else 0),
                             which=which, **extra)

    def solve_event_ensemble(self, inputs, t0, t1, bound, *, solve_one, sensitivities=False):
        """The members of ``inputs`` solved to the event one after another with ``solve_one(params, y0)``
        (the model's checked :meth:`pyneuralode.ODEModel.solve_event`, with ``sensitivities`` if asked); backends
        that vectorise override this."""
        from .._events import loop_event_ensemble
        return loop_event_ensemble(solve_one, inputs, sensitivities=sensitivities)

    def locate_event(self, params, y0, t0, t1, bound, signs, arm):
        """``(t, y, occurred, forward counts as a dict)`` of a solve stopped at the first zero of the combined
        function ``min_i max(σ (arm_i − t), signs_i g_i)`` of ``bound``'s conditions (or at ``t1``)."""
        from .._errors import NotSupportedError
        raise NotSupportedError(f"Terminating events are not available on this backend ({type(self).__name__}).")

    def event_gradient(self, condition, params, t, y):
        """``(∂g/∂t, ∇_y g, ∂g/∂θ)`` of one event condition (a scalar :class:`pyneuralode.Dynamics`) at ``(t, y)``,
        ``∂g/∂θ`` in the canonical layout."""
        from .._errors import NotSupportedError
        raise NotSupportedError(f"Event sensitivities are not available on this backend ({type(self).__name__}).")

    def make_trainer(self, optimizer, loss_type, *, devices=None):
        """A native training loop for :class:`pyneuralode.train.Trainer` (backends that support training)."""
        from .._errors import NotSupportedError
        raise NotSupportedError(f"Training through pn.Trainer is not available on this backend "
                                f"({type(self).__name__}) yet: train on backend='jax' or 'torch'.")

    @abc.abstractmethod
    def native(self, params) -> Any:
        """The backend's own object (JAX callable, ``torch.nn.Module``, Julia callable), holding its own copy of
        the canonical flat ``params`` (validated; ``ODEModel.native`` passes ``init(0)`` by default)."""


def refuse_devices(devices, backend: str) -> None:
    """``devices=`` is JAX sharding; other backends scale out with their own engines (the message says which)."""
    if devices is None:
        return
    from .._errors import NotSupportedError
    how = {"torch": "on torch, wrap model.native() in torch.nn.parallel.DistributedDataParallel and launch "
                    "with torchrun (README, 'Scaling out')"}.get(backend, f"backend {backend!r} trains on one device")
    raise NotSupportedError(f"devices= (data-parallel sharding) is available on backend 'jax' only: {how}.")


class AbstractBackend(abc.ABC):
    """A compiler from pyneuralode specs to one framework."""

    name: ClassVar[str]

    @abc.abstractmethod
    def compile(self, model) -> AbstractProgram:
        """Compile an :class:`pyneuralode.ODEModel` into a program."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Versions and devices, for ``pyneuralode info``."""
