"""A :class:`pyneuralode.CNF` compiled for Julia: PyNeuralODEJL's own augmented dynamics (``julia/src/cnf.jl``).

The field is the same ``NeuralField`` an ODE model builds (Lux layers, canonical layout map); the augmented state
``[z; l (; kinetic; jacobian)]`` is one ``(D + 1 (+ 2), B)`` array, the transpose of the JAX/torch layout. The
trace comes from forward-mode directional derivatives written as plain array code, which SciMLSensitivity's
VJPs then differentiate: exact (the ``D`` basis directions) or Hutchinson with the caller's fixed ``ε`` (one
direction; the ``D`` basis directions when the Jacobian regulariser needs ``εᵀ ∂f/∂z``). Gradients go through
the CNF's adjoint mapped exactly as for an ODE model (:func:`._program.julia_options`).

This file never imports juliacall: the Julia module arrives from :func:`._runtime.start`.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..._errors import non_finite_error
from ..._flow_results import Density, FlowValueAndGrad
from ..._params import num_params
from ..._solution import Stats
from ._program import _check_backward_warnings, _status_error, _to_numpy, cpu_only_options, describe_spec


def cnf_options(cnf) -> dict:
    """``solve_options`` keywords for the CNF's solve (its solver, step control and adjoint)."""
    return cpu_only_options(cnf, "CNF")


class JuliaCNFProgram:
    """The Julia program of one :class:`pyneuralode.CNF`; numpy in and out."""

    def __init__(self, cnf, module=None):
        from ._runtime import start

        self.cnf = cnf
        self.dim = cnf.dim
        self._dtype = cnf.dtype
        self._n = num_params(cnf.field)
        self._description = describe_spec(cnf.field)
        self._options = cnf_options(cnf)
        self._max_steps = cnf.control.max_steps
        self._reversediff = self._options["sensealg"] == "reversediff"
        self._module = start() if module is None else module
        self._opts = self._call(self._module.solve_options, **self._options)
        self._field = self._call(self._module.build_field, self._description, np.zeros(self._n, dtype=self._dtype),
                                 dtype=self._dtype, device="cpu")
        self._ts = np.array([cnf.t1, cnf.t0], dtype=self._dtype)  # data -> base

    @staticmethod
    def _call(fn, *args, **kwargs):
        from ._program import JuliaProgram

        return JuliaProgram._call(fn, *args, **kwargs)

    def native(self):
        """The Julia ``NeuralField`` of the flow's field (``f(u, p, t)``, ``u`` of shape ``(D, B)``)."""
        return self._field

    def _inputs(self, params, x, eps):
        self._call(self._module.set_params_b, self._field, np.asarray(params, dtype=self._dtype))
        noise = np.zeros_like(x) if eps is None else np.asarray(eps, dtype=self._dtype)
        return x.T, noise.T, eps is not None

    def _raise_forward(self, status, text) -> None:
        error = _status_error(status, "CNF solve", self.cnf, text)
        if error is not None:
            raise error
        if text:
            warnings.warn(f"Julia (CNF solve): {text}", RuntimeWarning, stacklevel=4)

    def density(self, params, x, eps) -> Density:
        xt, noise, hutchinson = self._inputs(params, x, eps)
        (logp, z, delta, nfe, _nf, accepted, rejected, _njacs, status, text) = self._call(
            self._module.cnf_density, self._field, self._opts, xt, noise, self._ts, hutchinson=hutchinson)
        self._raise_forward(str(status), str(text))
        logp = np.asarray(_to_numpy(logp), dtype=self._dtype)
        z = np.ascontiguousarray(_to_numpy(z).T, dtype=self._dtype)
        delta = np.asarray(_to_numpy(delta), dtype=self._dtype)
        if not (np.all(np.isfinite(logp)) and np.all(np.isfinite(z))):
            raise non_finite_error()
        return Density(logp, z, delta, Stats(nfe_forward=int(nfe), steps_accepted=int(accepted),
                                             steps_rejected=int(rejected)))

    def value_and_grad(self, params, x, eps, loss) -> FlowValueAndGrad:
        xt, noise, hutchinson = self._inputs(params, x, eps)
        (value, nll, kinetic, jacobian, grad_p, grad_x, nfe_f, _nf, accepted, rejected, _njacs, status, text,
         nfe_b, text_b) = self._call(self._module.cnf_value_and_grad, self._field, self._opts, xt, noise, self._ts,
                                     hutchinson=hutchinson, kinetic=float(loss.kinetic),
                                     jacobian=float(loss.jacobian))
        self._raise_forward(str(status), str(text))
        _check_backward_warnings(str(text_b), self.cnf)
        grad_params = np.asarray(_to_numpy(grad_p), dtype=self._dtype)
        grad_x = np.ascontiguousarray(_to_numpy(grad_x).T, dtype=self._dtype)
        value = float(value)
        if not (np.isfinite(value) and np.all(np.isfinite(grad_params)) and np.all(np.isfinite(grad_x))):
            raise non_finite_error("loss or its gradient")
        nfe_b = int(nfe_b)
        if self._reversediff and nfe_b == 0:
            nfe_b = int(nfe_f)  # ReverseDiffAdjoint replays its tape: one VJP per recorded field call
        stats = Stats(nfe_forward=int(nfe_f), nfe_backward=nfe_b, steps_accepted=int(accepted),
                      steps_rejected=int(rejected))
        return FlowValueAndGrad(value, grad_params, grad_x, stats, float(nll), float(kinetic), float(jacobian))
