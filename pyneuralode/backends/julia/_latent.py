"""A :class:`pyneuralode.LatentODE` compiled for Julia: PyNeuralODEJL's ``LatentModel`` (``julia/src/latent.jl``).

The four parts (encoder cell, posterior head, latent field, decoder) are described with the same
:func:`._program.describe_spec` an ODE model's field is (``pn.RNNCell`` expands to ``Linear`` + ``Activation``),
each built as a ``NeuralField`` with its own canonical <-> Lux layout map; the flat vector is split in the canonical
order (:func:`latent_parts`). The latent solve uses the model's solver, step control and adjoint mapped exactly as
for an ODE model (:func:`._program.julia_options`); ε is passed in from Python, so every backend reads the same
noise. Arrays cross as transposes: ``x`` ``(B, T, D)`` -> ``(D, B, T)``, ``ε`` and the posterior ``(B, L)`` <->
``(L, B)``, predictions ``(D, B, T)`` -> ``(B, T, D)``.

This file never imports juliacall: the Julia module arrives from :func:`._runtime.start` (or as an argument).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from ..._control import fixed_step_grid
from ..._dynamics import Dynamics
from ..._errors import NotSupportedError, non_finite_error
from ..._latent import LatentValueAndGrad
from ..._params import num_params
from ..._solution import Stats
from ._program import _check_backward_warnings, _status_error, _to_numpy, cpu_only_options, describe_spec


@dataclasses.dataclass(frozen=True)
class LatentPart:
    """One part of the latent model as Julia receives it: its name, spec description and canonical slice."""

    name: str
    description: str
    start: int
    stop: int


def latent_parts(model) -> tuple[LatentPart, ...]:
    """The four parts (encoder, head, field, decoder) in canonical order with their descriptions and slices of the
    flat parameter vector (the layout ``build_latent`` in julia/src/latent.jl splits by)."""
    parts, offset = [], 0
    for name, part in zip(model.parts.NAMES, model.parts.parts):
        if isinstance(part, Dynamics):
            raise NotSupportedError(f"pn.dynamics as the LatentODE {name} is not available on backend 'julia' yet: "
                                    "use a layer spec (e.g. pn.MLP), or backend='jax'/'torch'.")
        n = num_params(part)
        parts.append(LatentPart(name, describe_spec(part), offset, offset + n))
        offset += n
    return tuple(parts)


def latent_options(model) -> dict:
    """``solve_options`` keywords for the latent solve (the model's solver, step control and adjoint)."""
    return cpu_only_options(model, "pn.LatentODE")


class JuliaLatentProgram:
    """The Julia program of one :class:`pyneuralode.LatentODE`; numpy in and out."""

    def __init__(self, model, module=None):
        from ._runtime import start

        self.model = model
        self._dtype = model.dtype
        self.parts = latent_parts(model)
        self._options = latent_options(model)
        self._reversediff = self._options["sensealg"] == "reversediff"
        self._fixed_dt = None if model.solver.adaptive else model.control.dt
        self._module = start() if module is None else module
        self._opts = self._call(self._module.solve_options, **self._options)
        self._latent = self._call(self._module.build_latent, *(p.description for p in self.parts),
                                  np.zeros(self.parts[-1].stop, dtype=self._dtype), latent=model.latent_dim,
                                  hidden=model.rnn_hidden, noise_std=float(model.noise_std), dtype=self._dtype)

    @staticmethod
    def _call(fn, *args, **kwargs):
        from ._program import JuliaProgram

        return JuliaProgram._call(fn, *args, **kwargs)

    def native(self):
        """The Julia ``PyNeuralODEJL.LatentModel`` (its ``field`` is the latent ``NeuralField``)."""
        return self._latent

    def _load(self, params, ts, x, mask):
        """Load ``params``; the batch as Julia reads it: ``ts``, ``x`` ``(D, B, T)``, ``mask`` ``(B, T)``."""
        self._call(self._module.set_latent_params_b, self._latent, np.asarray(params, dtype=self._dtype))
        return ts, np.asarray(x, dtype=self._dtype).transpose(2, 0, 1), np.asarray(mask, dtype=bool)

    def _check_grid(self, ts) -> None:
        if self._fixed_dt is not None and ts.shape[0] > 1:  # MaxStepsError before Julia runs, as for an ODE model
            fixed_step_grid(ts, self._fixed_dt, self.model.control.max_steps)

    def _raise_forward(self, status, text, where="forward solve") -> None:
        error = _status_error(status, where, self.model, text)
        if error is not None:
            raise error
        if text:
            warnings.warn(f"Julia ({where}): {text}", RuntimeWarning, stacklevel=4)

    def get_params(self) -> np.ndarray:
        """The canonical flat parameters the Julia parts hold (layout round trip)."""
        return np.asarray(_to_numpy(self._call(self._module.get_latent_params, self._latent)), dtype=self._dtype)

    def encode(self, params, ts, x, mask):
        mean, log_var = self._call(self._module.latent_encode, self._latent, *self._load(params, ts, x, mask))
        return (np.ascontiguousarray(_to_numpy(mean).T, dtype=self._dtype),
                np.ascontiguousarray(_to_numpy(log_var).T, dtype=self._dtype))

    def predict(self, params, ts, x, mask, pred_ts, eps):
        self._check_grid(pred_ts)
        (pred, _nfe, _nf, _accepted, _rejected, _njacs, status, text) = self._call(
            self._module.latent_predict, self._latent, self._opts, *self._load(params, ts, x, mask), pred_ts,
            np.asarray(eps, dtype=self._dtype).T)
        self._raise_forward(str(status), str(text))
        out = np.ascontiguousarray(_to_numpy(pred).transpose(1, 2, 0), dtype=self._dtype)  # (B, T, D)
        if not np.all(np.isfinite(out)):
            raise non_finite_error("prediction")
        return out

    def value_and_grad(self, params, ts, x, mask, eps) -> LatentValueAndGrad:
        self._check_grid(ts)
        (value, ll, kl, grad, nfe_f, _nf, accepted, rejected, _njacs, status, text, nfe_b, text_b) = self._call(
            self._module.latent_value_and_grad, self._latent, self._opts, *self._load(params, ts, x, mask),
            np.asarray(eps, dtype=self._dtype).T)
        self._raise_forward(str(status), str(text))
        _check_backward_warnings(str(text_b), self.model)
        nfe_b = int(nfe_b)
        if self._reversediff and nfe_b == 0 and ts.shape[0] > 1:
            nfe_b = int(nfe_f)  # ReverseDiffAdjoint replays its tape: one VJP per recorded field call
        out = LatentValueAndGrad(float(value), np.asarray(_to_numpy(grad), dtype=self._dtype),
                                 np.asarray(_to_numpy(ll), dtype=self._dtype),
                                 np.asarray(_to_numpy(kl), dtype=self._dtype),
                                 Stats(nfe_forward=int(nfe_f), nfe_backward=nfe_b, steps_accepted=int(accepted),
                                       steps_rejected=int(rejected)))
        if not (np.isfinite(out.value) and np.all(np.isfinite(out.grad_params))):
            raise non_finite_error("loss or its gradient")
        return out
