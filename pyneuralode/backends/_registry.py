"""Which backends exist, what each supports, how to install it — knowledge that needs no framework import.

A backend module is imported only when a model first uses it (``get_backend``); before that, a missing
dependency is detected with ``importlib.util.find_spec`` (as diffrax's ``TqdmProgressMeter`` does) so the error
names the install command instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from functools import lru_cache

from .._adjoints import AbstractAdjoint
from .._errors import BackendUnavailable, NotSupportedError, SpecError
from .._solvers import AbstractSolver


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One option value a backend cannot honour although it offers the option's type (checked at model creation)."""

    option: str  # the solver/adjoint type name, e.g. "BacksolveAdjoint"
    field: str  # its attribute
    value: object  # the refused value
    reason: str  # what to do instead, appended to the error


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    """Static facts about one backend."""

    name: str
    target: str  # "module:Class"
    requires: tuple[str, ...]  # importable top-level modules
    install: str
    solvers: frozenset[str]
    adjoints: frozenset[str]
    refusals: tuple[Refusal, ...] = ()
    controllers: frozenset[str] = frozenset({"integral"})  # StepControl.controller kinds it runs
    component_atol: bool = True  # whether it takes a per-component StepControl atol


_COMMON_SOLVERS = {"Euler", "Midpoint", "Heun", "RK4", "Bosh3", "Dopri5", "Tsit5", "Dopri8"}
_SDIRK = {"ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5", "KenCarp3", "KenCarp4", "KenCarp5"}
"""Implicit Runge–Kutta methods both diffrax and OrdinaryDiffEqSDIRK have (KenCarp: the implicit tableau on the
whole field)."""

_ENTRIES = (
    BackendEntry(
        "jax", "pyneuralode.backends.jax:JaxBackend", ("jax", "diffrax", "equinox", "optax"),
        'pip install "pyneuralode[jax]"',
        frozenset(_COMMON_SOLVERS | _SDIRK),
        frozenset({"BacksolveAdjoint", "CheckpointAdjoint", "DirectAdjoint"}),
        controllers=frozenset({"integral", "PI"})),  # diffrax's PIDController
    BackendEntry(
        "torch", "pyneuralode.backends.torch:TorchBackend", ("torch", "torchdiffeq"),
        'pip install "pyneuralode[torch]"',
        frozenset(_COMMON_SOLVERS),
        frozenset({"BacksolveAdjoint", "DirectAdjoint"})),
    BackendEntry(
        "julia", "pyneuralode.backends.julia:JuliaBackend", ("juliacall",),
        'pip install "pyneuralode[julia]" (then Julia 1.10+ via juliaup, or point PYTHON_JULIAPKG_EXE at one)',
        frozenset(_COMMON_SOLVERS | _SDIRK | {"Vern7", "Rodas5P", "QNDF", "FBDF"}),
        frozenset({"BacksolveAdjoint", "DirectAdjoint", "InterpolatingAdjoint", "QuadratureAdjoint",
                   "GaussAdjoint"}),
        refusals=(Refusal("BacksolveAdjoint", "seminorm", True,
                          "SciMLSensitivity has no seminorm option; use seminorm=False, or backend 'jax'/'torch'"),),
        component_atol=False),  # OrdinaryDiffEq takes a vector abstol, but of the batched (D, B) state: not wired
)
REGISTRY: dict[str, BackendEntry] = {e.name: e for e in _ENTRIES}
BACKEND_NAMES: tuple[str, ...] = tuple(REGISTRY)


def entry(name: str) -> BackendEntry:
    """The registry entry of ``name``, or a SpecError listing the valid names."""
    if name not in REGISTRY:
        raise SpecError(f"Unknown backend {name!r}: choose one of {', '.join(map(repr, BACKEND_NAMES))}.")
    return REGISTRY[name]


def missing_modules(name: str) -> list[str]:
    """Required modules of backend ``name`` that are not importable (checked without importing them)."""
    return [m for m in entry(name).requires if importlib.util.find_spec(m) is None]


def _backends_with(kind: str, option_name: str) -> list[str]:
    return [e.name for e in _ENTRIES if option_name in getattr(e, kind)]


def require_support(backend: str, *, solver: AbstractSolver | None = None,
                    adjoint: AbstractAdjoint | None = None, control=None) -> None:
    """Raise NotSupportedError if ``backend`` cannot run ``solver``/``adjoint`` or the step-size controller of the
    StepControl ``control``, naming the backends that can."""
    e = entry(backend)
    if control is not None and control.controller not in e.controllers:
        others = _backends_with("controllers", control.controller)
        raise NotSupportedError(
            f"StepControl(pcoeff={control.pcoeff:g}, icoeff={control.icoeff:g}) (a {control.controller} step-size "
            f"controller) is not available on backend {backend!r}: use backend={' or '.join(map(repr, others))}, "
            "or leave pcoeff=0, icoeff=1 (the integral controller every backend shares; torchdiffeq has only "
            "that one, and the Julia backend does not pass another to OrdinaryDiffEq yet).")
    if control is not None and control.per_component_atol and not e.component_atol:
        others = [x.name for x in _ENTRIES if x.component_atol]
        raise NotSupportedError(f"A per-component StepControl atol is not available on backend {backend!r} yet: "
                                f"use backend={' or '.join(map(repr, others))}, or one atol for all components.")
    for kind, option in (("solvers", solver), ("adjoints", adjoint)):
        if option is None:
            continue
        if option.name not in getattr(e, kind):
            others = _backends_with(kind, option.name)
            where = (f"use backend={' or '.join(map(repr, others))}" if others else "no backend has it yet")
            raise NotSupportedError(f"{option.name}() is not available on backend {backend!r}: {where}, or choose "
                                    f"one of {', '.join(sorted(getattr(e, kind)))} on {backend!r}.")
        for refusal in e.refusals:
            if refusal.option == option.name and getattr(option, refusal.field, None) == refusal.value:
                raise NotSupportedError(f"{option.name}({refusal.field}={refusal.value!r}) is not available on "
                                        f"backend {backend!r}: {refusal.reason}.")


@lru_cache(maxsize=None)
def get_backend(name: str):
    """Import and instantiate backend ``name`` (cached), or raise BackendUnavailable with the install command."""
    e = entry(name)
    missing = missing_modules(name)
    if missing:
        raise BackendUnavailable(f"Backend {name!r} needs {', '.join(missing)}, which is not installed: "
                                 f"{e.install}.")
    module_name, cls_name = e.target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)()


def backend_info(name: str) -> dict:
    """Installed or not, versions and devices of one backend — for ``pyneuralode info`` and ``pn.compare``."""
    e = entry(name)
    missing = missing_modules(name)
    info = {"backend": name, "installed": not missing, "install": e.install, "missing": missing}
    if not missing:
        try:
            info.update(get_backend(name).describe())
        except BackendUnavailable as err:  # installed but cannot start (e.g. Julia itself missing)
            info.update(installed=False, error=str(err))
    return info
