"""Ensembles of solves: many parameter sets and/or initial conditions of one model, solved at once.

An ensemble has ``M`` *members*; member ``m`` is one trajectory of the model with its own flat parameters and its
own initial state (DiffEqGPU's and SciML's ``EnsembleProblem`` in pyneuralode's terms). Each member is solved as
if alone: its own adaptive steps, its own statistics, its own failure. One member that reaches ``max_steps`` or
blows up is reported for that member (``ok[m]`` false, ``errors[m]`` the message the single solve would raise,
its ``ys`` NaN) while the others still return.

Backends differ only in *how* the members run: JAX vectorises them with ``jax.vmap`` in one compiled solve and
can shard the member axis over several devices; torch and Julia run them one after another (torchdiffeq steps a
batch with one shared step size, which would change every member's steps, so it cannot batch members exactly).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._errors import SpecError
from ._solution import Stats, counted
from ._validate import as_real_array, check_params, check_state


@dataclasses.dataclass(frozen=True)
class MemberOutcomes:
    """What every ensemble result reports per member: ``nfe_forward``, ``steps_accepted``, ``steps_rejected``
    (``(M,)`` integer arrays, each member's exact counts, 0 for a failed member; ``nfe_forward`` is -1 where the
    solver was told not to count, ``count_evaluations=False``), ``ok`` (``(M,)`` booleans, false
    where the member's solve failed) and ``errors`` (per member, ``None`` or the message of the pyneuralode error
    its solve raised)."""

    nfe_forward: np.ndarray
    steps_accepted: np.ndarray
    steps_rejected: np.ndarray
    ok: np.ndarray
    errors: tuple[str | None, ...]

    @property
    def size(self) -> int:
        """The number of members ``M``."""
        return int(self.ok.shape[0])

    @property
    def stats(self) -> tuple[Stats, ...]:
        """One :class:`pyneuralode.Stats` per member: exactly what the single solve of that member reports."""
        return tuple(Stats(nfe_forward=counted(n), steps_accepted=int(a), steps_rejected=int(r))
                     for n, a, r in zip(self.nfe_forward, self.steps_accepted, self.steps_rejected))

    @staticmethod
    def outcomes(counts, errors) -> dict:
        """The fields from ``counts`` ``(M, 3)`` (NFE, accepted, rejected) and per-member ``errors``; a failed
        member's counts become 0."""
        counts = np.asarray(counts, dtype=np.int64)
        if errors.count(None) == len(errors):  # the common case, without a Python loop over the members
            ok = np.ones(len(errors), dtype=bool)
        else:
            ok = np.array([e is None for e in errors], dtype=bool)
            counts = np.where(ok[:, None], counts, 0)
        return dict(nfe_forward=counts[:, 0], steps_accepted=counts[:, 1], steps_rejected=counts[:, 2], ok=ok,
                    errors=tuple(errors))

    def raise_if_failed(self):
        """Return ``self`` if every member succeeded, else raise the first failure (a SolveError)."""
        from ._errors import SolveError
        bad = np.flatnonzero(~self.ok)
        if bad.size:
            raise SolveError(f"{bad.size} of {self.size} ensemble members failed; member {bad[0]}: "
                             f"{self.errors[bad[0]]}")
        return self


@dataclasses.dataclass(frozen=True)
class EnsembleSolution(MemberOutcomes):
    """The result of ``model.solve_ensemble(params, y0, ts)`` (see ``pn.ODEModel.solve_ensemble``).

    - ``ts``: the save times, shared by every member.
    - ``ys``: ``(M, len(ts), *state)``, read-only like ``Solution.ys``; rows of a failed member are NaN.
    - ``nfe_forward``, ``steps_accepted``, ``steps_rejected``: ``(M,)`` integer arrays, each member's exact counts
      (0 for a failed member); ``stats`` gives them as one :class:`pyneuralode.Stats` per member.
    - ``ok``: ``(M,)`` booleans, false where the member's solve failed.
    - ``errors``: per member, ``None`` or the message of the pyneuralode error its solve raised.
    """

    ts: np.ndarray
    ys: np.ndarray

    @classmethod
    def from_counts(cls, ts, ys, counts, errors) -> EnsembleSolution:
        """Assemble from ``counts`` ``(M, 3)`` (NFE, accepted, rejected) and per-member ``errors``; the rows and
        counts of failed members are set to NaN and 0."""
        fields = cls.outcomes(counts, errors)
        ok = fields["ok"]
        if not ok.all():  # NaN rows for the failed members, in a copy (a backend's buffer may be read-only, as
            ys = np.array(ys)  # model.solve's ys are; copying 200 kB costs more than the rest of the call)
            ys[~ok] = np.nan
        return cls(ts=ts, ys=ys, **fields)


@dataclasses.dataclass(frozen=True)
class EnsembleInputs:
    """Checked ensemble inputs, a shared value kept once: ``params`` is ``(P,)`` when every member shares it
    (``params_shared``), else ``(M, P)``; ``y0`` is one state when shared (``y0_shared``), else ``(M, *state)``.
    A vectorising backend maps only the member axes (JAX: ``in_axes=None`` for a shared value, so a parameter
    sweep does not copy the initial state ``M`` times, nor a sweep over initial states the weights)."""

    params: np.ndarray
    y0: np.ndarray
    members: int
    params_shared: bool
    y0_shared: bool

    def expanded(self) -> tuple[np.ndarray, np.ndarray]:
        """``(params (M, P), y0 (M, *state))``: every member's own row, shared values repeated."""
        p = np.repeat(self.params[None], self.members, axis=0) if self.params_shared else self.params
        y = np.repeat(self.y0[None], self.members, axis=0) if self.y0_shared else self.y0
        return p, y


def ensemble_inputs(params, y0, *, num_params: int, state_shape: tuple[int, ...] | None, dtype: str,
                    pad=None) -> EnsembleInputs:
    """The checked :class:`EnsembleInputs` of ``model.solve_ensemble``.

    ``params`` is one flat vector ``(P,)`` shared by every member or ``(M, P)``; ``y0`` is one state (the field's
    sample shape) shared by every member or ``(M, *state)``. Where both carry a member axis their lengths must
    match. ``pad(y)`` (the model's augmented dimensions) is applied to the checked states.
    """
    p = as_real_array(params, "params", dtype)
    if p.ndim == 1:
        check_params(p, num_params, dtype)
    elif p.ndim == 2:
        if p.shape[1] != num_params:
            raise SpecError(f"ensemble params have {p.shape[1]} parameters per member but this model has "
                            f"{num_params}: pass (P,) or (members, P) rows from model.init().")
    else:
        raise SpecError(f"ensemble params must be (P,) shared or (members, P), got shape {p.shape}.")
    y = as_real_array(y0, "y0", dtype)
    if state_shape is None:  # a field that accepts any sample shape: members are the leading axis iff params say so
        member_y = p.ndim == 2 and y.ndim >= 2
    else:
        check_state(y, state_shape, dtype)
        member_y = y.ndim == len(state_shape) + 1
    sizes = {n for n in ((p.shape[0] if p.ndim == 2 else None), (y.shape[0] if member_y else None)) if n is not None}
    if not sizes:
        raise SpecError("an ensemble needs a member axis: give params of shape (members, P) and/or y0 of shape "
                        "(members, *state).")
    if len(sizes) > 1:
        raise SpecError(f"params have {p.shape[0]} members but y0 has {y.shape[0]}: give both the same number "
                        "of members, or share one of them (params of shape (P,), or y0 of the state's shape "
                        "alone).")
    m = sizes.pop()
    if m < 1:
        raise SpecError("an ensemble needs at least one member.")
    return EnsembleInputs(p, y if pad is None else pad(y), m, params_shared=p.ndim == 1, y0_shared=not member_y)


def loop_ensemble(solve_one, inputs: EnsembleInputs, ts: np.ndarray) -> EnsembleSolution:
    """Solve the members one after another with ``solve_one(params, y0, ts) -> Solution``, catching each
    member's pyneuralode error (the backends that cannot vectorise members exactly use this)."""
    from ._errors import PyNeuralODEError, SpecError as _SpecError
    params, y0 = inputs.expanded()
    ys = np.full((params.shape[0], ts.shape[0], *y0.shape[1:]), np.nan, dtype=y0.dtype)
    counts = np.zeros((params.shape[0], 3), dtype=np.int64)
    errors = []
    for m in range(params.shape[0]):
        try:
            sol = solve_one(params[m], y0[m], ts)
        except _SpecError:
            raise  # a bad option is the caller's, not the member's: it would fail every member the same way
        except PyNeuralODEError as err:
            errors.append(str(err))
            continue
        ys[m] = sol.ys
        counts[m] = sol.stats.forward_row()
        errors.append(None)
    return EnsembleSolution.from_counts(ts, ys, counts, errors)


def refuse_ensemble_devices(devices, backend: str) -> None:
    """``devices=`` shards an ensemble's members over JAX devices; the other backends spread members their own
    way, which the message names."""
    if devices is None or backend == "jax":
        return
    from ._errors import NotSupportedError
    how = {"torch": "backend 'torch' solves the members one after another on the model's device",
           "julia": "backend 'julia' spreads the members over Julia's threads (EnsembleThreads; start Julia with "
                    "threads, e.g. PYTHON_JULIACALL_THREADS=auto)"}.get(backend, f"backend {backend!r} has no "
                                                                         "sharding")
    raise NotSupportedError(f"devices= shards an ensemble over JAX devices, on backend 'jax' only: {how}. Drop "
                            "devices=, or use backend='jax'.")
