"""The exception types of pyneuralode: one family, the same on every backend.

Every failure a user can cause or meet raises a subclass of :class:`PyNeuralODEError` whose message says what
to do next. Backends translate their native failures (diffrax result codes, torchdiffeq assertions, Julia
return codes) onto these types, so ``except pn.SolveError`` works the same everywhere.
"""

from __future__ import annotations


class PyNeuralODEError(Exception):
    """Base class of every error pyneuralode raises on purpose."""


class SpecError(PyNeuralODEError, ValueError):
    """An invalid network spec, option, or input (shape, dtype, values) — found before any solve starts."""


class NotSupportedError(SpecError):
    """A valid option that the chosen backend cannot run (for example ``Tsit5()`` on torch)."""


class BackendUnavailable(PyNeuralODEError, ImportError):
    """A backend whose optional dependency is not installed or cannot start; the message has the install command."""


class DataError(PyNeuralODEError, RuntimeError):
    """A data set could not be fetched, verified, cached or read; the message says what to do next."""


class RunDirectoryError(PyNeuralODEError, RuntimeError):
    """A training run's directory cannot be used as asked: another live run holds it, it already holds a run
    (without resume or overwrite), it is not a writable directory or the disk is full, or its checkpoint is
    missing or damaged. The message names the path and what to do; the last consistent state is kept."""


class SolveError(PyNeuralODEError, RuntimeError):
    """The solver ran but could not produce a trustworthy answer."""


class MaxStepsError(SolveError):
    """The solver took ``max_steps`` steps before reaching the end of the interval."""


class NonFiniteError(SolveError):
    """The state or its gradient became NaN or infinite during the solve."""


MAX_STEPS_ADVICE = (
    "increase max_steps in pn.StepControl(max_steps=...), loosen rtol/atol, or try a stiff solver such as "
    "pn.Kvaerno5()"
)
NON_FINITE_ADVICE = (
    "the dynamics blew up: lower the learning rate, tighten rtol/atol, use float64, or check the inputs"
)


def max_steps_error(max_steps: int, where: str = "forward solve") -> MaxStepsError:
    """The one wording of the max-steps failure, shared by every backend."""
    return MaxStepsError(f"The {where} reached max_steps={max_steps} before the end of the interval: "
                         f"{MAX_STEPS_ADVICE}.")


def non_finite_error(what: str = "state") -> NonFiniteError:
    """The one wording of the NaN/inf failure, shared by every backend."""
    return NonFiniteError(f"The {what} became NaN or infinite during the solve: {NON_FINITE_ADVICE}.")
