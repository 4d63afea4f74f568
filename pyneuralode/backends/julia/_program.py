"""A model compiled for Julia: the spec, solver, step control and adjoint translated for PyNeuralODEJL.

Everything here is plain Python and numpy; the Julia module arrives as an argument (from
:func:`._runtime.start`), so this file never imports juliacall.

Array conventions at the boundary: numpy C-ordered ``(B, D)`` states and ``(T, B, D)`` solutions travel as
their transposes, which are free F-ordered views that juliacall hands to Julia as ``(D, B)`` /
``(D, B, T)`` ``PyArray``s; Julia copies them once into plain ``Array``s (the safe type for AD). Results
come back with ``ArrayValue.to_numpy()`` (a copy) and are transposed back.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..._adjoints import (
    BacksolveAdjoint,
    DirectAdjoint,
    GaussAdjoint,
    InterpolatingAdjoint,
    QuadratureAdjoint,
)
from ..._errors import (
    BLOW_UP,
    MAX_STEPS,
    OK,
    STIFF,
    BackendUnavailable,
    NotSupportedError,
    SolveError,
    non_finite_error,
    solve_failure,
)
from ..._concat_squash import ConcatSquash
from ..._control import fixed_step_grid
from ..._dynamics import Dynamics
from ._graph import dynamics_arguments
from ._loss import JuliaLosses
from ..._layers import Activation, Linear, Sequential, walk
from ..._params import num_params
from ..._solution import Solution, Stats, ValueAndGrad
from .._base import AbstractProgram, refuse_devices

SOLVERS: dict[str, str] = {
    "Euler": "euler", "Midpoint": "midpoint", "Heun": "heun", "RK4": "rk4", "Bosh3": "bs3", "Dopri5": "dp5",
    "Tsit5": "tsit5", "Dopri8": "dp8", "Vern7": "vern7", "Rodas5P": "rodas5p", "QNDF": "qndf", "FBDF": "fbdf",
    "ImplicitEuler": "implicit_euler", "Kvaerno3": "kvaerno3", "Kvaerno4": "kvaerno4", "Kvaerno5": "kvaerno5",
    "KenCarp3": "kencarp3", "KenCarp4": "kencarp4", "KenCarp5": "kencarp5",
}
"""pyneuralode solver name -> PyNeuralODEJL.make_alg key (Euler..RK4 fixed step, the rest adaptive)."""

OWN_CONTROLLER = ("QNDF", "FBDF")
DEFAULT_CONTROL = (0.9, 0.2, 10.0)  # StepControl's safety, factormin, factormax == OrdinaryDiffEq's defaults


def describe_spec(field) -> str:
    """The compact layer description PyNeuralODEJL.parse_spec reads (see julia/src/layers.jl)."""
    if isinstance(field, Dynamics):
        raise NotSupportedError("pn.dynamics fields compile on backend 'julia' as the field of a pn.ODEModel; as a "
                                "CNF's field they are not available there yet: use backend='jax' or 'torch'.")
    parts = []
    for layer in walk(field.expand()):
        if isinstance(layer, Sequential):  # a plain chain: its layers follow it in the walk
            continue
        if layer.sublayers():  # a layer that combines its sublayers (pn.Residual's skip connection): flattening
            # it into the chain would drop what it adds, so it is refused rather than compiled wrong
            raise NotSupportedError(
                f"{type(layer).__name__} layers are not available in an ODE model's field on backend 'julia' yet: "
                "it compiles a chain of Linear, ConcatSquash and Activation layers (pn.MLP, pn.ConcatSquashMLP, "
                "pn.Sequential of them). Write the skip connection in a pn.dynamics field (e.g. `return u + "
                "p.net(u)`), which compiles on every backend, or use backend='jax' or 'torch'.")
        if isinstance(layer, Linear):
            parts.append(f"linear,{layer.in_features},{layer.out_features},{int(layer.bias)},"
                         f"{int(layer.time_input)}")
        elif isinstance(layer, ConcatSquash):
            parts.append(f"squash,{layer.in_features},{layer.out_features}")
        elif isinstance(layer, Activation):
            parts.append(f"act,{layer.name}")
        else:
            raise NotSupportedError(
                f"{type(layer).__name__} layers are not available in an ODE model's field on backend 'julia' yet: "
                "it compiles Linear, ConcatSquash and Activation layers (pn.MLP, pn.ConcatSquashMLP, "
                "pn.Sequential of them); image layers run in a pn.Network.")
    if not parts:
        raise NotSupportedError("backend 'julia' needs a field with at least one layer.")
    return ";".join(parts)


def _adjoint_options(model) -> dict:
    adjoint, control = model.adjoint, model.control
    if isinstance(adjoint, BacksolveAdjoint):  # seminorm=True is refused by the registry, at model creation
        for name in ("rtol", "atol"):
            value = getattr(adjoint, name)
            if value is not None and value != getattr(control, name):
                raise NotSupportedError(
                    f"BacksolveAdjoint({name}=...) different from the forward {name} is not available on "
                    "backend 'julia': SciMLSensitivity solves the adjoint with the forward tolerances. Leave "
                    f"{name}=None, or use backend 'jax'/'torch'.")
        return {"sensealg": "backsolve", "vjp": adjoint.vjp, "checkpointing": False}
    if isinstance(adjoint, InterpolatingAdjoint):
        return {"sensealg": "interpolating", "vjp": adjoint.vjp, "checkpointing": adjoint.checkpointing}
    if isinstance(adjoint, QuadratureAdjoint):
        return {"sensealg": "quadrature", "vjp": adjoint.vjp, "checkpointing": False}
    if isinstance(adjoint, GaussAdjoint):
        return {"sensealg": "gauss", "vjp": adjoint.vjp, "checkpointing": False}
    if isinstance(adjoint, DirectAdjoint):
        if model.device == "cuda":
            raise NotSupportedError("DirectAdjoint() on backend 'julia' is SciMLSensitivity's "
                                    "ReverseDiffAdjoint, which needs CPU arrays: use device='cpu', or a "
                                    "continuous adjoint such as pn.GaussAdjoint() on the GPU.")
        # ReverseDiffAdjoint accepts vector states only; PyNeuralODEJL solves every problem on the flattened
        # state (FlatRHS in julia/src/solve.jl), so matrix, CNF and image states all reach it as vectors.
        return {"sensealg": "reversediff", "vjp": "zygote", "checkpointing": False}
    raise NotSupportedError(f"{adjoint.name}() is not available on backend 'julia'.")


def julia_options(model) -> dict:
    """Keyword arguments of PyNeuralODEJL.solve_options for ``model``."""
    solver, control = model.solver, model.control
    if solver.name not in SOLVERS:
        raise NotSupportedError(f"{solver.name}() is not available on backend 'julia'.")
    knobs = (control.safety, control.factormin, control.factormax)
    if solver.name in OWN_CONTROLLER and knobs != DEFAULT_CONTROL:
        raise NotSupportedError(f"{solver.name}() on backend 'julia' uses its own order and step controller: "
                                "StepControl safety/factormin/factormax cannot be set for it (leave them at "
                                "their defaults), or choose pn.Rodas5P()/pn.KenCarp4().")
    options = _adjoint_options(model)
    jac = os.environ.get("PYNEURALODE_JULIA_JAC", "auto").strip().lower()
    if jac == "auto":
        # A discrete adjoint traces the solver with ReverseDiff; SciMLSensitivity's docs advise finite
        # differences for the stiff solvers' internal Jacobians in that case (TrackerAdjoint warning).
        jac = "finitediff" if (options["sensealg"] == "reversediff" and solver.stiff) else "forwarddiff"
    if jac not in ("forwarddiff", "finitediff"):
        raise NotSupportedError("PYNEURALODE_JULIA_JAC must be 'auto', 'forwarddiff' or 'finitediff', "
                                f"got {jac!r}.")
    options.update(
        solver=SOLVERS[solver.name], rtol=control.rtol, atol=control.atol, dt0=control.dt0, dt=control.dt,
        dtmax=control.dtmax,
        max_steps=control.max_steps, safety=control.safety, factormin=control.factormin,
        factormax=control.factormax, jac=jac, dtype=model.dtype)
    if control.jump_ts or control.step_ts:  # numpy arrays arrive in Julia as vectors of Float64
        options.update(jump_ts=np.asarray(control.jump_ts, dtype=np.float64),
                       step_ts=np.asarray(control.step_ts, dtype=np.float64))
    return options


def cpu_only_options(model, what: str) -> dict:
    """:func:`julia_options` for a model family that runs on the CPU only on Julia (``what``: its name in the
    message); ``device='cuda'`` is refused naming the backends that run it on the GPU."""
    if model.device == "cuda":
        raise NotSupportedError(f"{what} on backend 'julia' runs on the CPU only for now: use device=None/'cpu', "
                                "or backend='jax'/'torch' for the GPU.")
    return julia_options(model)


BACKWARD = "backward (adjoint) solve"


def _status_error(status: str, where: str, model, detail: str) -> Exception | None:
    """The shared error of a Julia return code (see :mod:`pyneuralode._stepwatch` for the classification);
    ``model`` is what was solved (an ODEModel, CNF or ODEBlock: its ``control``, ``solver`` and ``adjoint``)."""
    kind = {"Success": OK, "MaxIters": MAX_STEPS, "Stiff": STIFF, "Unstable": BLOW_UP, "DtNaN": BLOW_UP,
            "DtLessThanMin": BLOW_UP}.get(status)
    if kind is not None:
        return solve_failure(kind, where=where, max_steps=model.control.max_steps, solver=model.solver,
                             backend="julia", backsolve=where == BACKWARD and model.adjoint.name == "BacksolveAdjoint")
    if status == "ConvergenceFailure":
        return SolveError(f"The {where} failed: the implicit solver's nonlinear iterations did not converge; "
                          "tighten rtol/atol, or set PYNEURALODE_JULIA_JAC=finitediff.")
    extra = f" Julia said: {detail}" if detail else ""
    return SolveError(f"The {where} failed with Julia return code {status}.{extra}")


def _check_backward_warnings(text: str, model) -> None:
    """SciMLSensitivity returns no adjoint retcode (#1012); its logged warnings are all we can see."""
    if not text:
        return
    lower = text.lower()
    status = ("MaxIters" if "maxiters" in lower else
              "Unstable" if "nan" in lower or "instabilit" in lower or "unstable" in lower else None)
    if status is not None:
        raise _status_error(status, BACKWARD, model, text)
    warnings.warn(f"Julia (backward pass): {text}", RuntimeWarning, stacklevel=3)


def _to_numpy(value) -> np.ndarray:
    return np.asarray(value.to_numpy())


class JuliaProgram(AbstractProgram):
    """An :class:`pyneuralode.ODEModel` compiled to a PyNeuralODEJL ``NeuralField`` + ``SolveOptions``."""

    def __init__(self, model, module, jl=None):
        self._module = module
        self._jl = jl
        self._dtype = model.dtype
        self._device = "cuda" if model.device == "cuda" else "cpu"
        self._n = num_params(model.field)
        if self._n == 0:
            raise NotSupportedError("backend 'julia' needs a field with at least one parameter.")
        self._dynamics = isinstance(model.field, Dynamics)
        if self._dynamics and self._device == "cuda":
            raise NotSupportedError("pn.dynamics on backend 'julia' runs on the CPU only for now (its generated code "
                                    "indexes single entries): use device='cpu', or backend='jax'/'torch' for the GPU.")
        self._description = None if self._dynamics else describe_spec(model.field)
        self._options = julia_options(model)
        self._max_steps = model.control.max_steps
        self._fixed_dt = None if model.solver.adaptive else model.control.dt
        self.model = model  # the base class's event path reads it, as JaxProgram/TorchProgram expose theirs
        self._events: dict = {}  # bound event function -> its generated Julia function (a DynamicsField)
        self._reversediff = self._options["sensealg"] == "reversediff"
        self._losses = JuliaLosses(module, self._dtype, self._call)
        if self._device == "cuda":
            self._load_cuda()
        self._opts = self._call(module.solve_options, **self._options)
        if self._dynamics:
            self._field = self._call(module.build_dynamics, *dynamics_arguments(model.field, self._dtype),
                                     dtype=self._dtype, device=self._device)
        else:
            self._field = self._call(module.build_field, self._description, np.zeros(self._n, dtype=self._dtype),
                                     dtype=self._dtype, device=self._device)

    # ------------------------------------------------------------------ plumbing
    def _load_cuda(self) -> None:
        try:
            self._jl.seval("import CUDA")
        except Exception as err:
            raise BackendUnavailable(
                "device='cuda' on backend 'julia' needs CUDA.jl in the Julia environment: run "
                "`pyneuralode.backends.julia.add_cuda()` once, then restart Python "
                f"({type(err).__name__}: {err}).") from err
        if not bool(self._module.device_functional("cuda")):
            raise BackendUnavailable("device='cuda' on backend 'julia': CUDA.jl is loaded but reports no "
                                     "working GPU (CUDA.functional() is false).")

    @staticmethod
    def _call(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if type(err).__name__ != "JuliaError":
                raise
            raise SolveError(f"Julia raised an error in the julia backend: {err}") from err

    def _set_params(self, params: np.ndarray) -> None:
        self._call(self._module.set_params_b, self._field, params)

    @staticmethod
    def _batch(y0: np.ndarray) -> tuple[np.ndarray, bool]:
        return (y0, True) if y0.ndim == 2 else (y0[None, :], False)

    def _ys(self, value, batched: bool) -> np.ndarray:
        ys = np.ascontiguousarray(_to_numpy(value).transpose(2, 1, 0), dtype=self._dtype)  # (T, B, D)
        return ys if batched else ys[:, 0]

    # ------------------------------------------------------------------ contract
    def _check_grid(self, ts) -> None:
        """A fixed-step grid over max_steps raises MaxStepsError before Julia runs, as on JAX/torch (the Julia
        side steps on the same grid, ``_step_grid`` in julia/src/solve.jl)."""
        if self._fixed_dt is not None:
            fixed_step_grid(ts, self._fixed_dt, self._max_steps)

    def solve(self, params, y0, ts) -> Solution:
        if y0.ndim > 2:
            raise NotSupportedError("backend 'julia' takes states of shape (D,) or (batch, D).")
        if ts.shape[0] == 1:
            return Solution(ts=ts.copy(), ys=y0[None].copy(), stats=Stats())
        self._check_grid(ts)
        y2, batched = self._batch(y0)
        self._set_params(params)
        (ys, nfe, _nf, accepted, rejected, _njacs, status, text) = self._call(
            self._module.forward, self._field, self._opts, y2.T, ts)
        error = _status_error(status, "forward solve", self.model, text)
        if error is not None:
            raise error
        if text:
            warnings.warn(f"Julia (forward solve): {text}", RuntimeWarning, stacklevel=3)
        out = self._ys(ys, batched)
        if not np.all(np.isfinite(out)):
            raise non_finite_error("state")
        return Solution(ts=ts.copy(), ys=out,
                        stats=Stats(nfe_forward=int(nfe), steps_accepted=int(accepted),
                                    steps_rejected=int(rejected)))

    def _event_field(self, bound, params):
        """The generated Julia event function of ``bound`` (built once), holding ``params`` if it reads any."""
        if self._device == "cuda":
            raise NotSupportedError("Terminating events on backend 'julia' run on the CPU only for now: use "
                                    "device='cpu', or backend='jax'/'torch' for the GPU.")
        if bound not in self._events:
            self._events[bound] = self._call(self._module.build_dynamics, *dynamics_arguments(bound, self._dtype),
                                             dtype=self._dtype, device="cpu")
        ev = self._events[bound]
        if num_params(bound):
            self._call(self._module.set_params_b, ev, params)
        return ev

    def locate_event(self, params, y0, t0, t1, bound, signs, arm):
        """OrdinaryDiffEq's ``ContinuousCallback`` with ``terminate!`` on the conditions' combined function
        (``event_forward`` in julia/src/solve.jl): its root find locates the event to near machine precision; the
        steps are those of :meth:`solve` over ``[t0, t1]`` up to the event."""
        if y0.ndim != 1:
            raise NotSupportedError("backend 'julia' takes event states of shape (D,).")
        ev = self._event_field(bound.conditions, params)
        self._set_params(params)
        (t, y, occurred, nfe, _nf, accepted, rejected, _njacs, status, text) = self._call(
            self._module.event_forward, self._field, ev, self._opts, y0, float(t0), float(t1),
            np.asarray(signs, dtype=np.float64), np.asarray(arm, dtype=np.float64))
        error = _status_error(status, "forward solve", self.model, text)
        if error is not None:
            raise error
        if text:
            warnings.warn(f"Julia (event solve): {text}", RuntimeWarning, stacklevel=3)
        stats = {"nfe_forward": int(nfe), "steps_accepted": int(accepted), "steps_rejected": int(rejected)}
        return float(t), np.asarray(_to_numpy(y), dtype=self._dtype), bool(occurred), stats

    def event_gradient(self, condition, params, t, y):
        """``(∂g/∂t, ∇_y g, ∂g/∂θ)`` of one event condition (Zygote, ``event_gradient`` in julia/src/dynamics.jl)."""
        ev = self._event_field(condition, params)
        d_t, d_y, d_p = self._call(self._module.event_gradient, ev, np.asarray(y, dtype=self._dtype), float(t))
        d_p = _to_numpy(d_p)
        return float(d_t), _to_numpy(d_y), d_p if d_p.size else np.zeros(self._n)

    def solve_ensemble(self, inputs, ts, *, devices=None):
        """The members as one SciMLBase ``EnsembleProblem`` solved with ``EnsembleThreads()`` (``ensemble_forward``
        in julia/src/solve.jl); statistics per member from its ``sol.stats`` (``nf`` is the integrator's own count
        of field evaluations)."""
        from ..._ensemble import EnsembleSolution, loop_ensemble
        params, y0 = inputs.expanded()  # devices= was refused by the model (refuse_ensemble_devices)
        if y0.ndim != 2:
            raise NotSupportedError("backend 'julia' takes ensemble states of shape (members, D).")
        if ts.shape[0] == 1:
            return loop_ensemble(self.solve, inputs, ts)
        self._check_grid(ts)
        ys, counts, statuses = self._call(self._module.ensemble_forward, self._field, self._opts, params.T, y0.T, ts)
        ys = np.ascontiguousarray(_to_numpy(ys).transpose(2, 1, 0), dtype=self._dtype)  # (M, T, D)
        counts = _to_numpy(counts).astype(np.int64)
        errors = []
        for m, status in enumerate(statuses):
            error = _status_error(str(status), "forward solve", self.model, "")
            if error is None and not np.all(np.isfinite(ys[m])):
                error = non_finite_error("state")
            errors.append(None if error is None else str(error))
        return EnsembleSolution.from_counts(ts, ys, counts.T, errors)

    def value_and_grad(self, params, y0, ts, loss) -> ValueAndGrad:
        if y0.ndim > 2:
            raise NotSupportedError("backend 'julia' takes states of shape (D,) or (batch, D).")
        if ts.shape[0] == 1:
            ys = y0[None].copy()
            value, cot = self._losses.value_and_cotangent(loss, ys)
            return ValueAndGrad(value, np.zeros(self._n, dtype=self._dtype), cot[0].copy(), Stats(), ys=ys)
        self._check_grid(ts)
        y2, batched = self._batch(y0)
        self._set_params(params)
        (pending, ys_jl, nfe_f, _nf, accepted, rejected, _njacs, status, text) = self._call(
            self._module.vjp_forward, self._field, self._opts, y2.T, ts)
        error = _status_error(status, "forward solve", self.model, text)
        if error is not None:
            raise error
        if text:
            warnings.warn(f"Julia (forward solve): {text}", RuntimeWarning, stacklevel=3)
        ys = self._ys(ys_jl, batched)
        if not np.all(np.isfinite(ys)):
            raise non_finite_error("state")
        value, cot = self._losses.value_and_cotangent(loss, ys)
        cot3 = cot if batched else cot[:, None, :]
        grad_u, grad_p, nfe_b, text_b = self._call(self._module.vjp_backward, pending, cot3.transpose(2, 1, 0))
        _check_backward_warnings(text_b, self.model)
        grad_y0 = np.ascontiguousarray(_to_numpy(grad_u).T, dtype=self._dtype)
        grad_params = np.asarray(_to_numpy(grad_p), dtype=self._dtype)
        if not (np.all(np.isfinite(grad_y0)) and np.all(np.isfinite(grad_params))):
            raise non_finite_error("gradient")
        nfe_b = int(nfe_b)
        if self._reversediff and nfe_b == 0:
            # ReverseDiffAdjoint records every vector-field call of the forward solve on a tape and replays
            # the tape backwards without calling the field again: one VJP per recorded call.
            nfe_b = int(nfe_f)
        return ValueAndGrad(value=value, grad_params=grad_params, grad_y0=grad_y0 if batched else grad_y0[0],
                            stats=Stats(nfe_forward=int(nfe_f), nfe_backward=nfe_b,
                                        steps_accepted=int(accepted), steps_rejected=int(rejected)),
                            ys=ys)

    def loss_cotangent(self, ys, loss):
        return self._losses.value_and_cotangent(loss, ys)[1]

    def field_along(self, params, ts, ys):
        return np.stack([self.vector_field(params, y, float(t)) for t, y in zip(ts, ys)])

    def make_trainer(self, optimizer, loss_type, *, devices=None):
        """``pn.Trainer``'s step: ``value_and_grad`` in Julia, the optimiser's update rule on the host (the same
        rule optax and ``torch.optim`` apply; ``pn.LBFGS``: the two-loop recursion with SciPy's strong-Wolfe line
        search, each trial one more ``value_and_grad``; :mod:`pyneuralode.train._host`). One device."""
        from ...train._host import HostTrainer

        refuse_devices(devices, "julia")
        return HostTrainer(self, optimizer, loss_type)

    def native(self, params):
        """The Julia ``PyNeuralODEJL.NeuralField``: callable ``f(u, p, t)`` with ``u`` of shape ``(D, B)`` and
        ``p`` in Lux layout; ``f.p`` starts as ``params`` (then holds the parameters last passed to
        ``solve``/``value_and_grad``; ``PyNeuralODEJL.set_params!(f, flat)`` loads canonical ones)."""
        self._set_params(np.asarray(params, dtype=self._dtype))
        return self._field

    # ------------------------------------------------------------------ extras
    def vector_field(self, params, y, t: float) -> np.ndarray:
        """One evaluation of the field at ``(t, y)`` through Julia (numpy in and out; for tests)."""
        y2, batched = self._batch(np.asarray(y, dtype=self._dtype))
        self._set_params(np.asarray(params, dtype=self._dtype))
        out = self._call(self._module.evaluate, self._field, y2.T, float(t))
        out = np.ascontiguousarray(_to_numpy(out).T, dtype=self._dtype)
        return out if batched else out[0]

    def cnf_log_prob(self, params, x, t_data: float, t_base: float) -> tuple[np.ndarray, Stats]:
        """Exact-trace CNF log-density of samples ``x`` (``(B, D)``) flowing from ``t_data`` to a standard
        normal at ``t_base`` (the hook for pyneuralode's CNF; forward only, CPU only)."""
        if self._dynamics:
            raise NotSupportedError("The CNF hook needs a layer-spec field on backend 'julia'; pn.dynamics fields "
                                    "are not available there yet.")
        x2, _ = self._batch(np.asarray(x, dtype=self._dtype))
        self._set_params(np.asarray(params, dtype=self._dtype))
        ts = np.asarray([t_data, t_base], dtype=self._dtype)
        (logpx, _z, _l, nfe, _nf, accepted, rejected, _njacs, status, text) = self._call(
            self._module.cnf_logpx, self._field, self._opts, x2.T, ts)
        error = _status_error(status, "CNF solve", self.model, text)
        if error is not None:
            raise error
        return (np.asarray(_to_numpy(logpx), dtype=self._dtype),
                Stats(nfe_forward=int(nfe), steps_accepted=int(accepted), steps_rejected=int(rejected)))

    def get_params(self) -> np.ndarray:
        """The canonical flat parameters currently held by the Julia field (layout round trip)."""
        return np.asarray(_to_numpy(self._call(self._module.get_params, self._field)), dtype=self._dtype)
