"""MNIST networks (issue 5): image layers, pn.Network on JAX and torch, cross-backend agreement, NFE, bad input.

Small shapes (4 channels, batches of 2) keep this fast; the full-size network's parameter counts are checked
without running it.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode._layers import walk

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
F = torch.nn.functional

C = 4
RNG = np.random.default_rng(0)
X = RNG.random((2, 1, 28, 28))
LABELS = np.array([3, 7])


def _net(kind, backend, dtype="float64", **kw):
    return pn.Network(pn.problems.mnist_model(kind, channels=C, **kw), input_shape=(1, 28, 28), backend=backend,
                      dtype=dtype)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tensors are tiny: torch's OpenMP threads only add overhead (10x and more on a loaded 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rknet_results():
    """value_and_grad of the RK-Net (fixed-step RK4, DirectAdjoint) on both backends, float64."""
    out = {}
    for backend in ("jax", "torch"):
        net = _net("rknet", backend)
        out[backend] = (net, net.value_and_grad(net.init(0), X, LABELS))
    return out


# ------------------------------------------------------------------ spec
@pytest.mark.parametrize("kind, count", [("odenet", 208_266), ("rknet", 208_266), ("resnet", 576_778)])
def test_parameter_counts_match_torchdiffeq(kind, count):
    assert pn.num_params(pn.problems.mnist_model(kind)) == count


def test_spec_shapes_and_blocks():
    spec = pn.problems.mnist_model("odenet")
    assert spec.out_shape((1, 28, 28)) == (10,)
    net = pn.Network(spec, input_shape=(1, 28, 28))
    assert len(net.ode_blocks) == 1 and net.ode_blocks[0].t1 == 1.0
    assert isinstance(net.ode_blocks[0].adjoint, pn.BacksolveAdjoint)
    rk = pn.problems.mnist_model("rknet").layers[7]
    assert isinstance(rk, pn.ODEBlock) and rk.solver == pn.RK4() and rk.adjoint == pn.DirectAdjoint()
    assert pn.ConcatConv2d(4, 4, 3).param_specs()[0].shape == (4, 5, 3, 3)  # time channel in the weight


def test_groups_and_activation_options():
    """``groups`` sets every GroupNorm (``--quick`` keeps two channels per group); ``activation`` the ODE field's."""
    spec = pn.problems.mnist_model("odenet", channels=16, groups=8, activation="softplus")
    norms = [layer for layer in walk(spec) if isinstance(layer, pn.GroupNorm)]
    assert len(norms) == 6 and {n.num_groups for n in norms} == {8}
    acts = [layer.name for layer in walk(spec.layers[7]) if isinstance(layer, pn.Activation)]
    assert acts == ["softplus", "softplus"]
    assert {n.num_groups for n in walk(pn.problems.mnist_model("odenet", channels=16))
            if isinstance(n, pn.GroupNorm)} == {16}


@pytest.mark.parametrize("make, match", [
    (lambda: pn.GroupNorm(3, 8), "divisible"),
    (lambda: pn.Conv2d(0, 4), "in_channels"),
    (lambda: pn.Conv2d(1, 4, kernel_size=(3, 3, 3)), "pair"),
    (lambda: pn.ODEBlock(pn.Conv2d(4, 8, 3, padding=1)).out_shape((4, 6, 6)), "shape of its state"),
    (lambda: pn.ODEBlock(pn.Linear(2, 2), solver=pn.RK4()), "dt"),
    (lambda: pn.Residual(pn.Conv2d(4, 4, 3)).out_shape((4, 6, 6)), "equal shapes"),
    (lambda: pn.Conv2d(1, 4, 5).out_shape((1, 3, 3)), "does not fit"),
    (lambda: pn.problems.mnist_model("vgg"), "odenet"),
    (lambda: pn.problems.mnist_model("resnet", activation="softplus"), "no ODE block"),
    (lambda: pn.problems.mnist_model("odenet", channels=16, groups=3), "divisible"),
])
def test_bad_specs(make, match):
    with pytest.raises(pn.SpecError, match=match):
        make()


# ------------------------------------------------------------------ layers vs torch.nn reference
LAYERS = [
    (pn.Conv2d(3, 5, 3, 1, 1), (3, 7, 7)),
    (pn.Conv2d(3, 5, 4, 2, 1), (3, 7, 7)),
    (pn.Conv2d(3, 5, 3, bias=False), (3, 7, 7)),
    (pn.ConcatConv2d(3, 5, 3, 1, 1), (3, 6, 6)),
    (pn.GroupNorm(2, 4), (4, 5, 5)),
    (pn.Sequential(pn.GlobalAvgPool2d(), pn.Flatten()), (4, 5, 5)),
]


def _torch_reference(layer, tensors, t, x):
    if isinstance(layer, pn.ConcatConv2d):  # torchdiffeq's ConcatConv2d: t first
        x = torch.cat([torch.ones_like(x[:, :1]) * t, x], 1)
    if isinstance(layer, pn.Conv2d):
        conv = torch.nn.Conv2d(layer.weight_in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                               layer.padding, bias=layer.bias).double()
        with torch.no_grad():
            conv.weight.copy_(tensors[0])
            if layer.bias:
                conv.bias.copy_(tensors[1])
        return conv(x)
    if isinstance(layer, pn.GroupNorm):
        gn = torch.nn.GroupNorm(layer.num_groups, layer.num_channels).double()
        with torch.no_grad():
            gn.weight.copy_(tensors[0])
            gn.bias.copy_(tensors[1])
        return gn(x)
    return torch.nn.Flatten()(torch.nn.AdaptiveAvgPool2d((1, 1))(x))


@pytest.mark.parametrize("layer, shape", LAYERS)
@pytest.mark.parametrize("impl", ["canon", "shift", "nchw"])
def test_layers_match_torch_nn(layer, shape, impl, monkeypatch):
    from pyneuralode.backends.jax._field import compile_field
    from pyneuralode.backends.torch import VectorField, load_flat

    monkeypatch.setenv("PYNEURALODE_JAX_CONV", impl)
    jax.config.update("jax_enable_x64", True)
    params = pn.init_params(layer, 1) + RNG.normal(size=pn.num_params(layer)) * 0.1
    x = RNG.normal(size=(2, *shape))
    t = 0.7
    ref = _torch_reference(layer, [torch.as_tensor(a) for a in pn.unflatten(layer, params)], t,
                           torch.as_tensor(x)).detach().numpy()
    out_jax = np.asarray(compile_field(layer)(jax.numpy.asarray(params), t, jax.numpy.asarray(x)))
    field = VectorField(layer, dtype=torch.float64, device=torch.device("cpu"))
    load_flat(field, params)
    out_torch = field(torch.tensor(t, dtype=torch.float64), torch.as_tensor(x)).detach().numpy()
    assert out_jax.shape == ref.shape == (2, *layer.out_shape(shape))
    np.testing.assert_allclose(out_jax, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_torch, ref, rtol=1e-12, atol=1e-12)


def test_group_norm_matches_numpy():
    from pyneuralode.backends.jax._group_norm import group_norm

    jax.config.update("jax_enable_x64", True)
    x = RNG.normal(size=(2, 6, 3, 3))
    w, b = RNG.normal(size=6), RNG.normal(size=6)
    g = x.reshape(2, 3, -1)
    ref = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    ref = ref * w[None, :, None, None] + b[None, :, None, None]
    np.testing.assert_allclose(np.asarray(group_norm(x, w, b, groups=3, eps=1e-5)), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["canon", "shift"])
@pytest.mark.parametrize("kernel, padding", [(3, 1), (3, 0), (1, 0), (4, 1)])
def test_fast_conv_vjp_matches_autodiff_inside_a_loop(impl, kernel, padding, monkeypatch):
    """The custom-VJP / im2col convolutions give autodiff's gradients, also inside a while loop."""
    from pyneuralode.backends.jax import _conv

    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    x = jnp.asarray(RNG.normal(size=(2, 3, 6, 6)))

    def loss(x, w):
        def body(i, z):
            y = _conv.conv2d(z, w, stride=(1, 1), padding=(padding, padding), time=0.1 * i)
            lo = (z.shape[-1] - y.shape[-1]) // 2  # pad back to the carry's shape
            hi = z.shape[-1] - y.shape[-1] - lo
            return jnp.tanh(jnp.pad(y, ((0, 0), (0, 0), (lo, hi), (lo, hi)))[:, :3])
        return jnp.sum(jax.lax.fori_loop(0, 3, body, x) ** 2)

    w = jnp.asarray(RNG.normal(size=(4, 4, kernel, kernel)) * 0.3)  # (out, in + time, k, k), out >= 3
    monkeypatch.setenv("PYNEURALODE_JAX_CONV", "nchw")
    ref = jax.grad(loss, argnums=(0, 1))(x, w)
    monkeypatch.setenv("PYNEURALODE_JAX_CONV", impl)
    got = jax.grad(loss, argnums=(0, 1))(x, w)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ networks
def test_layout_round_trip_torch():
    from pyneuralode.backends.torch import flat_values, load_flat

    net = _net("odenet", "torch")
    params = net.init(3)
    module = net.native()
    load_flat(module, params)
    np.testing.assert_array_equal(flat_values(module), params)
    first_conv = module.flat_parameters()[0]  # Conv2d(1, C, 3) weight, canonical (out, in, kh, kw)
    np.testing.assert_array_equal(first_conv.detach().numpy(), pn.unflatten(net.spec, params)[0])
    assert tuple(first_conv.shape) == (C, 1, 3, 3)


def test_resnet_agrees_across_backends():
    nets = {b: _net("resnet", b) for b in ("jax", "torch")}
    params = nets["jax"].init(0)
    outs = {b: n.value_and_grad(params, X, LABELS) for b, n in nets.items()}
    np.testing.assert_allclose(outs["jax"].outputs, outs["torch"].outputs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outs["jax"].grad_params, outs["torch"].grad_params, rtol=1e-9, atol=1e-12)
    assert outs["jax"].stats == pn.Stats() and outs["jax"].block_stats == ()


def test_rknet_loss_and_gradient_agree_across_backends(rknet_results):
    (_, j), (_, t) = rknet_results["jax"], rknet_results["torch"]
    assert abs(j.value - t.value) <= 1e-12 * abs(t.value)
    scale = np.max(np.abs(t.grad_params))
    assert np.max(np.abs(j.grad_params - t.grad_params)) <= 1e-10 * scale
    assert j.value == pytest.approx(pn.CrossEntropy()(j.outputs, LABELS), rel=1e-12)
    # NFE: 4 RK4 steps of 4 stages forward; backprop runs one VJP per evaluation.
    for res in (j, t):
        assert (res.stats.nfe_forward, res.stats.nfe_backward, res.stats.steps_accepted) == (16, 16, 4)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_rknet_gradient_matches_finite_differences(backend, rknet_results):
    net, res = rknet_results[backend]
    params = net.init(0)
    direction = np.random.default_rng(1).normal(size=params.shape)
    direction /= np.linalg.norm(direction)
    eps = 1e-5
    plus = pn.CrossEntropy()(net.apply(params + eps * direction, X), LABELS)
    minus = pn.CrossEntropy()(net.apply(params - eps * direction, X), LABELS)
    assert (plus - minus) / (2 * eps) == pytest.approx(res.grad_params @ direction, rel=1e-6, abs=1e-9)


def test_odenet_agrees_across_backends_to_its_round_off_sensitivity():
    """ODE-Net (ReLU field, Dopri5, BacksolveAdjoint) at rtol = atol = 1e-8, float64, identical weights and batch.

    Loss and logits agree to the solve's tolerance scale (≤ 1e-6 relative and 1e-6 absolute; measured 4e-9 on one
    machine and 3e-6 relative on one logit of -0.05 on another, where round-off made the controller reject other
    steps — each solve within rtol = 1e-8 per step, both right). The gradient cannot meet the issue's 1e-6 on *any* pair of
    implementations whose arithmetic differs by round-off: the ReLU kinks make the adaptive controller reject
    more than half its steps, and which steps it rejects depends on the last bits. This test proves it on each
    backend alone: multiplying the weights by ``1 + 1e-15·N(0, 1)`` changes the step counts (65 → 64…69 accepted)
    and the gradient by ~3e-5 relative (measured 2e-5 … 4e-5 on both backends), and the JAX–torch gradient
    difference (measured 2.9e-5) is of that same size. A smooth field meets 1e-6 (next tests: softplus 1.7e-15;
    fixed-step RK-Net 1e-10), so the difference is the dynamics, not the machinery.
    """

    def relative(a, b):
        return np.max(np.abs(a - b)) / np.max(np.abs(b))

    res, self_diff = {}, {}
    for backend in ("jax", "torch"):
        net = pn.Network(pn.problems.mnist_model("odenet", channels=2, tol=1e-8), input_shape=(1, 28, 28),
                         backend=backend, dtype="float64")
        params = net.init(0)
        res[backend] = net.value_and_grad(params, X[:1], LABELS[:1])
        nudged = params * (1 + 1e-15 * np.random.default_rng(1).standard_normal(params.shape))
        self_diff[backend] = relative(net.value_and_grad(nudged, X[:1], LABELS[:1]).grad_params,
                                      res[backend].grad_params)
    j, t = res["jax"], res["torch"]
    assert abs(j.value - t.value) <= 1e-6 * abs(t.value)
    np.testing.assert_allclose(j.outputs, t.outputs, rtol=1e-6, atol=1e-6)
    noise = max(self_diff.values())
    assert noise > 1e-6, self_diff  # the gradient is ill-conditioned with respect to round-off ...
    assert relative(j.grad_params, t.grad_params) <= 5 * noise  # ... and the backends differ by no more than that
    for r in (j, t):
        assert r.stats.nfe_forward > 100 and r.stats.nfe_backward > 100


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_odenet_nfe_counts(backend):
    """Dopri5 at 1e-3 on this input: forward NFE = 2 (Hairer's initial step) + 6 per step; backsolve NFE are the
    backward solve's evaluations, by the same rule on both backends (a rejected step reuses its first stage:
    tests/test_jax_backend.py and tests/test_torch_backend.py prove the rule against independent counters)."""
    net = _net("odenet", backend)
    params = net.init(0)
    logits, fstats = net.apply(params, X, return_stats=True)
    res = net.value_and_grad(params, X, LABELS)
    assert res.stats.nfe_forward == fstats.nfe_forward == 2 + 6 * fstats.steps
    assert fstats.steps_rejected == 0 and fstats.steps_accepted == 4
    backward_steps = res.stats.backward_steps_accepted + res.stats.backward_steps_rejected
    assert res.stats.nfe_backward == 2 + 6 * backward_steps
    assert res.stats.backward_steps_accepted >= 4
    np.testing.assert_allclose(res.outputs, logits, rtol=1e-12)


def test_native_objects_compute_apply():
    for backend in ("jax", "torch"):
        net = _net("rknet", backend)
        params = net.init(0)
        expected = net.apply(params, X)
        if backend == "jax":
            with jax.enable_x64(True):  # a float64 native object runs in the caller's JAX, which must have x64 on
                got = np.asarray(net.native(params)(X))
        else:
            got = net.native(params)(torch.as_tensor(X)).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("x, labels, match", [
    (np.zeros((2, 28, 28)), LABELS, r"expects \(batch, 1, 28, 28\)"),
    (np.zeros((2, 3, 28, 28)), LABELS, "expects"),
    (np.zeros((2, 1, 28, 28), dtype=np.uint8), LABELS, "255"),
    (np.zeros((0, 1, 28, 28)), np.zeros(0, np.int64), "empty"),
    (np.full((2, 1, 28, 28), np.nan), LABELS, "NaN"),
    (X, np.array([3, 10]), "out of range"),
    (X, np.array([-1, 2]), "out of range"),
    (X, np.array([3.0, 7.0]), "integer"),
    (X, np.array([3, 7, 1]), "one integer label per sample"),
])
def test_bad_inputs(backend, x, labels, match):
    net = pn.Network(pn.problems.mnist_model("resnet", channels=2), input_shape=(1, 28, 28), backend=backend)
    with pytest.raises(pn.SpecError, match=match):
        net.value_and_grad(net.init(0), x, labels)


def test_bad_network_options():
    spec = pn.problems.mnist_model("resnet", channels=2)
    with pytest.raises(pn.SpecError, match="input_shape="):
        pn.Network(spec)
    with pytest.raises(pn.SpecError, match="expects samples of shape"):
        pn.Network(spec, input_shape=(3, 28, 28))
    with pytest.raises(pn.SpecError, match="logits"):
        pn.Network(pn.Conv2d(1, 2, 3), input_shape=(1, 28, 28))
    with pytest.raises(pn.SpecError, match="classification loss"):
        pn.Network(spec, input_shape=(1, 28, 28)).value_and_grad(np.zeros(pn.num_params(spec)), X, LABELS,
                                                                 loss=pn.L1(np.zeros(2)))
    with pytest.raises((pn.BackendUnavailable, pn.NotSupportedError), match="juliaup|device"):
        pn.Network(spec, input_shape=(1, 28, 28), backend="julia", device="cuda").program


# ------------------------------------------------------------------ pyneuralode compare mnist
def test_compare_mnist_prints_a_comparison():
    """``pyneuralode compare mnist``'s function on a 4-channel ODE-Net and 2 real test images: a Comparison with
    both backends, their NFE, and loss/logits/gradient differences within what ReLU dynamics allow."""
    import argparse

    from pyneuralode.problems.mnist import compare_backends

    args = argparse.Namespace(rtol=1e-6, atol=None, adjoint="BacksolveAdjoint", dtype="float64", seed=0,
                              activation="relu")
    comparison = compare_backends(args, ("jax", "torch"), channels=C, batch=2)
    assert isinstance(comparison, pn.Comparison) and not comparison.skipped
    (j, t), (pair,) = comparison.results, comparison.pairs
    assert (j.backend, t.backend) == ("jax", "torch") and (pair.a, pair.b) == ("jax", "torch")
    assert j.ys.shape == (2, 10) and j.grad_params.shape == (pn.num_params(pn.problems.mnist_model("odenet",
                                                                                                     channels=C)),)
    assert abs(j.value - t.value) <= 1e-5 * abs(t.value)
    assert pair.outputs <= 1e-5 and pair.grad_params <= 1e-2 and np.isnan(pair.grad_y0)
    assert j.nfe_forward > 0 and t.nfe_backward > 0
    text = str(comparison)
    assert "mnist: ODE-Net" in text and "jax vs torch" in text and "n/a" in text
    assert comparison.to_dict()["pairs"][0]["grad_y0"] is None
    assert pair.round_off_floor == max(j.grad_round_off, t.grad_round_off) and "round-off floor" in text


def test_odenet_with_smooth_field_agrees_to_tolerance():
    """The same check as the ReLU ODE-Net above with softplus in the ODE block: loss and gradient agree JAX vs
    torch to ≤ 1e-6 relative at rtol = atol = 1e-8 (measured: loss identical, gradient 1.7e-15, same NFE). So the
    ReLU network's ~1e-4 gradient difference comes from its non-smooth dynamics, not from the machinery."""
    res = {}
    for backend in ("jax", "torch"):
        spec = pn.problems.mnist_model("odenet", channels=2, tol=1e-8, activation="softplus")
        net = pn.Network(spec, input_shape=(1, 28, 28), backend=backend, dtype="float64")
        res[backend] = net.value_and_grad(net.init(0), X[:1], LABELS[:1])
    j, t = res["jax"], res["torch"]
    assert abs(j.value - t.value) <= 1e-6 * abs(t.value)
    assert np.max(np.abs(j.grad_params - t.grad_params)) <= 1e-6 * np.max(np.abs(t.grad_params))
    assert j.stats.nfe_forward == t.stats.nfe_forward
