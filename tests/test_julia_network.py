"""``pn.Network(backend="julia")`` (issue 5 item 3): the MNIST networks compiled to Lux in PyNeuralODEJL.

Part 1 runs everywhere: the description the Julia parser reads, the errors, and the layout map restated in
numpy (a canonical Conv2d weight read column-major is Lux's WHCN `(kw, kh, in, out)` cross-correlation kernel;
group norm and flatten on WHCN arrays), checked against the JAX backend's layers.

Part 2 is marked ``julia`` and runs only where Julia exists (Julia started before torch): JAX vs Julia outputs
and gradients on small MNIST networks — ResNet, RK-Net with a fixed-step solver both backends implement
identically (Midpoint; pyneuralode's RK4 is the 3/8 rule, OrdinaryDiffEq's the classic one), ODE-Net with
softplus at tight tolerance — and the parameter layout round trip.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rel_err

import pyneuralode as pn
from pyneuralode.backends.julia._network import NETWORK_LAYERS, describe_network

C = 4
X = np.random.default_rng(0).random((2, 1, 28, 28))
LABELS = np.array([3, 7])

julia = pytest.mark.julia


def _net(kind, backend, **kw):
    return pn.Network(pn.problems.mnist_model(kind, channels=C, **kw), input_shape=(1, 28, 28), backend=backend,
                      dtype="float64")


# ---------------------------------------------------------------- part 1: no Julia needed
def test_description_of_the_odenet():
    text = describe_network(pn.problems.mnist_model("odenet", channels=C).expand())
    items = text.split(";")
    assert items[:3] == ["seq,13", "conv,1,4,3,3,1,1,0,0,1,0", "gn,4,4,1e-05"]
    assert "conv,4,4,4,4,2,2,1,1,1,0" in items                   # kernel 4, stride 2, padding 1
    ode = items.index("ode,1.0,392")
    assert items[ode + 1] == "seq,7" and items[ode + 4] == "conv,4,4,3,3,1,1,1,1,1,1"   # ConcatConv2d: time channel
    assert items[-3:] == ["pool", "flatten", "linear,4,10,1,0"]
    res = describe_network(pn.problems.mnist_model("resnet", channels=C).expand()).split(";")
    assert res.count("res") == 6 and "conv,4,4,3,3,1,1,1,1,0,0" in res                   # bias-free convs


def test_every_item_kind_is_parsed_by_julia():
    from pathlib import Path

    network_jl = (Path(pn.__file__).parent / "julia" / "src" / "network.jl").read_text()
    for kind in NETWORK_LAYERS.values():
        assert f'kind == "{kind}"' in network_jl, kind


def test_unsupported_layers_and_losses_name_the_fix():
    spec = pn.Sequential(pn.Flatten(), pn.ConcatSquash(4, 2))
    with pytest.raises(pn.NotSupportedError, match="ConcatSquash.*backend='jax' or 'torch'"):
        describe_network(spec)


def test_network_is_wired_for_julia():
    from pyneuralode._network import NETWORK_BACKENDS

    assert "julia" in NETWORK_BACKENDS
    from pyneuralode.backends.julia import julia_available

    if julia_available()[0]:
        pytest.skip("Julia is available here")
    with pytest.raises(pn.BackendUnavailable, match="juliaup"):
        _ = _net("resnet", "julia").program


def _whcn_crosscor(x, weight, bias, stride, pad):
    """Lux `Conv(...; cross_correlation=true)` on a WHCN array, written out: Y[x, y, o, n] =
    Σ W[a, b, i, o] X[x s + a - p, y s + b - p, i, n], with W the canonical segment read column-major."""
    kw, kh, _, cout = weight.shape
    (sw, sh), (pw, ph) = stride, pad
    xp = np.pad(x, ((pw, pw), (ph, ph), (0, 0), (0, 0)))
    ow = (xp.shape[0] - kw) // sw + 1
    oh = (xp.shape[1] - kh) // sh + 1
    out = np.zeros((ow, oh, cout, x.shape[3]))
    for a in range(kw):
        for b in range(kh):
            patch = xp[a:a + sw * ow:sw, b:b + sh * oh:sh]                      # (ow, oh, cin, n)
            out += np.einsum("xyin,io->xyon", patch, weight[a, b])
    return out + bias[None, None, :, None]


def test_layout_map_restated_in_numpy_matches_the_jax_layers():
    jax = pytest.importorskip("jax")
    from pyneuralode.backends.jax._field import compile_field

    jax.config.update("jax_enable_x64", True)
    conv = pn.Conv2d(3, 5, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0))
    params = pn.init_params(conv, 4)
    x = np.random.default_rng(1).normal(size=(2, 3, 9, 8))                      # NCHW
    expected = np.asarray(compile_field(conv)(params, 0.0, x))                  # (2, 5, H', W')
    n_w = 5 * 3 * 3 * 2
    weight = params[:n_w].reshape((2, 3, 3, 5), order="F")                       # (kw, kh, in, out)
    got = _whcn_crosscor(x.T, weight, params[n_w:], stride=(1, 2), pad=(0, 1))  # x.T is WHCN
    np.testing.assert_allclose(got.T, expected, rtol=1e-12, atol=1e-12)
    # group norm on WHCN, consecutive channels per group; flatten of WHCN == row-major flatten of (C, H, W)
    gn = pn.GroupNorm(2, 4)
    gp = np.random.default_rng(2).normal(size=8)
    xg = np.random.default_rng(3).normal(size=(2, 4, 5, 6))
    w_, h_, _, b_ = xg.T.shape
    grouped = xg.T.reshape((w_ * h_ * 2, 2, b_), order="F")
    d = grouped - grouped.mean(axis=0, keepdims=True)
    y = (d / np.sqrt((d ** 2).mean(axis=0, keepdims=True) + 1e-5)).reshape(xg.T.shape, order="F")
    y = y * gp[:4][None, None, :, None] + gp[4:][None, None, :, None]
    np.testing.assert_allclose(y.T, np.asarray(compile_field(gn)(gp, 0.0, xg)), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(xg.T.reshape((-1, b_), order="F").T, xg.reshape(2, -1))


# ---------------------------------------------------------------- part 2: Julia vs JAX
def _both(kind, **kw):
    pytest.importorskip("diffrax")
    return _net(kind, "jax", **kw), _net(kind, "julia", **kw)


@julia
def test_resnet_agrees_with_jax(jl):
    jax_net, julia_net = _both("resnet")
    params = jax_net.init(0)
    j, lj = jax_net.value_and_grad(params, X, LABELS), julia_net.value_and_grad(params, X, LABELS)
    np.testing.assert_allclose(lj.outputs, j.outputs, rtol=1e-10, atol=1e-12)
    assert rel_err(lj.grad_params, j.grad_params) < 1e-9
    assert lj.block_stats == ()


@julia
def test_rknet_fixed_step_agrees_with_jax(jl):
    """DirectAdjoint (discretise-then-optimise; ReverseDiffAdjoint on Julia) with 4 Midpoint steps."""
    control = pn.StepControl(dt=0.25, max_steps=4)
    jax_net, julia_net = _both("rknet", solver=pn.Midpoint(), control=control)
    params = jax_net.init(0)
    j, lj = jax_net.value_and_grad(params, X, LABELS), julia_net.value_and_grad(params, X, LABELS)
    assert abs(lj.value - j.value) <= 1e-10 * abs(j.value)
    assert rel_err(lj.grad_params, j.grad_params) < 1e-10
    (stats,) = lj.block_stats
    assert stats.steps_accepted == 4 and stats.nfe_forward >= 8 and stats.nfe_backward > 0


@julia
def test_odenet_with_smooth_field_agrees_with_jax(jl):
    jax_net, julia_net = (pn.Network(pn.problems.mnist_model("odenet", channels=2, tol=1e-8, activation="softplus"),
                                     input_shape=(1, 28, 28), backend=b, dtype="float64") for b in ("jax", "julia"))
    params = jax_net.init(0)
    j, lj = jax_net.value_and_grad(params, X[:1], LABELS[:1]), julia_net.value_and_grad(params, X[:1], LABELS[:1])
    assert abs(lj.value - j.value) <= 1e-6 * abs(j.value)
    assert rel_err(lj.grad_params, j.grad_params) < 1e-6
    logits, stats = julia_net.apply(params, X[:1], return_stats=True)
    np.testing.assert_allclose(logits, lj.outputs, rtol=1e-12)
    assert stats.nfe_forward > 0 and lj.stats.nfe_backward > 0


@julia
def test_parameter_layout_round_trip(jl):
    net = _net("odenet", "julia")
    params = net.init(0)
    tensors = pn.unflatten(net.spec, params)
    got = net.program.parameters(params)
    assert len(got) == len(tensors)
    for canonical, julia_array in zip(tensors, got):
        if canonical.ndim == 4:     # Conv2d (out, in, kh, kw) <-> Lux (kw, kh, in, out)
            np.testing.assert_array_equal(julia_array, canonical.transpose(3, 2, 1, 0))
        else:                       # Linear (out, in) and vectors are the same arrays
            np.testing.assert_array_equal(julia_array, canonical)
