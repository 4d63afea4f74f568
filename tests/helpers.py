"""Analytic test problems written as pyneuralode specs, plus a cache of compiled models.

The problems follow torchdiffeq's ``tests/problems.py`` where a spec can express them (peers.md §6):

- ``linear``: 10-D ``dy/dt = A y`` with antisymmetric ``A = 2U - (U + Uᵀ)``, ``U = 0.1·N(0,1)``; exact
  ``expm(A t) y0``.
- ``exp``: ``dy/dt = -0.1 y``, ``y(1) = exp(-0.1)``; exact ``exp(-0.1 t)`` (torchdiffeq's exp problem).
- ``constant``: ``dy/dt = a`` through a time-input layer with zero weights; exact ``y0 + a (t - t0)``.
- ``cubic``: ``dy/dt = -y³`` (nonlinear); exact ``y0 / sqrt(1 + 2 y0² (t - t0))``.

Each returns ``(spec, params, y0, ts, exact_fn)`` with ``ts = linspace(1, 8, 10)`` as torchdiffeq uses.

Also: :func:`backend_field` (a field's values and gradients on one backend, no solve), :func:`fd_grads`
(central differences of a ``pn.dynamics`` field's NumPy reference) and :func:`assert_field_matches_reference`
(both against each other), shared by the user-dynamics tests.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import pyneuralode as pn

TS = np.linspace(1.0, 8.0, 10)


def _expm(a: np.ndarray) -> np.ndarray:
    """Matrix exponential of a real antisymmetric matrix by eigen-decomposition (exact to ~1e-15)."""
    w, v = np.linalg.eig(a)
    return np.real(v @ np.diag(np.exp(w)) @ np.linalg.inv(v))


def linear_problem():
    rng = np.random.default_rng(0)
    u = 0.1 * rng.standard_normal((10, 10))
    a = 2 * u - (u + u.T)
    spec = pn.Linear(10, 10, bias=False)
    y0 = np.ones(10)
    return spec, a.reshape(-1), y0, TS, lambda t: np.stack([_expm(a * (ti - TS[0])) @ y0 for ti in t])


def exp_problem():
    spec = pn.Linear(1, 1, bias=False)
    y0 = np.array([np.exp(-0.1 * TS[0])])
    return spec, np.array([-0.1]), y0, TS, lambda t: np.exp(-0.1 * t)[:, None]


def constant_problem():
    spec = pn.Linear(1, 1, bias=True, time_input=True)
    y0 = np.array([3.2])
    return spec, np.array([0.0, 0.0, 0.2]), y0, TS, lambda t: (3.2 + 0.2 * (t - TS[0]))[:, None]


def cubic_problem():
    spec = pn.Sequential(pn.Activation("cube"), pn.Linear(1, 1, bias=False))
    y0 = np.array([1.5])
    return spec, np.array([-1.0]), y0, TS, lambda t: (1.5 / np.sqrt(1 + 2 * 1.5**2 * (t - TS[0])))[:, None]


PROBLEMS = {"linear": linear_problem, "exp": exp_problem, "constant": constant_problem, "cubic": cubic_problem}

SPIRAL_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def spiral_field() -> pn.MLP:
    """The paper's spiral network, 2 -> 50 -> 2, tanh, on y**3."""
    return pn.MLP([2, 50, 2], activation="tanh", input_transform="cube")


def spiral_batch(batch: int = 4, steps: int = 5, seed: int = 0):
    """Small spiral-like inputs: (batch, 2) starting points and a short time grid."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0, 2 * np.pi, batch)
    y0 = np.stack([np.cos(theta), np.sin(theta)], axis=1) * rng.uniform(0.5, 2.0, (batch, 1))
    return y0, np.linspace(0.0, 0.5, steps)


@functools.lru_cache(maxsize=None)
def _cached_model(field, solver, control, adjoint, backend, dtype):
    return pn.ODEModel(field, solver=solver, control=control, adjoint=adjoint, backend=backend, dtype=dtype)


def model(field, *, backend, solver=None, control=None, adjoint=None, dtype="float64") -> pn.ODEModel:
    """A compiled model shared by every test that asks for the same configuration (compiles are slow)."""
    return _cached_model(field, solver or pn.Dopri5(), control or pn.StepControl(), adjoint or pn.DirectAdjoint(),
                         backend, dtype)


def rel_err(a, b) -> float:
    """max |a - b| / max |b| — the relative difference used throughout the tests."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here (its first sentence), or None when it can."""
    try:
        pn.backends.get_backend(name)
    except pn.BackendUnavailable as err:
        head, _, rest = str(err).partition(": ")
        return f"{head}: {rest.split('. ')[0]}" if rest else head
    return None


def backend_field(backend, dyn, dtype="float64"):
    """``f(params, t, u) -> (du, grad_params, grad_u)`` of ``sum(du * R)`` on ``backend``, for a batch ``u``."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        from pyneuralode.backends.jax._field import compile_field
        if dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        field = compile_field(dyn)

        @jax.jit  # one compile of the whole graph: op-by-op dispatch compiles each op of a big graph apart
        def evaluate(p, t, y, r):
            du, vjp = jax.vjp(lambda p, y: field(p, t, y), p, y)
            return du, *vjp(r.astype(du.dtype))

        def run(params, t, u, r):
            out = evaluate(jnp.asarray(params, dtype), jnp.asarray(t, dtype), jnp.asarray(u, dtype), jnp.asarray(r))
            return tuple(np.asarray(v) for v in out)
        return run
    if backend == "torch":
        import torch

        from pyneuralode.backends.torch import VectorField, load_flat
        torch_dtype = getattr(torch, dtype)
        field = VectorField(dyn, dtype=torch_dtype, device=torch.device("cpu"))

        def run(params, t, u, r):
            load_flat(field, params)
            y = torch.tensor(u, dtype=torch_dtype, requires_grad=True)
            du = field(torch.tensor(t, dtype=torch_dtype), y)
            grads = torch.autograd.grad((du * torch.tensor(r, dtype=torch_dtype)).sum(),
                                        [*field.flat_parameters(), y], allow_unused=True)
            gp = np.concatenate([np.zeros(p.numel()) if g is None else g.detach().numpy().reshape(-1)
                                 for p, g in zip(field.flat_parameters(), grads[:-1])])
            gu = np.zeros_like(u) if grads[-1] is None else grads[-1].detach().numpy()
            return du.detach().numpy(), gp, gu
        return run
    if backend == "julia":
        from pyneuralode.backends.julia import start

        try:
            jl = start()
        except pn.BackendUnavailable as err:  # e.g. torch imported first in this process (juliacall's crash)
            pytest.skip(str(err))
        program = pn.ODEModel(dyn, backend="julia", dtype=dtype).program

        def run(params, t, u, r):
            program._set_params(np.asarray(params, dtype))
            du, gp, gu = (np.asarray(a.to_numpy()) for a in jl.field_vjp(program._field, u.T, t, r.T))
            return du.T, gp, gu.T
        return run
    pytest.skip(f"direct field evaluation is not wired for backend {backend!r} (its solves are tested below)")


def fd_grads(dyn, params, t, u, r, eps=1e-6):
    """Central finite differences of ``sum(f(params, t, u) * r)`` (the NumPy reference) in params and u."""
    def loss(p, y):
        return float(np.sum(dyn.evaluate(p, t, y) * r))

    def fd(x, f):
        g = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[i] = eps
            g[i] = (f(x + e) - f(x - e)) / (2 * eps)
        return g
    return fd(params, lambda p: loss(p, u)), fd(u, lambda y: loss(params, y))


def assert_field_matches_reference(backend: str, dyn, params, t: float, u, r, *, rtol: float = 1e-12) -> None:
    """``dyn``'s compiled field on ``backend`` at a batch ``u`` equals its NumPy reference (to ``rtol``), and its
    gradients of ``sum(f * r)`` with respect to the parameters and ``u`` equal central differences of it."""
    du, gp, gu = backend_field(backend, dyn)(params, t, u, r)
    np.testing.assert_allclose(du, dyn.evaluate(params, t, u), rtol=rtol, atol=rtol)
    fd_p, fd_u = fd_grads(dyn, params, t, u, r)
    np.testing.assert_allclose(gp, fd_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gu, fd_u, rtol=1e-6, atol=1e-7)
