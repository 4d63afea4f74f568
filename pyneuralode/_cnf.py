"""``CNF``: a continuous normalizing flow (Chen et al. 2018 §4; FFJORD) defined once, run on any backend.

The flow ``dz/dt = f(t, z)`` carries the standard-normal base density at ``t0`` to the data at ``t1``. By the
instantaneous change of variables, ``d log p(z(t))/dt = -tr(∂f/∂z)``, so

    log p(x) = log N(z(t0); 0, I) - ∫_{t0}^{t1} tr(∂f/∂z(t, z(t))) dt,    z(t1) = x.

Direction (as FFJORD and torchdiffeq's ``cnf.py``): :meth:`CNF.log_prob` integrates the augmented state
``[z, l]`` with ``dl/dt = tr(∂f/∂z)`` *backwards*, from the data ``(x, 0)`` at ``t1`` to ``t0``; then
``l(t0) = -∫_{t0}^{t1} tr`` and ``log p(x) = log N(z(t0)) + l(t0)``. :meth:`CNF.sample` integrates ``z`` forwards
from base draws at ``t0`` to ``t1``. Both backends solve the augmented state as *one* array ``(N, D + 1)``
(``(N, D + 3)`` with regularisation), so the step controller's RMS norm is the same on each.

The trace is exact (``trace="exact"``: one Jacobian of ``f`` over the ``D`` state dimensions per evaluation) or
Hutchinson's estimate ``εᵀ (∂f/∂z) ε`` (``trace="hutchinson"``, one VJP per evaluation) with ``ε`` drawn once per
solve and held fixed through it, as FFJORD does. Pass ``noise=`` to fix ``ε`` yourself, e.g. to compare backends.

NFE: one evaluation of the augmented dynamics (the field plus its trace, plus the regularisers) counts as one
forward evaluation; one VJP of it (or one evaluation of BacksolveAdjoint's adjoint dynamics) as one backward
evaluation — the definitions of :class:`pyneuralode.Stats`, as for :class:`pyneuralode.ODEModel`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np

from ._adjoints import AbstractAdjoint, DirectAdjoint
from ._control import StepControl
from ._errors import NotSupportedError, SpecError
from ._flow_results import Density, FlowValueAndGrad
from ._layers import AbstractLayer
from ._model import ODEModel
from ._nll import NLL
from ._model_base import SpecParameters, check_numerics, check_runtime
from ._solution import Solution
from ._solvers import AbstractSolver, Dopri5
from ._validate import as_real_array, check_params
from .backends._registry import get_backend
from ._options import checked_options

TRACES = ("exact", "hutchinson")
"""How ``tr(∂f/∂z)`` is computed: exactly, or by Hutchinson's estimator with one noise draw per solve."""
NOISES = ("rademacher", "gaussian")
"""Distributions of Hutchinson's ``ε``: ±1 with equal probability (FFJORD's default) or standard normal."""

_PROGRAMS = {"jax": "pyneuralode.backends.jax._cnf:JaxCNFProgram",
             "torch": "pyneuralode.backends.torch._cnf:TorchCNFProgram",
             "julia": "pyneuralode.backends.julia._cnf:JuliaCNFProgram"}


def _check_choice(value, choices, what: str) -> str:
    if value not in choices:
        raise SpecError(f"Unknown {what} {value!r}: choose one of {', '.join(map(repr, choices))}.")
    return value


def _check_time(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value):
        raise SpecError(f"CNF {name} must be a finite number, got {value!r}.")
    return float(value)


@dataclasses.dataclass(frozen=True, eq=False)
class CNF(SpecParameters):
    """A continuous normalizing flow with a standard-normal base density, ready to run on one backend.

    **Arguments** (all but ``field`` keyword-only):

    - ``field``: the network ``f(t, z)`` mapping ``D`` features to ``D`` (e.g. ``pn.MLP([2, 64, 64, 2],
      time_input=True)`` or ``pn.ConcatSquashMLP([2, 64, 64, 2])``).
    - ``t0``, ``t1``: the base density lives at ``t0``, the data at ``t1`` (default 0 and 1).
    - ``trace``: ``"exact"`` (default) or ``"hutchinson"``.
    - ``noise``: Hutchinson's ``ε``: ``"rademacher"`` (default) or ``"gaussian"``.
    - ``noise_seed``: seed of the generator that draws ``ε`` when a call passes none (fresh ``ε`` per call).
    - ``solver``, ``control``, ``adjoint``, ``backend``, ``dtype``, ``device``: as for
      :class:`pyneuralode.ODEModel`. Explicit solvers only (the trace needs exact evaluation counts).
    """

    field: AbstractLayer
    _: dataclasses.KW_ONLY
    t0: float = 0.0
    t1: float = 1.0
    trace: str = "exact"
    noise: str = "rademacher"
    noise_seed: int = 0
    solver: AbstractSolver = dataclasses.field(default_factory=Dopri5)
    control: StepControl = dataclasses.field(default_factory=StepControl)
    adjoint: AbstractAdjoint = dataclasses.field(default_factory=DirectAdjoint)
    backend: str = "jax"
    dtype: str = "float64"
    device: str | None = None

    def __post_init__(self):
        if not isinstance(self.field, AbstractLayer):
            raise SpecError(f"field must be a pyneuralode layer such as pn.MLP([2, 64, 2], time_input=True), got "
                            f"{type(self.field).__name__}.")
        in_shape = self.field.in_shape
        if in_shape is None or len(in_shape) != 1:
            raise SpecError(f"A CNF field maps D features to D features; this field's input shape is {in_shape}: "
                            "use pn.MLP([D, ..., D], time_input=True) or pn.ConcatSquashMLP([D, ..., D]).")
        if tuple(self.field.out_shape(in_shape)) != tuple(in_shape):
            raise SpecError(f"A CNF field must return as many features as it takes: input {in_shape}, output "
                            f"{self.field.out_shape(in_shape)}. Make the last width equal the first.")
        object.__setattr__(self, "t0", _check_time(self.t0, "t0"))
        object.__setattr__(self, "t1", _check_time(self.t1, "t1"))
        if self.t0 == self.t1:
            raise SpecError(f"CNF t0 and t1 must differ, got t0 = t1 = {self.t0}.")
        _check_choice(self.trace, TRACES, "trace")
        _check_choice(self.noise, NOISES, "noise")
        if isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, (int, np.integer)):
            raise SpecError(f"noise_seed must be an integer, got {self.noise_seed!r}.")
        check_runtime(self)
        if self.backend not in _PROGRAMS:
            raise NotSupportedError(f"CNF is not wired for backend {self.backend!r} yet: use backend="
                                    f"{' or '.join(map(repr, _PROGRAMS))}.")
        check_numerics(self)
        if self.solver.stiff:
            raise NotSupportedError(f"CNF runs explicit solvers only, got {self.solver.name}(): use pn.Dopri5(), "
                                    "pn.Tsit5() (JAX, Julia), pn.Bosh3() or a fixed-step method.")
        object.__setattr__(self, "_program", None)
        object.__setattr__(self, "_rng", np.random.default_rng(int(self.noise_seed)))
        object.__setattr__(self, "_sampler", None)

    # ---------------------------------------------------------------- parameters
    @property
    def _param_spec(self):
        return self.field

    @property
    def dim(self) -> int:
        """``D``, the number of features of one data point."""
        return int(self.field.in_shape[0])

    @property
    def program(self):
        """The compiled backend program (compiled on first use and cached)."""
        if self._program is None:
            get_backend(self.backend)  # BackendUnavailable with the install command if missing
            module_name, cls_name = _PROGRAMS[self.backend].split(":")
            program = getattr(importlib.import_module(module_name), cls_name)(self)
            object.__setattr__(self, "_program", program)
        return self._program

    # ---------------------------------------------------------------- inputs
    def _x(self, x, what: str = "x") -> np.ndarray:
        arr = as_real_array(x, what, self.dtype)
        if arr.ndim != 2 or arr.shape[1] != self.dim or arr.shape[0] < 1:
            hint = " (one point? pass x[None])" if arr.shape == (self.dim,) else ""
            raise SpecError(f"{what} must be a batch of shape (N, {self.dim}), got shape {arr.shape}{hint}.")
        return arr

    def draw_noise(self, n: int, seed: int | None = None) -> np.ndarray:
        """Hutchinson noise ``ε`` of shape ``(n, D)`` from this flow's ``noise`` distribution.

        With ``seed`` the draw is ``numpy.random.default_rng(seed)``'s; without, the flow's own generator
        (seeded by ``noise_seed``) advances, so successive calls differ.
        """
        rng = self._rng if seed is None else np.random.default_rng(seed)
        shape = (int(n), self.dim)
        if self.noise == "rademacher":
            eps = rng.integers(0, 2, size=shape) * 2.0 - 1.0
        else:
            eps = rng.standard_normal(shape)
        return eps.astype(self.dtype)

    def _noise(self, noise, x: np.ndarray):
        if self.trace == "exact":
            if noise is not None:
                raise SpecError("noise is only used with trace='hutchinson'; this CNF computes the trace exactly: "
                                "drop noise=, or build the CNF with trace='hutchinson'.")
            return None
        if noise is None:
            return self.draw_noise(x.shape[0])
        eps = as_real_array(noise, "noise", self.dtype)
        if eps.shape != x.shape:
            raise SpecError(f"noise must have the shape of x, {x.shape}, got {eps.shape}: draw it with "
                            "cnf.draw_noise(len(x)).")
        return eps

    # ---------------------------------------------------------------- densities
    @checked_options
    def density(self, params, x, *, noise=None) -> Density:
        """``log p(x)`` for a batch ``x`` of shape ``(N, D)``, with the base points and the solve's counts."""
        params = check_params(params, self.num_params, self.dtype)
        x = self._x(x)
        return self.program.density(params, x, self._noise(noise, x))

    @checked_options
    def log_prob(self, params, x, *, noise=None) -> np.ndarray:
        """``log p(x)``, shape ``(N,)``, for data ``x`` of shape ``(N, D)`` (see :meth:`density`)."""
        return self.density(params, x, noise=noise).log_prob

    def base_log_prob(self, z) -> np.ndarray:
        """``log N(z; 0, I)`` of base points ``z`` (``(N, D)``)."""
        z = np.asarray(z, dtype=np.float64)
        return -0.5 * np.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)

    @checked_options
    def value_and_grad(self, params, x, *, loss: NLL | None = None, noise=None) -> FlowValueAndGrad:
        """The loss (default ``pn.NLL()``) of the batch ``x`` and its gradients w.r.t. ``params`` and ``x``."""
        loss = NLL() if loss is None else loss
        if not isinstance(loss, NLL):
            raise SpecError(f"loss must be pn.NLL(...) for a CNF, got {type(loss).__name__}.")
        params = check_params(params, self.num_params, self.dtype)
        x = self._x(x)
        return self.program.value_and_grad(params, x, self._noise(noise, x), loss)

    # ---------------------------------------------------------------- sampling
    @property
    def sampler(self) -> ODEModel:
        """The plain ODE ``dz/dt = f(t, z)`` (an :class:`pyneuralode.ODEModel`) that carries base points to data."""
        if self._sampler is None:
            object.__setattr__(self, "_sampler", ODEModel(
                self.field, solver=self.solver, control=self.control, adjoint=self.adjoint, backend=self.backend,
                dtype=self.dtype, device=self.device))
        return self._sampler

    def transform(self, params, z) -> Solution:
        """Carry base points ``z`` (``(N, D)``) from ``t0`` to ``t1``: ``sol.ys[-1]`` are the data points."""
        z = self._x(z, "z")
        return self.sampler.solve(params, z, np.array([self.t0, self.t1], dtype=self.dtype))

    def sample(self, params, n: int, seed: int = 0) -> np.ndarray:
        """``n`` samples ``(n, D)``: standard-normal draws from ``numpy.random.default_rng(seed)``, transformed."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise SpecError(f"n must be a positive integer, got {n!r}.")
        z = np.random.default_rng(seed).standard_normal((int(n), self.dim))
        return self.transform(params, z).ys[-1]
