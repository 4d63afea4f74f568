"""What every model built on one spec shares: canonical parameters, copies, and checked numerical options.

``ODEModel``, ``CNF`` and ``Network`` are frozen dataclasses; each names the spec that owns its parameters
(``_param_spec``) and calls the checks below from ``__post_init__``, so the three validate their options with the
same code and the same words.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._adjoints import as_adjoint
from ._control import StepControl, check_atol_shape, check_resolution, check_solver_control
from ._errors import SpecError
from ._options import CheckedOptions
from ._params import init_params, num_params, param_layout
from ._solvers import as_solver
from ._validate import check_dtype
from .backends._registry import entry, require_support

DEVICES = (None, "cpu", "cuda")


def check_runtime(model) -> None:
    """Normalise ``model.dtype`` and check ``model.device`` and ``model.backend`` (in place, frozen-safe)."""
    object.__setattr__(model, "dtype", check_dtype(model.dtype))
    if model.device not in DEVICES:
        raise SpecError(f"device must be None, 'cpu' or 'cuda', got {model.device!r}.")
    entry(model.backend)


def check_numerics(model, *, state_shape=None) -> None:
    """Normalise ``model.solver``/``model.adjoint``, check ``model.control``, and check that the backend runs
    them (a fixed-step solver needs ``StepControl(dt=...)``, an adaptive one refuses it). A per-component ``atol``
    must have ``state_shape`` (``None``: the model has no one state shape, and refuses it)."""
    object.__setattr__(model, "solver", as_solver(model.solver))
    object.__setattr__(model, "adjoint", as_adjoint(model.adjoint))
    if not isinstance(model.control, StepControl):
        raise SpecError(f"control must be a pn.StepControl(...), got {type(model.control).__name__}.")
    require_support(model.backend, solver=model.solver, adjoint=model.adjoint, control=model.control)
    check_solver_control(model.solver, model.control)
    check_atol_shape(model.control, state_shape, f"a pn.{type(model).__name__}")
    if model.solver.adaptive:
        check_resolution("StepControl rtol", model.control.rtol, model.dtype)


class SpecParameters(metaclass=CheckedOptions):
    """Mixin: the canonical flat parameters of the spec named by ``_param_spec``, and ``replace``."""

    @property
    def _param_spec(self):
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """Length of the canonical flat parameter vector."""
        cached = self.__dict__.get("_num_params")  # the spec is frozen: laid out once, not on every solve
        if cached is None:
            cached = num_params(self._param_spec)
            object.__setattr__(self, "_num_params", cached)
        return cached

    def init(self, seed: int = 0) -> np.ndarray:
        """Canonical flat parameters drawn from ``seed`` — identical on every backend."""
        return init_params(self._param_spec, seed, self.dtype)

    def param_layout(self):
        """Where each tensor lives in the flat vector (see :func:`pyneuralode.param_layout`)."""
        return param_layout(self._param_spec)

    def replace(self, **changes):
        """A copy with some settings changed, e.g. ``model.replace(backend="torch")``."""
        return dataclasses.replace(self, **changes)
