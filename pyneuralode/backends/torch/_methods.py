"""pyneuralode solvers and StepControl as torchdiffeq ``method``/``options``, with diffrax's step sequence.

Matched step control, so both backends take the same steps and report the same NFE. Read side by side, torchdiffeq 0.2.5
(``_impl/rk_common.py``, ``_impl/misc.py``) and diffrax 0.7.2 (``_step_size_controller/pid.py``,
``_integrate.py``) already agree on:

- the error norm: RMS over all elements of ``err / (atol + rtol * max(|y0|, |y1|))`` (torchdiffeq
  ``_compute_error_ratio`` with ``_rms_norm``; diffrax ``_scale`` with ``optx.rms_norm``);
- the controller: integral control ``factor = safety * ratio**(-1/order)`` with ``order`` the method's order (5
  for Dopri5, 3 for Bosh3; diffrax ``AbstractSolver.error_order`` returns ``order`` for ODEs), clipped to
  ``[1, factormax]`` on an accepted step and to ``[factormin, safety]`` on a rejected one (torchdiffeq
  ``_optimal_step_size`` uses ``dfactor`` only when ``ratio >= 1``: the same thing);
- the initial step: Hairer's rule, with the same formula in ``misc._select_initial_step`` and diffrax's
  ``pid._select_initial_step`` (checked to the last bit in tests).

They differ in four places, which this module closes:

1. diffrax clips the step that would pass the end time to land on it (``_integrate._clip_to_end``);
   torchdiffeq steps past it and interpolates. We pass ``step_t=[ts[-1]]``, torchdiffeq's own option for
   "do not step over this time", so the last step is clipped exactly as diffrax clips it.
2. diffrax stops gradients through the initial step (``pid.py``: ``dt0 = lax.stop_gradient(dt0)``); torchdiffeq
   backpropagates through ``_select_initial_step``. Our solver classes detach it (``_DetachedFirstStep``).
3. Dense output between steps: diffrax's Bosh3 interpolates with a cubic Hermite polynomial
   (``ThirdOrderHermitePolynomialInterpolation``) where torchdiffeq's bosh3 fits a quartic through a crude
   midpoint, and diffrax's Dopri8 uses a 7th-order table (``_Dopri8Interpolation``) where torchdiffeq fits a
   quartic. Our Bosh3 and Dopri8 use diffrax's interpolants (Dopri5's already agree).
4. ``max_steps``: diffrax counts every step of the solve; torchdiffeq's ``max_num_steps`` counts per output
   interval. The step counter in :mod:`._nfe` enforces the diffrax meaning.

Residual differences (bounded, documented): diffrax accepts a step when ``ratio < 1`` and torchdiffeq when
``ratio <= 1``; diffrax snaps a step ending within 100 ULPs of ``t1`` onto ``t1``. Both affect only ties of
measure zero, at most one step. Without diffrax installed, Dopri8 keeps torchdiffeq's quartic interpolant,
so its outputs *between* steps are less accurate (the step ends are unchanged).

Fixed-step solvers use :func:`pyneuralode._control.fixed_step_grid` (every save time is a step boundary), the
same grid the other backends use, through torchdiffeq's ``grid_constructor`` option.
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.bosh3 import Bosh3Solver
from torchdiffeq._impl.dopri5 import Dopri5Solver
from torchdiffeq._impl.dopri8 import Dopri8Solver
from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau

from ..._control import StepControl, fixed_step_grid
from ..._errors import NotSupportedError
from ..._solvers import AbstractSolver
from ..._stepwatch import EPS, FIRST_STEP_MARGIN

FIXED_METHODS = {"Euler": "euler", "Midpoint": "midpoint", "Heun": "heun2", "RK4": "rk4"}
"""pyneuralode fixed-step solver -> torchdiffeq method name (torchdiffeq 'rk4' is the 3/8 rule)."""


class _DetachedFirstStep:
    """Mixin: the first step size carries no gradient, as in diffrax (``pid.py``: ``lax.stop_gradient(dt0)``).

    Without it, backprop through ``odeint`` also differentiates Hairer's initial-step rule, so gradients and the
    number of backward VJPs differ from diffrax's for reasons that have nothing to do with the ODE. An automatic
    first step is also kept above the step watch's underflow threshold, as on every backend
    (:data:`pyneuralode._stepwatch.FIRST_STEP_MARGIN`). It also keeps torchdiffeq's step/jump time index in step
    with the solve (see ``_adaptive_step``).
    """

    def _adaptive_step(self, rk_state):
        # torchdiffeq advances its step_t/jump_t index only after a step it clipped onto that time
        # (``t0 < next < t0 + dt``, rk_common.py). A step that lands on the time exactly (a first step equal to
        # the grid spacing, a step grown to end there) leaves the index behind, and every later step and jump time
        # is then ignored: t0 has passed the time the index still points at. Catch the index up first.
        t0 = rk_state.t1
        if len(self.step_t):
            while self.next_step_index < len(self.step_t) - 1 and self.step_t[self.next_step_index] <= t0:
                self.next_step_index += 1
        if len(self.jump_t):
            while self.next_jump_index < len(self.jump_t) - 1 and self.jump_t[self.next_jump_index] <= t0:
                self.next_jump_index += 1
        return super()._adaptive_step(rk_state)

    def _before_integrate(self, t):
        super()._before_integrate(t)
        dt = self.rk_state.dt.detach()
        if self.first_step is None:
            floor = FIRST_STEP_MARGIN * EPS[str(self.y0.dtype).removeprefix("torch.")] * t.abs().max()
            dt = torch.maximum(dt, floor.to(dt.dtype))
        self.rk_state = self.rk_state._replace(dt=dt)


class _TableDenseOutput:
    """Mixin: dense output ``y(x) = y0 + sum_i (dt k_i) * sum_p dense[i, p] x^(p+1)`` for ``x`` in [0, 1], from a
    (stages x powers) table ``_dense``, lowest power first, in torchdiffeq's coefficient-list form (``None``: the
    solver's own fit)."""

    _dense: torch.Tensor | None = None

    def _interp_fit(self, y0, y1, k, dt):
        if self._dense is None:
            return super()._interp_fit(y0, y1, k, dt)
        table = self._dense.to(dtype=k.dtype, device=k.device)
        powers = torch.tensordot(k, table, dims=([-1], [0])) * dt.type_as(y0)  # (..., powers): x^1, x^2, ...
        return [y0] + list(powers.unbind(-1))


class PNDopri5(_DetachedFirstStep, Dopri5Solver):
    """torchdiffeq's dopri5 with a gradient-free first step."""


def _diffrax_dopri8_eval_coeffs() -> torch.Tensor:
    """diffrax's ``_Dopri8Interpolation.eval_coeffs`` (14 stages x 6, highest power first), read from diffrax's
    source when it is installed, so the two backends use one table."""
    try:
        from diffrax._solver.dopri8 import _Dopri8Interpolation
    except Exception:  # diffrax absent or reorganised: keep torchdiffeq's own interpolant
        return None
    return torch.as_tensor(_Dopri8Interpolation.eval_coeffs, dtype=torch.float64).flip(-1)  # lowest power first


class PNDopri8(_TableDenseOutput, _DetachedFirstStep, Dopri8Solver):
    """torchdiffeq's dopri8 with a gradient-free first step and, when diffrax is installed, diffrax's 7th-order
    dense output (torchdiffeq fits a quartic through a midpoint value of the same table).

    diffrax: ``y(x) = y0 + sum_i (dt k_i) * x * polyval(eval_coeffs[i], x)``, stages in the same order as
    torchdiffeq's (both are Dormand–Prince 8(7) with 14 stages; compare torchdiffeq dopri8.py C_mid)."""

    _dense = _diffrax_dopri8_eval_coeffs()


class PNBosh3(_DetachedFirstStep, Bosh3Solver):
    """torchdiffeq's bosh3 with a gradient-free first step and diffrax's cubic Hermite interpolation."""

    def _interp_fit(self, y0, y1, k, dt):
        # diffrax ThirdOrderHermitePolynomialInterpolation.from_k(k0=k[0], k1=k[-1]); Bosh3 is FSAL, so
        # k[-1] = f(t1, y1). Written as torchdiffeq's coefficient list [e, d, c, b, a] of
        # e + d x + c x^2 + b x^3 + a x^4, x in [0, 1].
        dt = dt.type_as(y0)
        f0 = dt * k[..., 0]
        f1 = dt * k[..., -1]
        dy = y1 - y0
        return [y0, f0, 3 * dy - 2 * f0 - f1, f1 + f0 - 2 * dy, torch.zeros_like(y0)]


def _tsit5_tableau() -> _ButcherTableau:
    """Tsitouras' 5(4) pair (Tsitouras 2011, "Runge–Kutta pairs of order 5(4) satisfying only the first column
    simplifying assumption") in torchdiffeq's form, its coefficients as diffrax 0.7.2 writes them
    (``_solver/tsit5.py``; tests/test_torch_backend.py checks them against diffrax's table bit for bit).
    ``c_error`` is ``b - b_hat``, diffrax's ``b_error``; the last row of ``beta`` equals ``c_sol``: FSAL."""
    b = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774]
    b_hat = [0.09468075576583945, 0.009183565540343254, 0.4877705284247616, 1.234297566930479, -2.7077123499835256,
             1.866628418170587, 1 / 66]
    beta = [[161 / 1000],
            [-0.008480655492356989, 0.335480655492357],
            [2.8971530571054935, -6.359448489975075, 4.3622954328695815],
            [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
            [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383],
            b]
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return _ButcherTableau(alpha=as_tensor([161 / 1000, 327 / 1000, 9 / 10, 0.9800255409045097, 1.0, 1.0]),
                           beta=[as_tensor(row) for row in beta], c_sol=as_tensor([*b, 0.0]),
                           c_error=as_tensor([x - y for x, y in zip([*b, 0.0], b_hat)]))


def _tsit5_dense_coefficients() -> torch.Tensor:
    """Tsitouras' continuous extension, ``y(x) = y0 + dt sum_i b_i(x) k_i`` for ``x`` in [0, 1], as diffrax's
    ``_Tsit5Interpolation`` writes each ``b_i(x)`` (a product of factors), expanded here into the powers
    ``x^1 .. x^4``: a (7 stages x 4) table, lowest power first."""
    poly = np.polynomial.polynomial.Polynomial
    x = poly([0.0, 1.0])
    factors = [-1.0530884977290216 * x * (x - 1.3299890189751412) * (x**2 - 1.4364028541716351 * x
                                                                     + 0.7139816917074209),
               0.1017 * x**2 * (x**2 - 2.1966568338249754 * x + 1.2949852507374631),
               2.490627285651252793 * x**2 * (x**2 - 2.38535645472061657 * x + 1.57803468208092486),
               -16.54810288924490272 * (x - 1.21712927295533244) * (x - 0.61620406037800089) * x**2,
               47.37952196281928122 * (x - 1.203071208372362603) * (x - 0.658047292653547382) * x**2,
               -34.87065786149660974 * (x - 1.2) * (x - 0.666666666666666667) * x**2,
               2.5 * (x - 1) * (x - 0.6) * x**2]
    return torch.tensor(np.array([np.pad(f.coef, (0, 5 - len(f.coef)))[1:] for f in factors]), dtype=torch.float64)


class PNTsit5(_TableDenseOutput, _DetachedFirstStep, RKAdaptiveStepsizeODESolver):
    """Tsitouras' 5(4) pair, which torchdiffeq lacks: its tableau and 4th-order continuous extension, the ones
    diffrax's and OrdinaryDiffEq's ``Tsit5`` use, on torchdiffeq's adaptive Runge–Kutta loop (so its step control
    and pyneuralode's matching of diffrax's steps apply unchanged)."""

    order = 5
    tableau = _tsit5_tableau()
    mid = torch.zeros(7, dtype=torch.float64)  # unused: the table below replaces torchdiffeq's midpoint fit
    _dense = _tsit5_dense_coefficients()


ADAPTIVE_METHODS = {"Dopri5": ("pyneuralode_dopri5", PNDopri5), "Bosh3": ("pyneuralode_bosh3", PNBosh3),
                    "Dopri8": ("pyneuralode_dopri8", PNDopri8), "Tsit5": ("pyneuralode_tsit5", PNTsit5)}
"""pyneuralode adaptive solver -> (torchdiffeq method name we register, solver class)."""

# odeint and odeint_adjoint look methods up by name in this one dict (torchdiffeq/_impl/odeint.py SOLVERS;
# adjoint.py imports the same object). We add our names next to torchdiffeq's own; nothing existing changes.
# (The package re-exports the *function* odeint under the module's name, hence import_module.)
_TD_SOLVERS = importlib.import_module("torchdiffeq._impl.odeint").SOLVERS
for _name, _cls in ADAPTIVE_METHODS.values():
    _TD_SOLVERS.setdefault(_name, _cls)


def method_name(solver: AbstractSolver) -> str:
    """The torchdiffeq ``method`` string for ``solver``."""
    if solver.name in ADAPTIVE_METHODS:
        return ADAPTIVE_METHODS[solver.name][0]
    if solver.name in FIXED_METHODS:
        return FIXED_METHODS[solver.name]
    raise NotSupportedError(f"{solver.name}() is not available on backend 'torch'.")


def _controller_options(control: StepControl) -> dict:
    options = {"safety": control.safety, "ifactor": control.factormax, "dfactor": control.factormin,
               # A backstop only: torchdiffeq counts per output interval; the _nfe step counter enforces
               # max_steps over the whole solve, as diffrax does.
               "max_num_steps": control.max_steps,
               "dtype": torch.float64}  # time-like quantities in float64 (torchdiffeq's default), any state dtype
    if control.dt0 is not None:
        options["first_step"] = control.dt0
    if control.dtmax is not None:  # torchdiffeq clips every step to it, the first included, as diffrax does
        options["max_step"] = control.dtmax
    return options


def forward_options(solver: AbstractSolver, control: StepControl, ts: torch.Tensor) -> dict:
    """torchdiffeq ``options`` for the forward solve over save times ``ts`` (a tensor)."""
    if not solver.adaptive:
        grid = torch.as_tensor(fixed_step_grid(ts.detach().cpu().numpy(), control.dt), dtype=ts.dtype,
                               device=ts.device)
        # torchdiffeq negates both t and the returned grid for decreasing times (misc._check_inputs), so the
        # constructor receives and returns times in the user's direction.
        return {"grid_constructor": lambda func, y0, t: grid}
    options = _controller_options(control)
    options.update(_break_options(control, ts, ts[-1:]))  # ts[-1]: clip the last step onto it, as diffrax does
    return options


def _break_options(control: StepControl, ts: torch.Tensor, stops: torch.Tensor) -> dict:
    """torchdiffeq's ``step_t`` (``stops`` and the control's step times) and ``jump_t`` (its jump times) for a
    solve over save times ``ts``, each strictly inside the solve; none repeated, which torchdiffeq refuses.

    torchdiffeq steps onto a jump time, evaluates its last stage just before it and restarts with a fresh
    evaluation just after it (``rk_common.py``, ``Perturb.PREV``/``Perturb.NEXT``); diffrax steps to the float
    just before and restarts at the float just after. The same steps to the last few ULPs of ``t``. A jump at a
    stop is dropped from ``jump_t``: the solves that stop there are separate solves (BacksolveAdjoint's intervals)
    and start afresh anyway."""
    if not (control.jump_ts or control.step_ts):  # the common case: nothing to read back from the device
        return {"step_t": stops.detach()}
    t0, t1 = float(ts[0]), float(ts[-1])
    stop_list = [float(t) for t in stops.detach().cpu()]
    jumps = [t for t in control.breaks_inside(t0, t1, "jump_ts") if t not in stop_list]
    steps = [t for t in control.breaks_inside(t0, t1, "step_ts") if t not in jumps and t not in stop_list]
    like = dict(dtype=ts.dtype, device=ts.device)
    options = {"step_t": torch.cat([torch.as_tensor(steps, **like), stops.detach()])}
    if jumps:
        options["jump_t"] = torch.as_tensor(jumps, **like)
    return options


def adjoint_options(solver: AbstractSolver, control: StepControl, ts: torch.Tensor, *, seminorm: bool) -> dict:
    """torchdiffeq ``adjoint_options`` for BacksolveAdjoint's backward solves.

    torchdiffeq solves the adjoint ODE interval by interval (``adjoint.py``: ``for i in range(len(t) - 1, 0,
    -1)``); ``step_t=ts`` clips each backward solve onto its interval's end, as diffrax clips every solve.
    """
    if not solver.adaptive:
        grid = torch.as_tensor(fixed_step_grid(ts.detach().cpu().numpy(), control.dt), dtype=ts.dtype,
                               device=ts.device)

        def interval_grid(func, y0, t):  # the forward grid's points inside [t[0], t[-1]], walked backwards
            lo, hi = torch.minimum(t[0], t[-1]), torch.maximum(t[0], t[-1])
            inside = grid[(grid >= lo) & (grid <= hi)]
            return inside if bool((t[-1] - t[0]) * (inside[-1] - inside[0]) > 0) else inside.flip(0)
        return {"grid_constructor": interval_grid}
    options = _controller_options(control)
    options.update(_break_options(control, ts, ts))
    if seminorm:
        options["norm"] = "seminorm"
    return options


def forward_atol(control: StepControl, ts: torch.Tensor):
    """torchdiffeq's ``atol``: a number, or a tensor of the state's shape (one per component), which its error
    ratio and initial step broadcast over the batch as they do ``atol + rtol |y|``."""
    if not control.per_component_atol:
        return control.atol
    return torch.as_tensor(control.atol_array("float64"), dtype=ts.dtype, device=ts.device)


def integrate(counter, y0: torch.Tensor, ts: torch.Tensor, *, solver: AbstractSolver, control: StepControl,
              adjoint, method: str, field, backsolve: bool) -> torch.Tensor:
    """The states at ``ts`` from torchdiffeq: ``odeint`` of ``counter`` from ``y0`` with ``solver``'s ``method``
    and options and ``control``'s tolerances; with ``backsolve``, ``odeint_adjoint``, whose backward solves use
    ``adjoint``'s tolerances (``control``'s where it sets none) and seminorm and differentiate the parameters of
    ``field`` (a compiled vector field)."""
    kwargs = dict(rtol=control.rtol, atol=forward_atol(control, ts), method=method,
                  options=forward_options(solver, control, ts))
    if not backsolve:
        return odeint(counter, y0, ts, **kwargs)
    return odeint_adjoint(
        counter, y0, ts, **kwargs,
        adjoint_rtol=adjoint.rtol if adjoint.rtol is not None else control.rtol,
        adjoint_atol=adjoint.atol if adjoint.atol is not None else control.smallest_atol,  # the augmented state's
        adjoint_method=method,
        adjoint_options=adjoint_options(solver, control, ts, seminorm=adjoint.seminorm),
        adjoint_params=tuple(field.flat_parameters()))
