"""``ODEModel``: a neural ODE defined once — field, solver, tolerances, gradient method — run on any backend."""

from __future__ import annotations

import dataclasses


from ._adjoints import AbstractAdjoint, DirectAdjoint
from ._control import StepControl
from ._ensemble import EnsembleSolution, ensemble_inputs
from ._errors import SpecError
from ._layers import AbstractLayer
from ._losses import AbstractLoss
from ._model_base import SpecParameters, check_numerics, check_runtime
from ._solution import Solution, ValueAndGrad
from ._solvers import AbstractSolver, Dopri5
from ._validate import check_params, check_state, check_times
from .backends._registry import get_backend


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
    - ``dtype``: ``"float64"`` (default, for comparisons) or ``"float32"`` (fast training). On JAX, float64 turns
      on ``jax_enable_x64`` when the model is compiled.
    - ``device``: ``None`` (the backend's default), ``"cpu"`` or ``"cuda"``.
    """

    field: AbstractLayer
    solver: AbstractSolver = dataclasses.field(default_factory=Dopri5)
    control: StepControl = dataclasses.field(default_factory=StepControl)
    adjoint: AbstractAdjoint = dataclasses.field(default_factory=DirectAdjoint)
    backend: str = "jax"
    dtype: str = "float64"
    device: str | None = None

    def __post_init__(self):
        if not isinstance(self.field, AbstractLayer):
            raise SpecError(f"field must be a pyneuralode layer such as pn.MLP([...]), got "
                            f"{type(self.field).__name__}.")
        check_runtime(self)
        check_numerics(self)
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

    def _inputs(self, params, y0, ts):
        params = check_params(params, self.num_params, self.dtype)
        y0 = check_state(y0, self.field.in_shape, self.dtype)
        ts = check_times(ts, self.dtype)
        return params, y0, ts

    def solve(self, params, y0, ts) -> Solution:
        """Integrate from ``y0`` at ``ts[0]`` and return the states at every time in ``ts``.

        ``y0`` is one sample or a batch (leading axis); ``ts`` is strictly increasing or decreasing.
        """
        params, y0, ts = self._inputs(params, y0, ts)
        return self.program.solve(params, y0, ts)

    def value_and_grad(self, params, y0, ts, *, loss: AbstractLoss) -> ValueAndGrad:
        """The loss of the solution and its gradients with respect to ``params`` and ``y0``."""
        params, y0, ts = self._inputs(params, y0, ts)
        if not isinstance(loss, AbstractLoss):
            raise SpecError(f"loss must be a pyneuralode loss such as pn.L1(target), got {type(loss).__name__}.")
        loss.check_shape((ts.shape[0], *y0.shape))
        return self.program.value_and_grad(params, y0, ts, loss)

    def solve_ensemble(self, params, y0, ts, *, devices=None) -> EnsembleSolution:
        """Solve many members at once: parameter sweeps, uncertainty quantification, many initial conditions.

        ``params`` is one flat vector shared by all members or ``(members, P)``; ``y0`` is one state shared by all
        members or ``(members, *state)``; ``ts`` is shared. Each member is solved as if alone (its own adaptive
        steps and statistics), and a member that fails is reported in ``ok``/``errors`` while the others still
        return. JAX vectorises the members in one compiled solve; ``devices`` (JAX only: a number of devices, a
        list of ``jax.Device`` or a ``jax.sharding.Mesh``) shards the member axis over several devices. torch and
        Julia solve the members one after another.
        """
        params, y0 = ensemble_inputs(params, y0, num_params=self.num_params, state_shape=self.field.in_shape,
                                     dtype=self.dtype)
        ts = check_times(ts, self.dtype)
        return self.program.solve_ensemble(params, y0, ts, devices=devices)

    def native(self):
        """The backend's own object, for embedding in user code (see the backend's docs for its signature)."""
        return self.program.native()
