"""``LatentODE``: a latent-variable model of irregularly-sampled time series (Chen et al. 2018 §5 and App. E;
Rubanova, Chen & Duvenaud 2019), defined once and run on JAX, torch or Julia.

Generative model: ``z(t0) ~ N(0, I)``, ``dz/dt = field(t, z)``, ``x(t_i) ~ N(decoder(z(t_i)), σ² I)``.
Recognition model: an RNN cell (:class:`RNNCell`, Elman, with the time difference as an input) runs *backwards*
over each series' observations, ``h <- cell([x_i, Δt_i, h])`` with ``Δt_i = t_{i+1} - t_i`` the gap to the
observation read before it (0 for the first one read), and ``head(h) = [μ, log σ_q²]`` is a Gaussian posterior
over ``z(t0)``. Training maximises the ELBO with the reparameterisation ``z(t0) = μ + σ_q ε``:

    ELBO = Σ_observed log N(x_i; decoder(z(t_i)), σ² I) - KL(N(μ, σ_q²) || N(0, I)),

the KL in closed form, ``0.5 Σ (μ² + σ_q² - log σ_q² - 1)``; the loss is ``-mean ELBO`` over the batch, as
torchdiffeq's ``examples/latent_ode.py`` (fixed noise σ, default 0.3 as there).

**Per-sample times in one batch** (the papers' recipe): the batch is given on the *union* of every series'
observation times ``ts`` (shape ``(T,)``, increasing) with ``x`` of shape ``(batch, T, obs_dim)`` and a boolean
``mask`` ``(batch, T)``; :func:`union_times` builds them from per-series times. The encoder updates a series'
state only at its own observations, the ODE is solved once for the whole batch at the union of times, and each
series' likelihood sums over its own observations only. Unobserved entries of ``x`` are ignored (may be NaN).

Parameters: one canonical flat vector over ``encoder`` (the cell), ``head``, ``field``, ``decoder`` in that order
(:meth:`LatentODE.param_layout` names them), identical on every backend. NFE: the ODE solve's counts, exactly as
for :class:`pyneuralode.ODEModel` (:class:`pyneuralode.Stats`).
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from ._adjoints import AbstractAdjoint, DirectAdjoint
from ._control import StepControl
from ._errors import NotSupportedError, SpecError
from ._layers import MLP, AbstractCompositeLayer, AbstractLayer, Activation, Linear, Sequential, _check_positive_int
from ._model import ODEModel
from ._model_base import SpecParameters, check_numerics, check_runtime
from ._solution import Stats
from ._solvers import AbstractSolver, Dopri5
from ._validate import as_real_array, check_params

_PROGRAMS = {"jax": "pyneuralode.backends.jax._latent:JaxLatentProgram",
             "torch": "pyneuralode.backends.torch._latent:TorchLatentProgram",
             "julia": "pyneuralode.backends.julia._latent:JuliaLatentProgram"}


@dataclasses.dataclass(frozen=True)
class RNNCell(AbstractCompositeLayer):
    """An Elman RNN cell with the time difference as an input: ``h' = activation(W [x, Δt, h] + b)``.

    Its input sample is the concatenation ``[x (input_size), Δt (1 if time_delta), h (hidden_size)]`` and its output
    the new state ``(hidden_size,)``; it is the primitive ``Sequential(Linear(...), Activation(...))``, so every
    backend that compiles those compiles it (weight ``(hidden, input + 1 + hidden)``, PyTorch's convention).
    """

    input_size: int
    hidden_size: int
    time_delta: bool = True
    activation: str = "tanh"

    def __post_init__(self):
        _check_positive_int(self.input_size, "RNNCell input_size")
        _check_positive_int(self.hidden_size, "RNNCell hidden_size")

    @property
    def in_shape(self):
        return (self.input_size + int(self.time_delta) + self.hidden_size,)

    def expand(self) -> Sequential:
        return Sequential(Linear(self.in_shape[0], self.hidden_size), Activation(self.activation))


class LatentParts(AbstractLayer):
    """The parameter container of a latent ODE: ``encoder``, ``head``, ``field``, ``decoder`` (in this order)."""

    __slots__ = ("parts",)
    NAMES = ("encoder", "head", "field", "decoder")

    def __init__(self, *parts: AbstractLayer):
        object.__setattr__(self, "parts", tuple(p.expand() for p in parts))

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other):
        return type(other) is LatentParts and other.parts == self.parts

    def __hash__(self):
        return hash(("LatentParts", self.parts))

    def param_specs(self):
        return ()

    def sublayers(self):
        return self.parts

    def sublayer_names(self):
        return self.NAMES

    def out_shape(self, in_shape):
        raise SpecError("A latent ODE's parameter container is not a layer to apply.")


@dataclasses.dataclass(frozen=True)
class LatentValueAndGrad:
    """``value`` = -mean ELBO, its gradient in the canonical layout, the parts of the ELBO per series, and the ODE
    solve's exact counts."""

    value: float
    grad_params: np.ndarray
    log_likelihood: np.ndarray   # (batch,) Σ over each series' observations
    kl: np.ndarray               # (batch,)
    stats: Stats


@dataclasses.dataclass(frozen=True)
class Posterior:
    """The recognition model's ``q(z(t0) | x) = N(mean, exp(log_var))``, per series."""

    mean: np.ndarray
    log_var: np.ndarray


def union_times(times, values=None, *, start=None, dtype="float64"):
    """Per-series observation times (a list of 1-D increasing arrays, or a ``(batch, T)`` array) on their union.

    Returns ``(ts, mask, x)``: ``ts`` the sorted union ``(U,)``, ``mask`` ``(batch, U)`` True where a series has an
    observation, and, when ``values`` (per-series arrays ``(T_b, D)``) are given, ``x`` ``(batch, U, D)`` holding each
    observation at its time (NaN elsewhere); otherwise ``x`` is ``None``.
    """
    series = [as_real_array(t, "times", dtype) for t in times]
    for t in series:
        if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0):
            raise SpecError("each series' times must be a non-empty, strictly increasing 1-D array.")
    ts = np.unique(np.concatenate(series + ([] if start is None else [np.array([start], dtype)])))
    if start is not None and ts[0] != start:
        raise SpecError(f"start={start!r} must be at or before every observation time (earliest {ts[0]!r}).")
    index = [np.searchsorted(ts, t) for t in series]
    mask = np.zeros((len(series), ts.size), bool)
    for b, idx in enumerate(index):
        mask[b, idx] = True
    if values is None:
        return ts, mask, None
    if len(values) != len(series):
        raise SpecError(f"values holds {len(values)} series but times holds {len(series)}.")
    vals = [as_real_array(v, "values", dtype) for v in values]
    dim = vals[0].shape[-1]
    x = np.full((len(series), ts.size, dim), np.nan, dtype=dtype)
    for b, (idx, v) in enumerate(zip(index, vals)):
        if v.shape != (idx.size, dim):
            raise SpecError(f"series {b} has {idx.size} times but values of shape {v.shape}; expected "
                            f"({idx.size}, {dim}).")
        x[b, idx] = v
    return ts, mask, x


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class LatentODE(SpecParameters):
    """A latent ODE for irregular time series: recognition RNN, ODE on ``z``, decoder, Gaussian likelihood.

    **Arguments:**

    - ``obs_dim``, ``latent_dim``: sizes of an observation and of ``z`` (torchdiffeq's example: 2 and 4).
    - ``rnn_hidden``: the recognition RNN's state size (default 25, as the example).
    - ``field``: the latent vector field, default ``MLP([latent, 20, latent], elu)`` (the example's LatentODEfunc).
    - ``decoder``: ``z -> x``, default ``MLP([latent, 20, obs], relu)`` (the example's Decoder).
    - ``noise_std``: σ of the Gaussian likelihood (fixed; default 0.3 as the example).
    - ``solver``, ``control``, ``adjoint``: the ODE solve's method, as :class:`pyneuralode.ODEModel`.
    - ``backend``: ``"jax"``, ``"torch"`` or ``"julia"`` (CPU only; its code has never run on a real Julia in
      this project's CI, see docs/latent.md); ``dtype``: ``"float32"`` (default) or ``"float64"``.
    """

    obs_dim: int = 2
    latent_dim: int = 4
    rnn_hidden: int = 25
    field: AbstractLayer | None = None
    decoder: AbstractLayer | None = None
    noise_std: float = 0.3
    solver: AbstractSolver = dataclasses.field(default_factory=Dopri5)
    control: StepControl = dataclasses.field(default_factory=StepControl)
    adjoint: AbstractAdjoint = dataclasses.field(default_factory=DirectAdjoint)
    backend: str = "jax"
    dtype: str = "float32"
    device: str | None = None

    def __post_init__(self):
        for name in ("obs_dim", "latent_dim", "rnn_hidden"):
            _check_positive_int(getattr(self, name), f"LatentODE {name}")
        if self.field is None:
            object.__setattr__(self, "field", MLP([self.latent_dim, 20, self.latent_dim], activation="elu"))
        if self.decoder is None:
            object.__setattr__(self, "decoder", MLP([self.latent_dim, 20, self.obs_dim], activation="relu"))
        for name, want_in, want_out in (("field", self.latent_dim, self.latent_dim),
                                        ("decoder", self.latent_dim, self.obs_dim)):
            layer = getattr(self, name)
            if not isinstance(layer, AbstractLayer):
                raise SpecError(f"LatentODE {name} must be a pyneuralode layer, got {type(layer).__name__}.")
            out = layer.out_shape((want_in,))
            if tuple(out) != (want_out,):
                raise SpecError(f"LatentODE {name} must map {want_in} features to {want_out}, got {tuple(out)}.")
        if not (isinstance(self.noise_std, (int, float)) and not isinstance(self.noise_std, bool)
                and self.noise_std > 0 and np.isfinite(self.noise_std)):
            raise SpecError(f"LatentODE noise_std must be a number > 0, got {self.noise_std!r}.")
        check_runtime(self)
        check_numerics(self)
        if self.backend not in _PROGRAMS:
            raise NotSupportedError(f"pn.LatentODE is not available on backend {self.backend!r} yet: use "
                                    f"backend='jax', 'torch' or 'julia'.")
        object.__setattr__(self, "_program", None)

    # ---------------------------------------------------------------- structure
    @property
    def encoder(self) -> RNNCell:
        """The recognition RNN cell (input ``[x, Δt, h]``)."""
        return RNNCell(self.obs_dim, self.rnn_hidden)

    @property
    def head(self) -> Linear:
        """``h -> [μ, log σ_q²]`` of the posterior over ``z(t0)``."""
        return Linear(self.rnn_hidden, 2 * self.latent_dim)

    @property
    def parts(self) -> LatentParts:
        """The four networks (encoder, posterior head, ODE field, decoder) as one spec, in canonical parameter
        order."""
        return LatentParts(self.encoder, self.head, self.field, self.decoder)

    @property
    def _param_spec(self):
        return self.parts

    def ode_model(self) -> ODEModel:
        """The latent ODE solve as an :class:`pyneuralode.ODEModel` (the field's parameters only)."""
        return ODEModel(self.field, solver=self.solver, control=self.control, adjoint=self.adjoint,
                        backend=self.backend, dtype=self.dtype, device=self.device)

    @property
    def program(self):
        """The compiled backend program (compiled on first use and cached)."""
        if self._program is None:
            module, name = _PROGRAMS[self.backend].split(":")
            object.__setattr__(self, "_program", getattr(importlib.import_module(module), name)(self))
        return self._program

    # ---------------------------------------------------------------- checks
    def _data(self, params, ts, x, mask):
        params = check_params(params, self.num_params, self.dtype)
        ts = as_real_array(ts, "ts", self.dtype)
        if ts.ndim != 1 or ts.size < 1 or np.any(np.diff(ts) <= 0):
            raise SpecError(f"ts must be the strictly increasing 1-D union of observation times, got shape "
                            f"{ts.shape}.")
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 3 or x.shape[1:] != (ts.size, self.obs_dim):
            raise SpecError(f"x must have shape (batch, len(ts), obs_dim) = (batch, {ts.size}, {self.obs_dim}), got "
                            f"{x.shape}.")
        mask = np.ones(x.shape[:2], bool) if mask is None else np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != x.shape[:2]:
            raise SpecError(f"mask must be a boolean array of shape (batch, len(ts)) = {x.shape[:2]}, got "
                            f"{mask.dtype} {mask.shape}.")
        if not np.all(mask.any(axis=1)):
            raise SpecError("every series needs at least one observation: mask has a row of False.")
        if not np.all(np.isfinite(x[mask])):
            raise SpecError("x contains NaN or infinite values at observed entries (mask True).")
        return params, ts, np.where(mask[..., None], x, 0.0).astype(self.dtype), mask

    def _eps(self, eps, batch):
        if eps is None:
            return np.zeros((batch, self.latent_dim), self.dtype)
        eps = as_real_array(eps, "eps", self.dtype)
        if eps.shape != (batch, self.latent_dim):
            raise SpecError(f"eps must have shape (batch, latent_dim) = {(batch, self.latent_dim)}, got {eps.shape}.")
        return eps

    # ---------------------------------------------------------------- running
    def encode(self, params, ts, x, mask=None) -> Posterior:
        """The posterior ``q(z(t0) | observations)`` of each series (``ts`` the union of times, ``t0 = ts[0]``)."""
        params, ts, x, mask = self._data(params, ts, x, mask)
        mean, log_var = self.program.encode(params, ts, x, mask)
        return Posterior(np.asarray(mean), np.asarray(log_var))

    def predict(self, params, ts, x, pred_ts, mask=None, *, eps=None) -> np.ndarray:
        """Decoded predictions ``(batch, len(pred_ts), obs_dim)`` at the increasing times ``pred_ts`` (which must
        start at ``ts[0]``, the time of ``z(t0)``, and may extend past the observations: extrapolation), from
        ``z(t0) = μ + σ_q ε`` (``eps=None``: the posterior mean)."""
        params, ts, x, mask = self._data(params, ts, x, mask)
        pred_ts = as_real_array(pred_ts, "pred_ts", self.dtype)
        if pred_ts.ndim != 1 or pred_ts[0] != ts[0] or np.any(np.diff(pred_ts) <= 0):
            raise SpecError(f"pred_ts must be strictly increasing and start at ts[0] = {ts[0]:g} (the time of "
                            "z(t0)).")
        return np.asarray(self.program.predict(params, ts, x, mask, pred_ts, self._eps(eps, x.shape[0])))

    def value_and_grad(self, params, ts, x, mask=None, *, eps=None) -> LatentValueAndGrad:
        """``-mean ELBO`` of the batch and its gradient; ``eps`` ``(batch, latent_dim)`` is the reparameterisation
        noise (``None``: zeros, i.e. the posterior mean; draw ``N(0, I)`` per step to train)."""
        params, ts, x, mask = self._data(params, ts, x, mask)
        return self.program.value_and_grad(params, ts, x, mask, self._eps(eps, x.shape[0]))


def gaussian_log_likelihood(xp, x, mean, mask, noise_std):
    """``Σ_observed log N(x; mean, σ² I)`` per series: ``x``, ``mean`` ``(B, T, D)``, ``mask`` ``(B, T)`` (0/1)."""
    const = np.log(noise_std) + 0.5 * np.log(2 * np.pi)
    per_point = -0.5 * ((x - mean) / noise_std) ** 2 - const
    return (per_point.sum(-1) * mask).sum(-1)


def normal_kl(xp, mean, log_var):
    """``KL(N(mean, exp(log_var)) || N(0, I))`` per series (summed over latent dimensions)."""
    return 0.5 * (mean * mean + xp.exp(log_var) - log_var - 1.0).sum(-1)
