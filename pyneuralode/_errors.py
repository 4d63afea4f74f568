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


MAX_STEPS_ADVICE = ("increase max_steps in pn.StepControl(max_steps=...)", "loosen rtol/atol")
NON_FINITE_ADVICE = ("lower the learning rate", "tighten rtol/atol", "use float64", "check the inputs")

# Failure kinds of a solve, as every backend classifies them (see pyneuralode._stepwatch for the rule); JAX
# carries them out of compiled code as these integers.
OK, MAX_STEPS, BLOW_UP, STIFF, FAILED = 0, 1, 2, 3, 4


def stiff_hint(solver=None, backend: str | None = None) -> str | None:
    """``"try a stiff solver such as pn.Kvaerno5()"`` adapted to where the user stands, or ``None``.

    No hint when ``solver`` is already stiff; on a backend without stiff solvers, the hint names the backends
    that have one (read from the backend registry, so a newly registered stiff solver is named too). Without a
    solver or backend (callers that do not know them) the generic hint is given.
    """
    if solver is not None and solver.stiff:
        return None
    from ._solvers import SOLVERS
    from .backends._registry import REGISTRY

    def stiff_on(name):
        names = [n for n in SOLVERS if SOLVERS[n].stiff and n in REGISTRY[name].solvers]
        return sorted(names, key=lambda n: (n != "Kvaerno5", n))

    if backend is None or stiff_on(backend):
        example = stiff_on(backend)[0] if backend is not None else "Kvaerno5"
        return f"try a stiff solver such as pn.{example}()"
    others = [name for name in REGISTRY if stiff_on(name)]
    if not others:
        return None
    return (f"try a stiff solver such as pn.{stiff_on(others[0])[0]}() on backend "
            f"{' or '.join(map(repr, others))} (backend {backend!r} has none)")


def backsolve_hint(backend: str | None) -> str:
    """Why BacksolveAdjoint fails on stiff dynamics, and the adjoints of ``backend`` that do not re-solve."""
    from .backends._registry import REGISTRY

    names = ("DirectAdjoint", "CheckpointAdjoint", "InterpolatingAdjoint", "QuadratureAdjoint", "GaussAdjoint")
    have = [n for n in names if backend is None or n in REGISTRY[backend].adjoints]
    return ("BacksolveAdjoint re-solves the state backwards in time, which is unstable for stiff or strongly "
            f"dissipative dynamics: use {' or '.join(f'pn.{n}()' for n in have)}")


def _advice(lead, *phrases) -> str:
    """``"lead; otherwise a, b, or c"`` from the truthy parts (each phrase a string or a tuple of phrases)."""
    flat = [q for p in phrases if p for q in ((p,) if isinstance(p, str) else p)]
    listed = ", ".join(flat[:-1]) + (", or " if len(flat) > 1 else "") + flat[-1]
    return f"{lead}; otherwise {listed}" if lead else listed


def max_steps_error(max_steps: int, where: str = "forward solve", *, solver=None, backend: str | None = None,
                    backsolve: bool = False) -> MaxStepsError:
    """The one wording of the max-steps failure, shared by every backend (``where`` names the solve)."""
    advice = _advice(backsolve and backsolve_hint(backend), MAX_STEPS_ADVICE, stiff_hint(solver, backend))
    return MaxStepsError(f"The {where} reached max_steps={max_steps} before the end of the interval: {advice}.")


def stiff_error(max_steps: int, where: str = "forward solve", *, solver=None, backend: str | None = None,
                backsolve: bool = False) -> MaxStepsError:
    """The solve stopped early because it could not reach the end within ``max_steps`` (see
    :mod:`pyneuralode._stepwatch`): a :class:`MaxStepsError` that comes before the steps are all spent."""
    from ._stepwatch import PATIENCE, STARVATION

    hint = stiff_hint(solver, backend)
    what = (" — the signature of a stiff problem, which explicit solvers cross only in tiny steps, or of a span too "
            "long for max_steps" if hint else "")
    advice = _advice(backsolve and backsolve_hint(backend), hint, MAX_STEPS_ADVICE)
    return MaxStepsError(f"The {where} stopped early: for {PATIENCE} consecutive steps the step size was so small "
                         f"that the rest of the interval would need more than {STARVATION:g} times the steps left "
                         f"of max_steps={max_steps}, while the state stayed bounded{what}: {advice}.")


def fixed_steps_error(steps: float, max_steps: int) -> MaxStepsError:
    """A fixed-step grid longer than ``max_steps``, refused before any step is taken."""
    return MaxStepsError(f"The fixed-step grid needs {steps:.6g} steps, more than max_steps={max_steps}: increase "
                         "dt or max_steps in pn.StepControl(dt=..., max_steps=...).")


def non_finite_error(what: str = "state", where: str = "forward solve", *, backend: str | None = None,
                     backsolve: bool = False) -> NonFiniteError:
    """The one wording of the NaN/inf failure, shared by every backend.

    For the state (``what="state"``) it is the blow-up message: a state that became NaN or infinite and a step
    size that underflowed while the state grew (a finite-time singularity) are one failure, reported alike on
    every backend, because raising ``max_steps`` cannot help either.
    """
    if what != "state":
        return NonFiniteError(f"The {what} became NaN or infinite during the solve: the dynamics blew up: "
                              f"{_advice(None, NON_FINITE_ADVICE)}.")
    advice = _advice(backsolve and backsolve_hint(backend), NON_FINITE_ADVICE[:-1], "shorten the time span",
                     NON_FINITE_ADVICE[-1])
    return NonFiniteError(f"The {where} blew up: the state became NaN or infinite, or grew until the step size "
                          f"underflowed (a finite-time singularity), so raising max_steps cannot help: {advice}.")


def solve_failure(kind: int, *, where: str = "forward solve", max_steps: int, solver=None,
                  backend: str | None = None, backsolve: bool = False) -> SolveError | None:
    """The error of a failure kind (``OK`` gives ``None``), with the words every backend shares."""
    options = dict(backend=backend, backsolve=backsolve)
    if kind == OK:
        return None
    if kind == MAX_STEPS:
        return max_steps_error(max_steps, where, solver=solver, **options)
    if kind == STIFF:
        return stiff_error(max_steps, where, solver=solver, **options)
    if kind == BLOW_UP:
        return non_finite_error("state", where, **options)
    advice = _advice(backsolve and backsolve_hint(backend), "tighten rtol/atol", "check the inputs",
                     stiff_hint(solver, backend))
    return SolveError(f"The {where} failed: {advice}.")


class UnknownOptionError(SpecError, TypeError):
    """A keyword option that the function or constructor does not have (a misspelt name, for example).

    A :class:`SpecError` like every invalid option, and a ``TypeError`` like Python's own unknown-keyword
    failure, so ``except pn.SpecError`` and ``except TypeError`` both catch it."""


def trainer_not_initialised() -> SpecError:
    """The one wording of a training step (or state read) before ``init``, shared by every trainer."""
    return SpecError("This trainer has no parameters yet: call trainer.init(params) first, e.g. "
                     "trainer.init(model.init(seed=0)).")
