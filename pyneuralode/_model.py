"""``ODEModel``: a neural ODE defined once — field, solver, tolerances, gradient method — run on any backend."""

from __future__ import annotations

import dataclasses

import numpy as np

from ._adjoints import AbstractAdjoint, DirectAdjoint
from ._augment import augmented_loss, check_augment, pad_features
from ._control import StepControl
from ._custom_loss import bound_loss_mistake
from ._ensemble import EnsembleSolution, ensemble_inputs, refuse_ensemble_devices
from ._events import (EventEnsembleSolution, EventSolution, check_event_inputs, check_event_sensitivities,
                      open_ended_advice)
from ._errors import SpecError
from ._layers import AbstractLayer, check_state_preserving
from ._losses import AbstractLoss
from ._model_base import SpecParameters, check_numerics, check_runtime
from ._solution import Solution, ValueAndGrad
from ._solvers import AbstractSolver, Dopri5
from ._time_gradient import save_time_gradients
from ._validate import as_real_array, check_params, check_state, check_times
from .backends._registry import get_backend
from ._options import checked_options


@dataclasses.dataclass(frozen=True, eq=False)
class ODEModel(SpecParameters):
    """``dy/dt = field(t, y)`` with its numerical method, ready to solve and differentiate on one backend.

    **Arguments:**

    - ``field``: the network spec (e.g. ``pn.MLP([2, 50, 2], input_transform="cube")``).
    - ``solver``: a solver object such as ``pn.Dopri5()`` (default) or ``pn.Tsit5()``.
    - ``control``: a :class:`pyneuralode.StepControl` (tolerances, step limits); set explicitly for comparisons,
      since the peers' defaults differ.
    - ``adjoint``: how gradients are computed; default ``pn.DirectAdjoint()`` (exact gradients of the discrete
      solve, available on every backend). ``pn.BacksolveAdjoint()`` is the paper's O(1)-memory method.
    - ``backend``: ``"jax"``, ``"torch"`` or ``"julia"``.
    - ``dtype``: ``"float64"`` (default, for comparisons) or ``"float32"`` (fast training). On JAX, a float64
      model runs everything it does inside JAX's ``jax.enable_x64(True)`` context and leaves the process-wide
      ``jax_enable_x64`` flag alone, so your other JAX code keeps its float32 default; only its ``native()``
      object, which runs in your own JAX code, needs x64 on there (it says so if not).
    - ``device``: ``None`` (the backend's default), ``"cpu"`` or ``"cuda"``.
    - ``augment``: ``d > 0`` makes this an augmented neural ODE (Dupont et al. 2019): ``field`` acts on ``n + d``
      features, each solve starts from ``[y0, 0]``, and solutions, losses and ``grad_y0`` see the first ``n``
      features only (see :class:`pyneuralode.Augment` for the layer form). ``native()`` and ``solve_ensemble``
      work on the augmented state (``y0`` of ``n`` features is padded for you).
    """

    field: AbstractLayer
    solver: AbstractSolver = dataclasses.field(default_factory=Dopri5)
    control: StepControl = dataclasses.field(default_factory=StepControl)
    adjoint: AbstractAdjoint = dataclasses.field(default_factory=DirectAdjoint)
    backend: str = "jax"
    dtype: str = "float64"
    device: str | None = None
    augment: int = 0

    def __post_init__(self):
        if not isinstance(self.field, AbstractLayer):
            raise SpecError(f"field must be a pyneuralode layer such as pn.MLP([...]), got "
                            f"{type(self.field).__name__}.")
        object.__setattr__(self, "augment", check_augment(self.augment, self.field))
        if self.field.in_shape is not None:
            check_state_preserving(self.field, self.field.in_shape, "The ODEModel field")
        check_runtime(self)
        check_numerics(self, state_shape=self.field.in_shape)
        object.__setattr__(self, "_program", None)

    @property
    def _param_spec(self):
        return self.field

    # ---------------------------------------------------------------- running
    @property
    def program(self):
        """The compiled backend program (compiled on first use and cached)."""
        if self._program is None:
            object.__setattr__(self, "_program", get_backend(self.backend).compile(self))
        return self._program

    @property
    def state_shape(self) -> tuple[int, ...] | None:
        """The shape of one ``y0`` sample: the field's input shape, less the ``augment`` features."""
        shape = self.field.in_shape
        return shape if not self.augment else (shape[0] - self.augment,)

    def _inputs(self, params, y0, ts):
        params = check_params(params, self.num_params, self.dtype)
        y0 = check_state(y0, self.state_shape, self.dtype)
        ts = check_times(ts, self.dtype)
        return params, y0, ts

    def solve(self, params, y0, ts) -> Solution:
        """Integrate from ``y0`` at ``ts[0]`` and return the states at every time in ``ts``.

        ``y0`` is one sample or a batch (leading axis); ``ts`` is strictly increasing or decreasing.

        **Per-sample times**: ``ts`` of shape ``(batch, T)`` gives each sample of a batched ``y0`` its own save
        times (all starting at the same ``ts[:, 0]``, the time of ``y0``, and running the same way). The batch is
        solved once at the union of the times and each sample's states are read at its own: ``ys`` has shape
        ``(T, batch, *state)`` with ``ys[:, b]`` at ``ts[b]``. Cost: one adaptive solve whose steps the whole
        batch shares (the controller's RMS error norm spans the batch, as for any batched solve, so the steps
        follow the batch's combined error rather than each sample's own); the ``batch * T`` save times cost
        interpolation, not steps. The alternative — ``jax.vmap`` of ``native()`` — gives each sample its own steps,
        but a vectorised while loop runs until its slowest lane finishes. Measured (JAX, CPU, 64 samples x 20
        times, MLP 2-32-2, Dopri5 at 1e-6, value and gradient): union 5.4 ms with 38 forward evaluations, vmap
        3.4 ms with 59 in the slowest lane (``python -m benchmarks.per_sample_times``).
        """
        if np.ndim(ts) == 2:
            return self._solve_per_sample(params, y0, ts)
        params, y0, ts = self._inputs(params, y0, ts)
        if not self.augment:
            return self.program.solve(params, y0, ts)
        sol = self.program.solve(params, pad_features(y0, self.augment), ts)
        return dataclasses.replace(sol, ys=np.ascontiguousarray(sol.ys[..., :y0.shape[-1]]))

    def _per_sample_grid(self, y0, ts):
        """Checked ``(y0, ts, union, index)`` for per-sample times: ``union`` holds every sample's times once, in
        the direction of the solve, and ``index[b, j]`` is the position of ``ts[b, j]`` in it."""
        ts = as_real_array(ts, "ts", self.dtype)
        y0 = check_state(y0, self.state_shape, self.dtype)
        if y0.ndim == len(self.state_shape or y0.shape[-1:]) or y0.shape[0] != ts.shape[0] or ts.shape[1] < 1:
            raise SpecError(f"Per-sample times ts of shape {ts.shape} need a batched y0 with {ts.shape[0]} samples "
                            f"(one row of times per sample), got y0 of shape {y0.shape}.")
        for row in ts:
            check_times(row, self.dtype)
        if np.any(ts[:, 0] != ts[0, 0]):
            raise SpecError("Per-sample times must all start at the time of y0 (ts[:, 0] equal): solve samples with "
                            "other start times separately.")
        forward = ts.shape[1] < 2 or ts[0, 1] > ts[0, 0]
        if ts.shape[1] > 1 and np.any((ts[:, 1] > ts[:, 0]) != forward):
            raise SpecError("Per-sample times must all run the same way (all increasing or all decreasing).")
        union = np.unique(ts) if forward else np.unique(ts)[::-1].copy()
        index = np.searchsorted(union, ts) if forward else union.size - 1 - np.searchsorted(union[::-1], ts)
        return y0, ts, union, index

    @staticmethod
    def _per_sample_states(ys, index):
        """``ys`` saved at the union ``(U, batch, *state)`` -> each sample at its own times ``(T, batch, *state)``."""
        return np.ascontiguousarray(ys[index.T, np.arange(index.shape[0])])

    def _solve_per_sample(self, params, y0, ts) -> Solution:
        y0, ts, union, index = self._per_sample_grid(y0, ts)
        sol = self.solve(params, y0, union)
        return Solution(ts, self._per_sample_states(sol.ys, index), sol.stats)

    def _value_and_grad_per_sample(self, params, y0, ts, loss, grad_ts) -> ValueAndGrad:
        y0, ts, union, index = self._per_sample_grid(y0, ts)
        if not isinstance(loss, AbstractLoss):
            raise SpecError(f"loss must be a pyneuralode loss such as pn.L1(target), {bound_loss_mistake(loss)}")
        loss.check_shape((ts.shape[1], *y0.shape))
        params, _, union = self._inputs(params, y0, union)
        res, per_trajectory = self._value_and_grad(params, y0, union, loss.on_union(index, union.size), grad_ts)
        return dataclasses.replace(
            res, ys=None if res.ys is None else self._per_sample_states(res.ys, index),
            grad_ts=None if per_trajectory is None else per_trajectory[index.T, np.arange(index.shape[0])].T.copy())

    @checked_options
    def value_and_grad(self, params, y0, ts, *, loss: AbstractLoss, grad_ts: bool = False) -> ValueAndGrad:
        """The loss of the solution and its gradients with respect to ``params`` and ``y0``.

        ``grad_ts=True`` also returns ``grad_ts``, the gradient with respect to the save times, shaped like ``ts``:
        ``<∂L/∂y_i, f(t_i, y_i)>`` for each later time, and for ``ts[0]`` that term minus ``<grad_y0, f(t_0, y0)>``
        (moving the start moves every trajectory). It is the derivative of the exact flow on the computed
        solution — what torchdiffeq's ``odeint_adjoint`` returns for ``t`` — the same formula on every backend and
        adjoint; finite differences of an adaptive solve agree with it to about the solver tolerance. It costs one
        more field evaluation per save time (not counted in ``stats``). With per-sample times, ``grad_ts[b]`` is
        sample ``b``'s; their shared start's derivative is the sum of column 0.

        **Per-sample times** (``ts`` of shape ``(batch, T)``, as in :meth:`solve`): the loss's target has shape
        ``(T, batch, *state)``, sample ``b``'s column at its own times ``ts[b]``. The batch is solved once at the
        union of the times, and the loss (a built-in one such as ``pn.MSE``, with or without ``mask=``) is moved
        onto the union with weight 0 wherever a sample has no observation — the union-of-times recipe of the
        latent-ODE papers' code — so the value and gradients are those of the loss on the per-sample states.
        """
        if not isinstance(grad_ts, bool):
            raise SpecError(f"grad_ts must be True or False, not {grad_ts!r}.")
        if np.ndim(ts) == 2:
            return self._value_and_grad_per_sample(params, y0, ts, loss, grad_ts)
        params, y0, ts = self._inputs(params, y0, ts)
        if not isinstance(loss, AbstractLoss):
            raise SpecError(f"loss must be a pyneuralode loss such as pn.L1(target), {bound_loss_mistake(loss)}")
        loss.check_shape((ts.shape[0], *y0.shape))
        res, per_trajectory = self._value_and_grad(params, y0, ts, loss, grad_ts)
        return res if per_trajectory is None else dataclasses.replace(res, grad_ts=per_trajectory.sum(axis=1))

    def _value_and_grad(self, params, y0, ts, loss, grad_ts):
        """``(result, dL/dts per trajectory or None)`` for checked inputs and one shared ``ts``."""
        batched = y0.ndim == len(self.state_shape or y0.shape[-1:]) + 1
        if self.augment:
            y0, loss = pad_features(y0, self.augment), augmented_loss(loss, self.augment)
        res = self.program.value_and_grad(params, y0, ts, loss)
        per_trajectory = (save_time_gradients(self.program, params, ts, res.ys, res.grad_y0, loss, batched=batched)
                          if grad_ts else None)
        if self.augment:
            n = y0.shape[-1] - self.augment
            res = dataclasses.replace(res, grad_y0=np.ascontiguousarray(res.grad_y0[..., :n]),
                                      ys=None if res.ys is None else np.ascontiguousarray(res.ys[..., :n]))
        return res, per_trajectory

    @checked_options
    def solve_ensemble(self, params, y0, ts, *, devices=None) -> EnsembleSolution:
        """Solve many members at once: parameter sweeps, uncertainty quantification, many initial conditions.

        ``params`` is one flat vector shared by all members or ``(members, P)``; ``y0`` is one state shared by all
        members or ``(members, *state)``; ``ts`` is shared. Each member is solved as if alone (its own adaptive
        steps and statistics), and a member that fails is reported in ``ok``/``errors`` while the others still
        return. JAX vectorises the members in one compiled solve; ``devices`` (JAX only: a number of devices, a
        list of ``jax.Device`` or a ``jax.sharding.Mesh``) shards the member axis over several devices. torch
        solves the members one after another (torchdiffeq steps a batch with one shared step size); Julia solves
        them as one SciMLBase ``EnsembleProblem`` with ``EnsembleThreads()``, spread over Julia's threads.
        """
        refuse_ensemble_devices(devices, self.backend)
        inputs = ensemble_inputs(params, y0, num_params=self.num_params, state_shape=self.state_shape,
                                 dtype=self.dtype,
                                 pad=(lambda y: pad_features(y, self.augment)) if self.augment else None)
        ts = check_times(ts, self.dtype)
        return self.program.solve_ensemble(inputs, ts, devices=devices)

    @checked_options
    def solve_event(self, params, y0, *, event, t0, t1, sensitivities: bool = False) -> EventSolution:
        """Solve from ``y0`` at ``t0`` until ``event`` (a :class:`pyneuralode.Event`) happens, or until ``t1``.

        Returns an :class:`pyneuralode.EventSolution`: the event time ``t`` and state ``y`` (located on the
        solver's dense output to near round-off on JAX, by diffrax's Newton root find, and on Julia, by
        OrdinaryDiffEq's ``ContinuousCallback``; to ``atol`` in time on torch, by torchdiffeq's bisection), whether
        it ``occurred``, the forward counts, and with
        ``sensitivities=True`` the derivatives of ``t`` and ``y`` with respect to ``params`` and ``y0``.
        ``y0`` is one sample; the solver must be adaptive. Steps are those of :meth:`solve` over ``[t0, t1]``
        until the step in which the event happens, so the counts compare across backends as for a solve.
        ``t1`` may be ``np.inf`` (or ``-np.inf`` backwards in time): the solve waits for the event, bounded by the
        control's ``max_steps``, as diffrax's ``t1=jnp.inf`` with an event.
        """
        if not isinstance(sensitivities, bool):
            raise SpecError(f"sensitivities must be True or False, not {sensitivities!r}.")
        params = check_params(params, self.num_params, self.dtype)
        y0 = check_state(y0, self.state_shape, self.dtype)
        bound, t0, t1 = check_event_inputs(self, params, y0, event, t0, t1)
        check_event_sensitivities(bound, sensitivities)
        with open_ended_advice(t1):
            return self.program.solve_event(params, y0, t0, t1, bound, sensitivities=sensitivities)

    @checked_options
    def solve_event_ensemble(self, params, y0, *, event, t0, t1, sensitivities: bool = False) -> EventEnsembleSolution:
        """:meth:`solve_event` for many members at once — when does each of many parameter sets or initial
        states meet the event (a distribution of landing times, of times to a threshold)?

        ``params`` and ``y0`` take the member conventions of :meth:`solve_ensemble` (``(P,)`` or ``(M, P)``; one
        state or ``(M, *state)``). Each member is solved as if alone, with its own steps and counts; a member
        whose solve fails is reported in ``ok``/``errors`` while the others return. JAX vectorises the members in
        one compiled solve (``jax.vmap`` of the event solve); torch and Julia solve them one after another.
        ``sensitivities=True`` adds each member's derivatives of its event time and state with respect to its
        ``params`` and ``y0`` (``dt_dparams`` of shape ``(M, P)``, ...), as :meth:`solve_event` gives them for one;
        on JAX the members' reverse-mode passes are vectorised with their solves.
        """
        if not isinstance(sensitivities, bool):
            raise SpecError(f"sensitivities must be True or False, not {sensitivities!r}.")
        inputs = ensemble_inputs(params, y0, num_params=self.num_params, state_shape=self.state_shape,
                                 dtype=self.dtype)
        one_state = inputs.y0 if inputs.y0_shared else inputs.y0[0]
        bound, t0, t1 = check_event_inputs(self, None, one_state, event, t0, t1)  # the event's start: per member
        check_event_sensitivities(bound, sensitivities)
        return self.program.solve_event_ensemble(
            inputs, t0, t1, bound, sensitivities=sensitivities,
            solve_one=lambda p, y: self.solve_event(p, y, event=event, t0=t0, t1=t1, sensitivities=sensitivities))

    @checked_options
    def native(self, params=None):
        """The backend's own object, for embedding this model in your own code, holding its own copy of the
        canonical flat ``params`` (default ``self.init(0)``, the weights every backend starts from):

        - JAX: an equinox module ``ode(y0, ts) -> ys`` (batched ``y0``); ``ode.params`` is the flat vector
          (``ode.with_params(flat)`` replaces it), ``ode.solve(y0, ts)`` also returns the forward counts and
          the gradient of ``ode.probe`` carries the backward ones (see ``NativeODE``). A float64 model needs
          x64 on in your JAX code (``jax.config.update("jax_enable_x64", True)``).
        - torch: a ``torch.nn.Module`` ``ode(y0, ts) -> ys`` solved with this model's solver, tolerances and
          adjoint; ``ode.vector_field`` is ``f(t, y)``, ``ode.load_params(flat)``/``ode.params()`` move the flat
          vector in and out, and ``ode.stats`` has the counts of the latest call (forward, and backward once
          you have backpropagated) with the meaning of :class:`pyneuralode.Stats`.
        - Julia: the ``NeuralField`` ``f(u, p, t)`` with ``params`` loaded (``f.p``).
        """
        params = self.init(0) if params is None else check_params(params, self.num_params, self.dtype)
        return self.program.native(params)
