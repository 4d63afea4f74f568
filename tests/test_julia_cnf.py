"""``pn.CNF(backend="julia")`` (issue 6 item 2): PyNeuralODEJL's own augmented dynamics.

Part 1 runs everywhere: the wiring (program table, errors that name the fix, the field description with
ConcatSquash) and the trace algorithm the Julia code uses, restated in numpy — forward-mode directional
derivatives through the layers (``spec_jvp`` in julia/src/layers.jl) — checked against finite differences.

Part 2 is marked ``julia`` and runs only where Julia exists (the ``julia`` workflow starts Julia before
anything imports torch): JAX vs Julia log-densities and gradients at rtol = atol = 1e-10 in float64, for the
exact trace (DirectAdjoint and BacksolveAdjoint), Hutchinson with the same ε, ConcatSquash with the RNODE
regularisers, sampling and NFE.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rel_err

import pyneuralode as pn
from pyneuralode.backends.julia._program import describe_spec

TIGHT = pn.StepControl(rtol=1e-10, atol=1e-10)
MLP_FIELD = pn.MLP([2, 8, 8, 2], time_input=True)
SQUASH_FIELD = pn.ConcatSquashMLP([2, 8, 2])
X = 1.5 * np.random.default_rng(0).standard_normal((16, 2))
REG = pn.NLL(kinetic=0.1, jacobian=0.05)

julia = pytest.mark.julia


# ---------------------------------------------------------------- part 1: no Julia needed
def test_cnf_is_wired_for_julia():
    from pyneuralode._cnf import _PROGRAMS

    assert _PROGRAMS["julia"] == "pyneuralode.backends.julia._cnf:JuliaCNFProgram"
    flow = pn.CNF(MLP_FIELD, backend="julia")  # construction needs no Julia; compiling does
    assert flow.num_params == pn.CNF(MLP_FIELD, backend="jax").num_params


def test_errors_name_the_fix():
    with pytest.raises(pn.NotSupportedError, match="CheckpointAdjoint.*backend='jax'"):
        pn.CNF(MLP_FIELD, backend="julia", adjoint=pn.CheckpointAdjoint())
    with pytest.raises(pn.NotSupportedError, match="explicit solvers"):
        pn.CNF(MLP_FIELD, backend="julia", solver=pn.Rodas5P())
    flow = pn.CNF(MLP_FIELD, backend="julia")
    with pytest.raises(pn.NotSupportedError, match="FlowTrainer.*'julia'.*value_and_grad"):
        pn.FlowTrainer(flow, optimizer=pn.Adam(lr=1e-3))


def test_cuda_is_refused_with_the_fix():
    from pyneuralode.backends.julia._cnf import cnf_options

    flow = pn.CNF(MLP_FIELD, backend="julia", device="cuda")
    with pytest.raises(pn.NotSupportedError, match="CPU only.*backend='jax'/'torch'"):
        cnf_options(flow)


def test_without_julia_the_flow_says_how_to_get_it():
    from pyneuralode.backends.julia import julia_available

    if julia_available()[0]:
        pytest.skip("Julia is available here")
    flow = pn.CNF(MLP_FIELD, backend="julia")
    with pytest.raises(pn.BackendUnavailable, match="juliaup"):
        flow.log_prob(flow.init(0), X)


def test_concat_squash_compiles_in_the_julia_field_description():
    assert describe_spec(SQUASH_FIELD) == "squash,2,8;act,tanh;squash,8,2"
    assert describe_spec(MLP_FIELD) == "linear,2,8,1,1;act,tanh;linear,8,8,1,0;act,tanh;linear,8,2,1,0"


def test_julia_field_description_refuses_a_skip_connection_instead_of_dropping_it():
    # A nested Sequential is a plain chain and flattens; a Residual adds its input back, which the chain the Julia
    # package builds cannot express: compiling only its inner layers would be a silently different field.
    nested = pn.Sequential(pn.Linear(2, 8), pn.Sequential(pn.Activation("tanh"), pn.Linear(8, 2)))
    assert describe_spec(nested) == "linear,2,8,1,0;act,tanh;linear,8,2,1,0"
    for field in (pn.Residual(pn.MLP([2, 8, 2])), pn.Sequential(pn.Linear(2, 2), pn.Residual(pn.Linear(2, 2)))):
        with pytest.raises(pn.NotSupportedError, match=r"Residual layers are not available .* pn\.dynamics"):
            describe_spec(field)


# The algorithm of julia/src/layers.jl `spec_jvp` and julia/src/cnf.jl `CNFDynamics`, restated in numpy with
# the same array shapes ((features, B) values, (features, B, K) directions; the time input has tangent 0).
_DERIV = {"tanh": lambda x: 1 - np.tanh(x) ** 2, "softplus": lambda x: 1 / (1 + np.exp(-x))}
_ACT = {"tanh": np.tanh, "softplus": lambda x: np.logaddexp(x, 0)}


def _numpy_jvp(spec, params, z, V, t):
    tensors = iter(pn.unflatten(spec, params))
    x = z
    for layer in spec.expand().layers:
        if isinstance(layer, pn.Activation):
            x, V = _ACT[layer.name](x), _DERIV[layer.name](x)[:, :, None] * V
        elif isinstance(layer, pn.ConcatSquash):
            w, b, gw, gb, hw = (next(tensors) for _ in range(5))
            gate = 1 / (1 + np.exp(-(gw[:, 0] * t + gb)))
            x = (w @ x + b[:, None]) * gate[:, None] + hw[:, 0:1] * t
            V = np.einsum("oi,ibk->obk", w, V) * gate[:, None, None]
        else:
            w, b = next(tensors), next(tensors)
            if layer.time_input:
                x = w @ np.vstack([x, np.full((1, x.shape[1]), t)]) + b[:, None]
                V = np.einsum("oi,ibk->obk", w[:, :-1], V)
            else:
                x, V = w @ x + b[:, None], np.einsum("oi,ibk->obk", w, V)
    return x, V


@pytest.mark.parametrize("field", [MLP_FIELD, SQUASH_FIELD], ids=["mlp", "squash"])
def test_trace_algorithm_restated_in_numpy_matches_finite_differences(field):
    params = pn.CNF(field, backend="jax").init(3)
    z = X[:5].T.copy()                                   # (D, B)
    D, B = z.shape
    eps = np.random.default_rng(1).choice([-1.0, 1.0], size=(D, B))
    basis = np.zeros((D, B, D))
    for j in range(D):
        basis[j, :, j] = 1.0
    _, cols = _numpy_jvp(field, params, z, basis, 0.3)
    h = 1e-6
    for j in range(D):                                   # column j of ∂f/∂z by central differences
        e = np.zeros_like(z)
        e[j] = h
        fd = (_numpy_jvp(field, params, z + e, basis, 0.3)[0] - _numpy_jvp(field, params, z - e, basis, 0.3)[0]) / (2 * h)
        np.testing.assert_allclose(cols[:, :, j], fd, rtol=1e-6, atol=1e-8)
    trace = np.sum(cols * basis, axis=(0, 2))            # exact trace, as CNFDynamics
    np.testing.assert_allclose(trace, [np.trace(cols[:, b, :]) for b in range(B)], rtol=1e-13)
    _, jeps = _numpy_jvp(field, params, z, eps[:, :, None], 0.3)   # Hutchinson: one direction ε
    e_jac = np.sum(eps[:, :, None] * cols, axis=0)                 # εᵀ ∂f/∂z from the basis directions
    np.testing.assert_allclose(np.sum(eps * jeps[:, :, 0], axis=0), np.sum(e_jac * eps.T, axis=1), rtol=1e-12)


# ---------------------------------------------------------------- part 2: Julia vs JAX
def _pair(*, trace="exact", field=MLP_FIELD, adjoint=None, control=TIGHT):
    pytest.importorskip("diffrax")
    kw = {"trace": trace, "adjoint": adjoint or pn.DirectAdjoint(), "control": control}
    return pn.CNF(field, backend="jax", **kw), pn.CNF(field, backend="julia", **kw)


@julia
@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=repr)
def test_exact_log_density_and_gradient_agree_with_jax(jl, adjoint):
    jax_flow, julia_flow = _pair(adjoint=adjoint)
    params = jax_flow.init(0)
    dj, dl = jax_flow.density(params, X), julia_flow.density(params, X)
    assert rel_err(dl.log_prob, dj.log_prob) < 1e-7
    assert rel_err(dl.z, dj.z) < 1e-7
    gj, gl = jax_flow.value_and_grad(params, X), julia_flow.value_and_grad(params, X)
    assert gl.value == pytest.approx(gj.value, rel=1e-7)
    assert rel_err(gl.grad_params, gj.grad_params) < 1e-7
    assert rel_err(gl.grad_x, gj.grad_x) < 1e-7
    assert gl.stats.nfe_forward > 0 and gl.stats.nfe_backward > 0


@julia
def test_hutchinson_agrees_with_jax_on_the_same_noise(jl):
    jax_flow, julia_flow = _pair(trace="hutchinson")
    params = jax_flow.init(0)
    eps = jax_flow.draw_noise(len(X), seed=7)
    dj, dl = jax_flow.density(params, X, noise=eps), julia_flow.density(params, X, noise=eps)
    assert rel_err(dl.log_prob, dj.log_prob) < 1e-7
    gj, gl = jax_flow.value_and_grad(params, X, noise=eps), julia_flow.value_and_grad(params, X, noise=eps)
    assert rel_err(gl.grad_params, gj.grad_params) < 1e-7
    assert rel_err(gl.grad_x, gj.grad_x) < 1e-7
    other = julia_flow.density(params, X, noise=jax_flow.draw_noise(len(X), seed=8))
    assert rel_err(other.log_prob, dl.log_prob) > 1e-4


@julia
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_concat_squash_and_regularisers_agree_with_jax(jl, trace):
    jax_flow, julia_flow = _pair(field=SQUASH_FIELD, trace=trace)
    params = jax_flow.init(0)
    eps = jax_flow.draw_noise(len(X), seed=3) if trace == "hutchinson" else None
    gj = jax_flow.value_and_grad(params, X, loss=REG, noise=eps)
    gl = julia_flow.value_and_grad(params, X, loss=REG, noise=eps)
    for name in ("value", "nll", "kinetic", "jacobian"):
        assert getattr(gl, name) == pytest.approx(getattr(gj, name), rel=1e-7), name
    assert rel_err(gl.grad_params, gj.grad_params) < 1e-7


@julia
def test_sample_then_log_prob_round_trips(jl):
    _, flow = _pair(field=SQUASH_FIELD)
    params = flow.init(1)
    z = np.random.default_rng(2).standard_normal((8, 2))
    x = flow.transform(params, z).ys[-1]
    assert np.max(np.abs(flow.density(params, x).z - z)) < 1e-6


@julia
def test_max_steps_uses_the_shared_wording(jl):
    flow = pn.CNF(MLP_FIELD, backend="julia", control=pn.StepControl(rtol=1e-12, atol=1e-12, max_steps=3))
    with pytest.raises(pn.MaxStepsError, match="max_steps=3"):
        flow.log_prob(flow.init(0), X)
