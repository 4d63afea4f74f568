"""Continuous normalizing flows (issue 6): the properties every backend's CNF must have, and JAX/torch agreement.

Every flow here is small (width 8) and shares shapes, so each JAX program compiles once per shape; flows are
cached across tests (``_flow``). Float64 and tight tolerances throughout, so differences measure the code, not
the solver.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import pyneuralode as pn

from helpers import rel_err

BACKENDS = ("jax", "torch")
TIGHT = pn.StepControl(rtol=1e-10, atol=1e-10)
MLP_FIELD = pn.MLP([2, 8, 8, 2], time_input=True)
SQUASH_FIELD = pn.ConcatSquashMLP([2, 8, 2])
X = 1.5 * np.random.default_rng(0).standard_normal((16, 2))
REG = pn.NLL(kinetic=0.1, jacobian=0.05)


@functools.lru_cache(maxsize=None)
def _flow(backend, *, trace="exact", field=MLP_FIELD, adjoint=pn.DirectAdjoint(), control=TIGHT):
    pytest.importorskip({"jax": "diffrax", "torch": "torchdiffeq"}[backend])
    return pn.CNF(field, trace=trace, adjoint=adjoint, control=control, backend=backend)


def _params(flow):
    return 2.0 * flow.init(0)  # doubled weights: a visibly non-Gaussian density


@pytest.fixture(scope="module", params=BACKENDS)
def flow_backend(request):
    pytest.importorskip({"jax": "diffrax", "torch": "torchdiffeq"}[request.param])
    return request.param


# ---------------------------------------------------------------- properties on each backend
def test_density_integrates_to_one(flow_backend):
    flow = _flow(flow_backend, control=pn.StepControl(rtol=1e-8, atol=1e-8))
    grid = np.linspace(-7.0, 7.0, 61)
    h = grid[1] - grid[0]
    points = np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    density = flow.density(_params(flow), points)
    total = float(np.exp(density.log_prob).sum() * h * h)
    assert abs(total - 1.0) < 1e-2, total
    # the flow is not the identity: the density differs from the base density by more than 0.5 nats somewhere
    assert np.max(np.abs(density.delta_logp)) > 0.5


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(flow_backend, noise):
    flow = _flow(flow_backend, trace="hutchinson", control=pn.StepControl(rtol=1e-9, atol=1e-9))
    params, points, draws = _params(flow), X[:4], 2000
    exact = _flow(flow_backend).density(params, X).delta_logp[:4]
    rng = np.random.default_rng({"rademacher": 1, "gaussian": 2}[noise])
    eps = (rng.integers(0, 2, (4 * draws, 2)) * 2.0 - 1.0 if noise == "rademacher"
           else rng.standard_normal((4 * draws, 2)))
    estimates = flow.density(params, np.tile(points, (draws, 1)), noise=eps).delta_logp.reshape(draws, 4)
    mean, stderr = estimates.mean(0), estimates.std(0, ddof=1) / np.sqrt(draws)
    assert np.all(stderr > 1e-4)  # a real estimator, not the exact trace in disguise
    assert np.all(np.abs(mean - exact) < 3 * stderr), (mean - exact) / stderr


def test_sample_then_log_prob_round_trips(flow_backend):
    flow = _flow(flow_backend)
    params = _params(flow)
    z = np.random.default_rng(5).standard_normal((16, 2))
    x = flow.transform(params, z).ys[-1]
    assert np.max(np.abs(x - z)) > 0.1
    density = flow.density(params, x)
    np.testing.assert_allclose(density.z, z, atol=1e-6, rtol=0)
    # log p(x) = log N(z) - ∫ tr: the sampled points' density is consistent with their base points
    np.testing.assert_allclose(density.log_prob - density.delta_logp, flow.base_log_prob(z), atol=1e-6)
    np.testing.assert_allclose(flow.sample(params, 16, seed=5), x, rtol=0, atol=1e-12)


def test_gradient_matches_finite_differences(flow_backend):
    flow = _flow(flow_backend, field=SQUASH_FIELD)
    params = _params(flow)
    res = flow.value_and_grad(params, X, loss=REG)
    assert res.value == pytest.approx(res.nll + 0.1 * res.kinetic + 0.05 * res.jacobian, rel=1e-12)
    rng, h = np.random.default_rng(3), 1e-5
    for _ in range(2):
        v = rng.standard_normal(params.shape)
        plus = flow.value_and_grad(params + h * v, X, loss=REG).value
        minus = flow.value_and_grad(params - h * v, X, loss=REG).value
        assert (plus - minus) / (2 * h) == pytest.approx(res.grad_params @ v, rel=1e-6)
    u = rng.standard_normal(X.shape)
    plus = flow.value_and_grad(params, X + h * u, loss=REG).value
    minus = flow.value_and_grad(params, X - h * u, loss=REG).value
    assert (plus - minus) / (2 * h) == pytest.approx(np.sum(res.grad_x * u), rel=1e-6)


def test_regularisers_are_the_integrals_they_name():
    """Kinetic energy and Jacobian norm of a linear field f = A z are known in closed form. (torch only: JAX's
    integrals equal torch's to 1e-7 in test_concat_squash_and_regularisers_agree_across_backends.)"""
    field = pn.Linear(2, 2, bias=False)
    a = np.array([[-0.3, 0.8], [-0.5, 0.2]])
    flow = _flow("torch", field=field)
    x = X[:16]
    res = flow.value_and_grad(a.reshape(-1), x, loss=REG)
    assert res.jacobian == pytest.approx(np.sum(a * a), rel=1e-9)  # ∫_0^1 ||A||_F² dt
    # z(t) = expm(A (t - 1)) x, so ∫_0^1 ||A z(t)||² dt by quadrature of the exact trajectory
    w, v = np.linalg.eig(a)
    ts = np.linspace(0.0, 1.0, 4001)
    traj = np.stack([np.real(v @ np.diag(np.exp(w * (t - 1.0))) @ np.linalg.inv(v)) @ x.T for t in ts])
    speed = np.sum(np.einsum("ij,tjn->tin", a, traj) ** 2, axis=1).mean(-1)
    assert res.kinetic == pytest.approx(np.trapezoid(speed, ts), rel=1e-6)
    # and the log-density of a linear flow is exact: log p(x) = log N(z) - tr(A)
    density = flow.density(a.reshape(-1), x)
    np.testing.assert_allclose(density.delta_logp, -np.trace(a), rtol=1e-9)


# ---------------------------------------------------------------- JAX vs torch
def _both(**kwargs):
    pytest.importorskip("diffrax")
    pytest.importorskip("torchdiffeq")
    return _flow("jax", **kwargs), _flow("torch", **kwargs)


@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=repr)
def test_exact_log_density_and_gradient_agree_across_backends(adjoint):
    jax_flow, torch_flow = _both(adjoint=adjoint)
    params = _params(jax_flow)
    dj, dt = jax_flow.density(params, X), torch_flow.density(params, X)
    assert rel_err(dt.log_prob, dj.log_prob) < 1e-7
    gj, gt = jax_flow.value_and_grad(params, X), torch_flow.value_and_grad(params, X)
    assert gt.value == pytest.approx(gj.value, rel=1e-7)
    assert rel_err(gt.grad_params, gj.grad_params) < 1e-7
    assert rel_err(gt.grad_x, gj.grad_x) < 1e-7


def test_hutchinson_estimates_agree_with_the_same_noise():
    jax_flow, torch_flow = _both(trace="hutchinson")
    params = _params(jax_flow)
    eps = jax_flow.draw_noise(len(X), seed=7)
    dj, dt = jax_flow.density(params, X, noise=eps), torch_flow.density(params, X, noise=eps)
    assert rel_err(dt.log_prob, dj.log_prob) < 1e-7
    gj, gt = jax_flow.value_and_grad(params, X, noise=eps), torch_flow.value_and_grad(params, X, noise=eps)
    assert rel_err(gt.grad_params, gj.grad_params) < 1e-7
    # ... and a different ε gives a different estimate (the noise is really used)
    other = jax_flow.density(params, X, noise=jax_flow.draw_noise(len(X), seed=8))
    assert rel_err(other.log_prob, dj.log_prob) > 1e-4


def test_concat_squash_and_regularisers_agree_across_backends():
    jax_flow, torch_flow = _both(field=SQUASH_FIELD)
    params = _params(jax_flow)
    gj, gt = jax_flow.value_and_grad(params, X, loss=REG), torch_flow.value_and_grad(params, X, loss=REG)
    for name in ("value", "nll", "kinetic", "jacobian"):
        assert getattr(gt, name) == pytest.approx(getattr(gj, name), rel=1e-7), name
    assert rel_err(gt.grad_params, gj.grad_params) < 1e-7


def test_nfe_counts_across_backends():
    """Same steps on both backends, and each backend's counts follow Dopri5's cost exactly: torch counts calls of
    the augmented dynamics and autograd hooks; JAX derives them from step statistics and the VJP probe.

    Forward counts are equal (a rejected step reuses its first stage in both libraries). Backward counts differ
    where the libraries do: diffrax's DirectAdjoint runs the VJPs of rejected steps too (their outputs are masked,
    not dropped), while torch's hooks fire only for evaluations that reach the loss."""
    jax_flow, torch_flow = _both()
    params = _params(jax_flow)
    dj, dt = jax_flow.density(params, X), torch_flow.density(params, X)
    gj, gt = jax_flow.value_and_grad(params, X), torch_flow.value_and_grad(params, X)
    for stats in (dj.stats, dt.stats, gj.stats, gt.stats):
        assert (stats.steps_accepted, stats.steps_rejected) == (dj.stats.steps_accepted, dj.stats.steps_rejected)
    accepted, rejected = dj.stats.steps_accepted, dj.stats.steps_rejected
    assert accepted > 5
    attempted = accepted + rejected  # 2 evaluations pick the first step (Hairer), f0 is the first FSAL stage
    assert dt.stats.nfe_forward == gt.stats.nfe_forward == 2 + 6 * attempted
    assert dj.stats.nfe_forward == gj.stats.nfe_forward == 2 + 6 * attempted
    assert gt.stats.nfe_backward == 1 + 6 * accepted
    assert gj.stats.nfe_backward == 1 + 6 * attempted


def test_concat_squash_layer_matches_numpy(flow_backend):
    layer = pn.ConcatSquash(3, 4)
    assert [s.name for s in layer.param_specs()] == ["weight", "bias", "gate_weight", "gate_bias",
                                                     "hyper_bias_weight"]
    params = pn.init_params(layer, 1)
    w, b, gw, gb, hw = pn.unflatten(layer, params)
    y, t = np.random.default_rng(0).standard_normal((5, 3)), 0.7
    expected = (y @ w.T + b) / (1 + np.exp(-(t * gw[:, 0] + gb))) + t * hw[:, 0]
    # compiled on its own (3 -> 4 features is no ODE field, and a non-square layer catches transposed weights)
    if flow_backend == "jax":
        import jax
        import jax.numpy as jnp
        from pyneuralode.backends.jax._field import compile_field
        with jax.enable_x64(True):
            got = np.asarray(compile_field(layer)(jnp.asarray(params), jnp.asarray(t), jnp.asarray(y)))
    else:
        import torch
        from pyneuralode.backends.torch import VectorField, load_flat
        module = VectorField(layer, dtype=torch.float64, device=torch.device("cpu"))
        load_flat(module, params)
        got = module(torch.tensor(t, dtype=torch.float64), torch.as_tensor(y)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_spec_errors():
    flow = pn.CNF(MLP_FIELD, backend="jax")
    params = flow.init(0)
    with pytest.raises(pn.SpecError, match=r"shape \(N, 2\).*x\[None\]"):
        flow.log_prob(params, np.zeros(2))
    with pytest.raises(pn.SpecError, match=r"shape \(N, 2\)"):
        flow.log_prob(params, np.zeros((4, 3)))
    with pytest.raises(pn.SpecError, match="NaN"):
        flow.log_prob(params, np.full((4, 2), np.nan))
    with pytest.raises(pn.SpecError, match="parameters"):
        flow.log_prob(params[:-1], X)
    with pytest.raises(pn.SpecError, match="only used with trace='hutchinson'"):
        flow.log_prob(params, X, noise=np.ones_like(X))
    with pytest.raises(pn.SpecError, match="Unknown trace 'hutchinsn'.*'exact', 'hutchinson'"):
        pn.CNF(MLP_FIELD, trace="hutchinsn")
    with pytest.raises(pn.SpecError, match="Unknown noise 'normal'.*'rademacher', 'gaussian'"):
        pn.CNF(MLP_FIELD, trace="hutchinson", noise="normal")
    hutch = pn.CNF(MLP_FIELD, trace="hutchinson", backend="torch")
    with pytest.raises(pn.SpecError, match="noise must have the shape of x"):
        hutch.log_prob(params, X, noise=np.ones((3, 2)))
    with pytest.raises(pn.SpecError, match="last width equal the first"):
        pn.CNF(pn.MLP([2, 8, 3], time_input=True))
    with pytest.raises(pn.SpecError, match="t0 and t1 must differ"):
        pn.CNF(MLP_FIELD, t0=1.0, t1=1.0)
    with pytest.raises(pn.NotSupportedError, match="explicit solvers"):
        pn.CNF(MLP_FIELD, solver=pn.Kvaerno5())
    with pytest.raises(pn.SpecError, match="Unknown backend 'jaxx'.*'julia'"):
        pn.CNF(MLP_FIELD, backend="jaxx")
    with pytest.raises(pn.NotSupportedError, match="CheckpointAdjoint.*not available on backend 'julia'"):
        pn.CNF(MLP_FIELD, backend="julia", adjoint=pn.CheckpointAdjoint())
    with pytest.raises(pn.SpecError, match="pn.NLL"):
        flow.value_and_grad(params, X, loss=pn.L1(np.zeros(3)))
    with pytest.raises(pn.SpecError, match="kinetic must be a finite number >= 0"):
        pn.NLL(kinetic=-1.0)
    with pytest.raises(pn.SpecError, match="n must be a positive integer"):
        flow.sample(params, 0)
