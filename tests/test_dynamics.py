"""``pn.dynamics``: user vector fields written in NumPy, traced once, compiled by every backend.

The user's own function called on NumPy arrays is the reference: the traced graph (run with the graph's NumPy
op table), each backend's compiled field and its gradients (against central finite differences of the reference)
must all reproduce it. Errors are checked word for word where the words are the fix.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode._graph import LAYERS, NUMPY_OPS, OPS, evaluate
from pyneuralode._numpy_layers import layer_graph
from pyneuralode.backends import BACKEND_NAMES

from helpers import assert_field_matches_reference, model, rel_err, unavailable_reason

U0 = np.array([0.3, 0.55, 0.7])
W = np.array([0.2, 0.9, 0.4])
M = np.array([[0.5, -0.2, 0.1], [0.3, 0.8, -0.4], [-0.6, 0.1, 0.9]])

# name -> f(t, u, p) on a 3-state with params w (3,), M (3, 3), s (scalar, positive) and constant c (3,)
CASES = {
    "add_sub_mul_div": lambda t, u, p: (u + p.w) * 2.0 - u / (p.w + 1.0) - 1.5 / (u + 2),
    "neg_pos_abs": lambda t, u, p: -u + (+p.w) + abs(u - 0.5) + np.abs(p.w - 0.5) + np.fabs(u - 0.6),
    "exp_log": lambda t, u, p: np.exp(u) * np.log(u + 1.0) + np.log1p(u) - np.expm1(p.w),
    "trig": lambda t, u, p: np.sin(u) + np.cos(p.w * u) + np.tan(u) + np.arcsin(u) + np.arccos(u) + np.arctan(u),
    "hyperbolic": lambda t, u, p: (np.sinh(u) + np.cosh(u) * np.tanh(p.w) + np.arcsinh(u - 0.4)
                                   + np.arccosh(u + 1.5) * p.w + np.arctanh(u - 0.2)),
    "sqrt_sign_square": lambda t, u, p: np.sqrt(u) + np.sign(u - 0.5) * np.square(u) + np.reciprocal(u + 1),
    "powers": lambda t, u, p: u ** 3 + (u - 0.6) ** 5 + u ** 0.5 + 2.0 ** u + u ** p.w + np.power(u, 2),
    "max_min": lambda t, u, p: np.maximum(u, p.w) + np.minimum(u, 0.5) + np.clip(u, 0.4, 0.6) + u.clip(max=0.5),
    "arctan2_logaddexp": lambda t, u, p: np.arctan2(u, p.w) + np.logaddexp(u, p.w),
    # thresholds away from the test points (finite differences must not straddle a jump); == and != on the
    # constant c, which they hit exactly
    "comparisons_where": lambda t, u, p: (np.where(u < p.w, u, p.w) + np.where(u <= 0.6, 1.0, u)
                                          + np.where(u > 0.5, u * u, 0.0) + np.where(u >= 0.65, u, -u)
                                          + np.where(p.c == 0.5, 2.0, 3.0) * u + np.where(p.c != 1.0, u, 1.0)),
    "logical": lambda t, u, p: (np.where(np.logical_and(u > 0.4, u < 0.6), u, -u)
                                + np.where((u < 0.4) | (u > 0.65), 1.0, 0.0) + np.where(~(u > 0.5), u, 0.0)
                                + np.where(np.logical_or(u > 0.6, np.logical_not(u > 0.4)), 2 * u, u)),
    "reductions": lambda t, u, p: (np.sum(p.M * u, axis=1) + np.mean(p.M * u, axis=0) + np.prod(p.M + u, axis=1)
                                   + np.max(p.M * u, axis=1) + np.min(p.M * u, axis=0) + np.sum(u) * u
                                   + (p.M * u).sum(axis=1, keepdims=True)[:, 0] + u.mean() + u.prod() + u.max()
                                   + np.amax(u) - np.amin(p.M, axis=(0, 1)) + (p.M * u).mean(axis=-1)),
    # every pairing of vector/matrix operands that do and do not depend on u (backends batch them differently)
    "matmul": lambda t, u, p: (p.M @ u + u @ p.M + np.dot(p.M, u) + np.matmul(u, p.M.T) + u.dot(p.w) * u
                               + (u @ u) * p.w + np.outer(u, u) @ u + u @ np.outer(u, p.w) + p.w @ np.outer(u, u)
                               + (np.outer(u, u) @ p.M)[0] + (p.M @ np.outer(u, p.w))[:, 1] + p.w @ p.M),
    # square systems: a and b each with and without u (backends batch them differently), b a vector or a matrix
    "linalg": lambda t, u, p: (np.linalg.solve(p.M + 3.0 * np.eye(3), u)
                               + np.linalg.solve(p.M + 3.0 * np.eye(3) + np.eye(3) * u, p.w)
                               + np.linalg.inv(p.M + 2.0 * np.eye(3) + np.outer(u, u)) @ u
                               + np.linalg.solve(p.M + 3.0 * np.eye(3), np.stack([u, p.w], axis=1)) @ np.array([1.0, 0.5])
                               + np.linalg.solve(p.M * u + 3.0 * np.eye(3), np.stack([p.w, p.c], axis=1))[:, 1]),
    "stack_concatenate": lambda t, u, p: (np.stack([u[2], u[0] * p.s, u[1]]) + np.concatenate([u[:1], 2 * u[1:]])
                                          + np.stack([u, p.w], axis=-1).sum(axis=1) + np.concatenate([u[:1], p.w[1:]])
                                          + np.stack([p.w, p.c]).sum(0)),
    "independent_of_u": lambda t, u, p: p.w * t + p.c,
    "indexing": lambda t, u, p: (u[np.int64(0)] * u + u[-1] + p.M[1] + p.M[:, 2] + p.M[1:, ::2].sum()
                                 + u[None, :][0] + u[..., 1] + p.M[..., 0] + u[0:3:2].sum() + u[::-1] * p.w
                                 + p.M[::-1, 2] + p.M[1, ::-2].sum() + np.flip(p.M, axis=1)[0] + np.roll(u, 1)
                                 + np.roll(p.M, -1, axis=1)[:, 0] + u[np.array([True, False, True])].sum()
                                 + p.M[0, :, None][[2, 2, 0], 0] + np.take(u, [1, 1, 0]) * u),
    "iterate_and_len": lambda t, u, p: np.stack([x * len(u) for x in u]),
    "lowered_helpers": lambda t, u, p: (u[[2, 0, 1]] + p.M[np.array([1, 1, 0])][:, 0] + np.linalg.norm(u)
                                        + np.linalg.norm(p.M * u, axis=1) + np.hstack([u[:2], u[0]])
                                        + np.vstack([u, p.w]).sum(axis=0) + np.hstack([p.M[:, :1], p.M])[0, :3]
                                        + np.append(u[:2], t) + np.append(p.M[:1, :2], [[u[0]]], axis=1)[0]
                                        + np.concatenate([u[1:], [u[0] * p.s]])
                                        + np.array([[u[0], t], [1.0, u[1]]]).sum(axis=1).repeat([2, 1])),
    "reshape_transpose": lambda t, u, p: (np.reshape(np.outer(u, p.w), (9,))[3:6] + p.M.T[0]
                                          + p.M.transpose()[1] + np.transpose(p.M, (1, 0))[2] + u.reshape(1, 3)[0]
                                          + u.reshape((3, 1)).ravel() + np.ravel(p.M)[:3] + p.M.flatten()[3:6]),
    "squeeze_expand_broadcast": lambda t, u, p: (np.squeeze(np.expand_dims(u, 0)) + u[:, None].squeeze(1)
                                                 + np.broadcast_to(u[0], (3,)) + np.zeros_like(u) + np.ones_like(u)),
    # NumPy written with the graph's ops (no op of their own): what users port from JAX/SciML code
    "lowered_numpy": lambda t, u, p: (np.einsum("ij,j->i", p.M, u) + np.einsum("i,i", u, p.w) * u
                                      + np.einsum("ij,i->j", np.outer(u, u), p.w) + np.var(p.M * u, axis=1)
                                      + np.std(u, ddof=1) + np.cumsum(u * p.w) + np.cumsum(p.M * u, axis=0)[1]
                                      + np.concatenate([np.diff(u * u), u[:1]]) + np.log2(u) + np.log10(u + p.w)
                                      + np.exp2(u) + np.cbrt(u - 0.5) + np.hypot(u, p.w) + np.heaviside(u - 0.5, 0.5)
                                      + np.linalg.norm(u - 0.5, ord=1) + np.linalg.norm(u - 0.6, np.inf)
                                      + np.linalg.norm(u * p.w, 3) + np.inner(u, p.w) + np.vdot(p.M, p.M) * u
                                      + np.cross(u, p.w) + np.array([u[1] * u[2], -u[0], p.s])
                                      + np.array([[u[0], 1.0, 0.0], [0.0, u[1], 0.0], [0.0, 0.0, -1.0]]) @ u
                                      + np.exp(np.array([u[1], -u[0], t])) + np.repeat(u[:1], 3)
                                      + np.tile(u[1:2], 3) + np.full_like(u, 2.0) * u.copy() + u.astype(float)
                                      + np.atleast_1d(u[0]) + np.column_stack([u, p.w])[:, 1]
                                      + np.deg2rad(u) * np.float_power(u, 1.5)
                                      + np.where(np.any(u > 0.6) & np.all(u > 0.2), u, -u)
                                      + np.where(np.logical_xor(u > 0.5, p.w > 0.5), u, 0.0) + np.arctan(u).var()),
    "time_and_constants": lambda t, u, p: np.sin(t) * u + t ** 2 * p.c + p.s * np.exp(-t) + t,
    "literal_array": lambda t, u, p: u * np.array([1.0, 2.0, 3.0]) + np.array(0.5) + np.float64(2.0) * u,
    # forcing from data (fixed and learned values), the state through a table, clamped ends
    "interp": lambda t, u, p: (np.interp(t, [0.0, 0.5, 1.0, 2.0], [1.0, -0.5, 0.3, 2.0]) * u
                               + np.interp(u, [0.2, 0.5, 0.9], p.w) + np.interp(t, [0.5, 1.0, 2.0], p.w) * u
                               + np.interp(u[0], [0.35, 0.4], [2.0, 3.0], left=-1.0, right=4.0)
                               + np.interp(t, [5.0], [0.25]) + np.interp(u * p.s, [0.0, 0.5], [1.0, 2.0])),
}


def _make(fn, name="case", state=3):
    fn.__name__ = name
    return pn.dynamics(fn, state=state, params={"w": W, "M": M, "s": 1.7}, constants={"c": [1.0, -2.0, 0.5]},
                       positive=["s"])


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return _make(CASES[request.param], request.param)


# Networks are graphs of the same ops: every layer lowers to them (the layer ops, LAYERS, and ordinary ones), and
# a field that calls a network runs the network's graph inlined. Each case is one network inside a field.
_FEATURES = pn.Sequential(pn.Linear(2, 6, time_input=True), *(pn.Activation(a) for a in pn.ACTIVATIONS),
                          pn.ConcatSquash(6, 6), pn.Augment(2), pn.Residual(pn.MLP([8, 8], activation="elu")),
                          pn.Linear(8, 2))
_IMAGES = pn.Sequential(pn.ConcatConv2d(3, 4, 3, padding=1), pn.GroupNorm(2, 4), pn.Activation("softplus"),
                        pn.Conv2d(4, 3, 3, padding=1))
_POOLED = pn.Sequential(pn.Conv2d(3, 2, 3, stride=2), pn.GlobalAvgPool2d(), pn.Flatten(), pn.Linear(2, 75))


@pn.dynamics(state=2, nets={"F": _FEATURES})
def feature_layers(t, u, p):
    return p.F(u)


@pn.dynamics(state=(3, 5, 5), nets={"F": _IMAGES, "G": _POOLED})
def image_layers(t, u, p):
    return p.F(u) + 0.1 * np.reshape(p.G(u), (3, 5, 5))


def test_cases_cover_every_op():
    """Every op of the graph appears in some case (so the backend checks below exercise every op): the fields'
    own ops in CASES, the layer ops in the networks' graphs."""
    seen = {node.op for fn in CASES.values() for node in _make(fn).graph.nodes}
    assert seen >= set(OPS) - {"call", *LAYERS}, set(OPS) - seen
    lowered = {node.op for dyn in (feature_layers, image_layers) for node in layer_graph(dyn, dyn.state).nodes}
    assert lowered >= set(LAYERS) and "call" not in lowered


@pytest.mark.parametrize("dyn", [feature_layers, image_layers], ids=["feature layers", "image layers"])
def test_networks_match_their_numpy_definition(backend, dyn):
    """Each layer's compiled graph on each backend equals its NumPy definition, values and both gradients."""
    params = pn.init_params(dyn, 2)
    rng = np.random.default_rng(3)
    u = rng.standard_normal((2, *dyn.state))
    assert_field_matches_reference(backend, dyn, params, 0.4, u, rng.standard_normal(u.shape))


def test_graph_matches_the_numpy_reference(case):
    params = pn.init_params(case, 0)
    for t in (0.3, 1.1):
        expected = case.evaluate(params, t, U0)

        def leaf(node, args, t=t):
            return {"time": lambda: np.asarray(t), "state": lambda: U0, "param": lambda: _param(case, params, node),
                    "constant": lambda: np.array([1.0, -2.0, 0.5]),
                    "literal": lambda: node.attr("value").array}[node.op]()

        np.testing.assert_allclose(evaluate(case.graph, leaf, NUMPY_OPS), expected, rtol=1e-14, atol=1e-14)


def _param(dyn, params, node):
    slot = {s.name: s for s in pn.param_layout(dyn)}[node.attr("name")]
    return params[slot.offset:slot.stop].reshape(slot.shape)


# ---------------------------------------------------------------------- every backend against the reference
def test_backend_values_and_gradients_match_the_reference(backend, case):
    params = pn.init_params(case, 0)
    u = np.stack([U0, U0[::-1] * 0.9])  # a batch of two samples
    r = np.random.default_rng(1).standard_normal(u.shape)
    assert_field_matches_reference(backend, case, params, 0.7, u, r)


# ---------------------------------------------------------------------- the UDE of the issue
ALPHA, DELTA = 1.3, 1.8


@pn.dynamics(state=2, params={"alpha": ALPHA, "delta": DELTA},
             nets={"U": pn.MLP([2, 32, 32, 2], activation="tanh")})
def lotka_volterra_ude(t, u, p):
    m = p.U(u)
    return np.stack([p.alpha * u[0] + m[0], -p.delta * u[1] + m[1]])


def test_param_layout_init_and_names():
    layout = pn.param_layout(lotka_volterra_ude)
    assert [s.name for s in layout] == ["alpha", "delta", "U.0.weight", "U.0.bias", "U.2.weight", "U.2.bias",
                                        "U.4.weight", "U.4.bias"]
    assert [s.offset for s in layout[:3]] == [0, 1, 2]
    m = pn.ODEModel(lotka_volterra_ude)
    params = m.init(seed=3)
    assert params[:2].tolist() == [ALPHA, DELTA]
    # the networks get exactly the seeded init they get on their own
    np.testing.assert_array_equal(params[2:], pn.init_params(pn.MLP([2, 32, 32, 2], activation="tanh"), 3))
    assert m.num_params == 2 + (2 * 32 + 32) + (32 * 32 + 32) + (32 * 2 + 2)


def test_array_params_and_positive_transform():
    @pn.dynamics(state=2, params={"A": [[-1.0, 2.0], [0.5, -3.0]], "k": 0.25}, positive=("k",))
    def linear(t, u, p):
        return p.A @ u * p.k

    layout = pn.param_layout(linear)
    assert [(s.name, s.shape, s.offset) for s in layout] == [("A", (2, 2), 0), ("k", (), 4)]
    params = pn.init_params(linear, 0)
    np.testing.assert_array_equal(params[:4], [-1.0, 2.0, 0.5, -3.0])  # row-major
    assert params[4] == pytest.approx(math.log(0.25))  # stored as log(k)
    u = np.array([1.0, 2.0])
    np.testing.assert_allclose(linear.evaluate(params, 0.0, u), 0.25 * np.array([3.0, -5.5]))
    params[4] = math.log(2.0)
    np.testing.assert_allclose(linear.evaluate(params, 0.0, u), 2.0 * np.array([3.0, -5.5]))
    assert "k" in str(linear.graph) and "exp" in str(linear.graph)


def test_net_call_reference_and_backends(backend):
    params = pn.init_params(lotka_volterra_ude, 0)
    u = np.array([[0.44, 4.6], [1.0, 0.5]])
    r = np.ones_like(u)
    assert_field_matches_reference(backend, lotka_volterra_ude, params, 0.0, u, r)


@pn.dynamics(state=3, params={"k": 0.5}, nets={"V": pn.MLP([3, 8, 3], activation="softplus", time_input=True),
                                                 "W": pn.Sequential(pn.Linear(2, 3), pn.Activation("sigmoid"))})
def forced_with_two_nets(t, u, p):
    return p.V(u) * np.cos(t) + p.W(u[:2] * p.k) - u


def test_time_input_nets_and_two_nets_on_backends(backend):
    """Networks see the field's t (time_input=True) and are laid out in declaration order after the params."""
    assert [s.name for s in pn.param_layout(forced_with_two_nets)] == [
        "k", "V.0.weight", "V.0.bias", "V.2.weight", "V.2.bias", "W.0.weight", "W.0.bias"]
    assert forced_with_two_nets.uses_time
    params = pn.init_params(forced_with_two_nets, 0)
    u = np.stack([U0, 1.5 * U0])
    r = np.random.default_rng(3).standard_normal(u.shape)
    assert_field_matches_reference(backend, forced_with_two_nets, params, 1.3, u, r)


# ---------------------------------------------------------------------- errors at definition time
def _error(fn, state=2, **kwargs):
    with pytest.raises(pn.SpecError) as info:
        pn.dynamics(fn, state=state, **kwargs)
    return str(info.value)


def test_python_if_on_a_traced_value_says_use_np_where():
    def f(t, u, p):
        if u[0] > 0:
            return u
        return -u
    assert "np.where(condition, a, b)" in _error(f)


def test_float_of_a_traced_value_says_use_np_where():
    assert "np.where" in _error(lambda t, u, p: u * math.exp(u[0]))


def test_random_draws_are_refused_not_frozen():
    """``np.random`` inside the function drew once at definition time and became a constant drift (a new user's
    report: the solution was exactly linear in t); a function traced twice must give the same graph. A constant
    NaN is the same graph both times."""
    import random
    message = _error(lambda t, u, p: u * 0 + np.random.normal(size=2), state=2)
    assert message.startswith("<lambda> gave a different graph each time it was traced: it draws random numbers")
    assert "constants={...}" in message
    assert "different graph" in _error(lambda t, u, p: u * random.random(), state=2)
    pn.dynamics(lambda t, u, p: np.where(u > 10, np.nan, -u), state=2)
    with pytest.raises(pn.SpecError, match="different graph each time"):  # a loss is traced when given its target
        pn.loss(lambda ys, target: np.mean((ys - target) ** 2) * random.random())(np.zeros((3, 2)))


def test_unsupported_function_is_named_and_supported_ones_listed():
    msg = _error(lambda t, u, p: np.sort(u))
    assert msg.startswith("np.sort is not supported in a pn.dynamics function. Supported: ")
    assert "np.exp" in msg and "np.stack" in msg and "np.where" in msg
    assert _error(lambda t, u, p: np.floor(u)).startswith("np.floor is not supported")
    assert _error(lambda t, u, p: u // 2).startswith("np.floor_divide is not supported")
    assert _error(lambda t, u, p: u & u).startswith("np.bitwise_and on non-boolean values is not supported")
    assert _error(lambda t, u, p: u * u.argmax()).startswith("x.argmax is not supported in a pn.dynamics function. "
                                                             "Supported: ")
    assert _error(lambda t, u, p: round(u)).startswith("round() is not supported")
    assert _error(lambda t, u, p: u.astype(int)).startswith("x.astype(int64) (a traced value is real; only float "
                                                            "types) is not supported")
    assert _error(lambda t, u, p: np.einsum("ii->i", np.outer(u, u))).startswith(
        "np.einsum('ii->i', ...) (supported: explicit letters, none repeated within one operand, no '...') is not "
        "supported")
    assert _error(lambda t, u, p: np.linalg.det(np.outer(u, u)) * u).startswith("np.linalg.det is not supported")
    assert _error(lambda t, u, p: u * np.linalg.norm(np.outer(u, u), 1)).startswith(
        "np.linalg.norm(..., ord=1) of a matrix (only the Frobenius norm) is not supported")


def test_scipy_on_traced_values_names_np_interp_and_spline():
    """A SciPy CubicSpline called on t failed with "Assigning into an array", interp1d with "object arrays are not
    supported", and scipy.special.erf was named "np.erf"."""
    interpolate, special = pytest.importorskip("scipy.interpolate"), pytest.importorskip("scipy.special")
    times = np.linspace(0.0, 1.0, 5)
    for interpolant in (interpolate.CubicSpline(times, times ** 2), interpolate.interp1d(times, times ** 2)):
        msg = _error(lambda t, u, p: u + interpolant(t))
        assert msg.startswith("SciPy functions cannot run on the traced values of a pn.dynamics function")
        assert msg.endswith("For forcing from data use np.interp(t, times, values), or wrap a SciPy spline "
                            "(CubicSpline, PchipInterpolator, ...) in pn.Spline(...) and call that.")
    assert _error(lambda t, u, p: special.erf(u)).startswith(
        "the ufunc erf (not NumPy's; scipy.special's ufuncs are not traced) is not supported")


@pytest.mark.parametrize("library", ["jax.numpy", "torch"])
def test_another_librarys_functions_say_write_numpy(library):
    """jnp.sin(u) failed with "x.weak_type is not supported", torch.sin(u) with torch's own TypeError."""
    module = pytest.importorskip(library)
    assert _error(lambda t, u, p: module.sin(u)) == (
        f"{library} functions cannot run on the traced values of a pn.dynamics function: write it with NumPy "
        "(np.sin, np.stack, @, ...), which pyneuralode compiles to JAX, torch and Julia itself.")


def test_wrong_derivative_shape():
    msg = _error(lambda t, u, p: u[:1], state=2)
    assert msg == ("<lambda> returned a derivative of shape (1,), but the state has shape (2,): du/dt must have "
                   "the state's shape.")


def test_np_array_of_traced_values_works_and_float_arrays_say_use_np_stack():
    """``np.array([a, b])`` as ``jnp.array`` in JAX (a NumPy object array, stacked when it is used or returned)."""
    swap = pn.dynamics(lambda t, u, p: np.array([u[1], -u[0]]), state=2)
    assert [node.op for node in swap.graph.nodes] == ["time", "state", "getitem", "getitem", "negative", "stack"]
    np.testing.assert_array_equal(swap.evaluate(np.zeros(0), 0.0, [1.0, 2.0]), [2.0, -1.0])
    msg = ("A traced value cannot become a concrete numpy array of numbers (np.array(..., dtype=float), "
           "np.asarray(x, float), or a numpy function outside the supported set) inside a pn.dynamics function: "
           "build arrays of traced values with np.stack([...]) or np.concatenate([...]).")
    assert _error(lambda t, u, p: np.array([u[1], u[0]], dtype=float)) == msg
    assert "np.stack" in _error(lambda t, u, p: [u[1], u[0]])
    assert _error(lambda t, u, p: np.maximum(np.array([u[1], u[0]]), 0.0)).endswith(
        "(A NumPy function on np.array([...]) of traced values compares its elements in Python: build that array "
        "with np.stack([...]) instead.)")


def test_assignment_into_an_array_says_build_with_np_stack():
    def into_numpy(t, u, p):
        du = np.zeros(2)
        du[0] = u[1]
        return du

    def into_traced(t, u, p):
        du = u * 1.0
        du[0] = u[1]
        return du
    for f in (into_numpy, into_traced):
        assert _error(f).startswith("Assigning into an array (du[i] = ...) is not supported")


def test_undeclared_name_lists_the_declared_ones():
    msg = _error(lambda t, u, p: p.beta * u, params={"alpha": 1.0}, nets={"U": pn.MLP([2, 2])})
    assert msg == "p.beta is not declared in pn.dynamics (declared params: alpha; nets: U)."


def test_parameters_read_by_key_as_from_a_dict():
    """``p["alpha"]`` is ``p.alpha`` (code written against a dict of parameters traces unchanged); other keys fail
    at definition naming the fix."""
    by_key = pn.dynamics(lambda t, u, p: np.stack([p["alpha"] * u[0] + np.sin(p["w"] * t), -u[1]]), state=2,
                         params={"alpha": 0.7}, constants={"w": 1.5})
    by_attr = pn.dynamics(lambda t, u, p: np.stack([p.alpha * u[0] + np.sin(p.w * t), -u[1]]), state=2,
                          params={"alpha": 0.7}, constants={"w": 1.5})
    u = np.array([0.3, -1.2])
    np.testing.assert_array_equal(by_key.evaluate(np.array([0.7]), 0.4, u), by_attr.evaluate(np.array([0.7]), 0.4, u))
    assert _error(lambda t, u, p: p[0] * u, params={"alpha": 1.0}).endswith(
        "p[0]: index p by a declared name such as p['alpha'] (or write p.alpha).")
    assert _error(lambda t, u, p: p["beta"] * u, params={"alpha": 1.0}) == \
        "p.beta is not declared in pn.dynamics (declared params: alpha)."


def test_traced_index_and_array_indices():
    assert "indices must be constants" in _error(lambda t, u, p: u * u[u[0]])
    assert _error(lambda t, u, p: u * u[[0, 1], [1, 0]].sum(), state=(2, 2)).startswith(
        "Indexing with more than one integer array or mask at once (x[[0, 1], [2, 0]]) is not supported")
    assert _error(lambda t, u, p: u * u[[]].sum()).startswith("Index [] is not supported")
    assert _error(lambda t, u, p: u * u[0:1:-1].sum()) == ("The slice slice(0, 1, -1) selects nothing from an axis "
                                                           "of size 2: a pn.dynamics function cannot use an empty "
                                                           "array.")


def test_invalid_declarations():
    f = lambda t, u, p: u  # noqa: E731
    assert "must be > 0" in _error(f, params={"k": -1.0}, positive=["k"])
    assert "not in params" in _error(f, positive=["k"])
    assert "unique" in _error(f, params={"k": 1.0}, constants={"k": 2.0})
    assert "Python identifier" in _error(f, params={"_k": 1.0})
    assert "state must be" in _error(f, state=0)
    assert "must be a pyneuralode layer" in _error(f, nets={"U": object()})
    assert "p.U was called on a value of shape (3,)" in _error(
        lambda t, u, p: p.U(np.concatenate([u, u[:1]]))[:2], nets={"U": pn.MLP([2, 2])})


def test_decorator_with_and_without_arguments_and_broadcast_result():
    @pn.dynamics(state=2)
    def decay(t, u, p):
        return -u

    assert isinstance(decay, pn.Dynamics) and isinstance(decay, pn.AbstractLayer)
    np.testing.assert_array_equal(decay.evaluate(np.zeros(0), 0.0, [1.0, 2.0]), [-1.0, -2.0])
    const = pn.dynamics(lambda t, u, p: np.zeros(2), state=2)  # a derivative that ignores u is fine
    assert const.graph.nodes[const.graph.output].op == "literal"
    # one component: a number is its derivative (torchdiffeq's exp problem, written as a user would)
    forcing = pn.dynamics(lambda t, u, p: -0.1 * np.exp(-0.1 * t), state=1)
    np.testing.assert_allclose(forcing.evaluate(np.zeros(0), 2.0, [1.0]), [-0.1 * np.exp(-0.2)])
    with pytest.raises(pn.SpecError, match=r"shape \(\), but the state has shape \(2,\)"):
        pn.dynamics(lambda t, u, p: u[0], state=2)  # two components: a number is a mistake


# ---------------------------------------------------------------------- solves on every backend
def test_ude_solves_and_grads_on_every_backend(backend):
    m = model(lotka_volterra_ude, backend=backend, control=pn.StepControl(rtol=1e-8, atol=1e-8))
    params, y0, ts = m.init(0), np.array([0.44, 4.6]), np.linspace(0.0, 1.0, 5)
    res = m.value_and_grad(params, y0, ts, loss=pn.MSE(np.zeros((5, 2))))
    # against the NumPy reference, integrated by RK4 with a fine fixed step
    ref = _rk4(lambda t, y: lotka_volterra_ude.evaluate(params, t, y), y0, ts, 200)
    assert rel_err(res.ys, ref) < 1e-7
    assert res.stats.nfe_forward > 0 and res.grad_params.shape == params.shape


def _rk4(f, y0, ts, substeps):
    ys, y = [np.asarray(y0, float)], np.asarray(y0, float)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        h = (t1 - t0) / substeps
        for k in range(substeps):
            t = t0 + k * h
            k1 = f(t, y)
            k2 = f(t + h / 2, y + h / 2 * k1)
            k3 = f(t + h / 2, y + h / 2 * k2)
            k4 = f(t + h, y + h * k3)
            y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        ys.append(y)
    return np.stack(ys)


# ---------------------------------------------------------------------- the peers' problems, at their tolerances
# torchdiffeq tests/problems.py: t = linspace(1, 8, 10), y0 = the exact solution at t[0], forward and reversed;
# odeint's defaults (dopri5, rtol=1e-7, atol=1e-9); max relative error < 1e-4 (2e-3 for LinearODE).
TORCHDIFFEQ_TS = np.linspace(1.0, 8.0, 10)
TORCHDIFFEQ_CONTROL = pn.StepControl(rtol=1e-7, atol=1e-9)


@pn.dynamics(state=1, params={"a": 0.2, "b": 3.0})
def constant_ode(t, y, p):
    return p.a + (y - (p.a * t + p.b)) ** 5


@pn.dynamics(state=1)
def sine_ode(t, y, p):
    return 2 * y / t + t ** 4 * np.sin(2 * t) - t ** 2 + 4 * t ** 3


def _sine_exact(t):
    return (-0.5 * t ** 4 * np.cos(2 * t) + 0.5 * t ** 3 * np.sin(2 * t) + 0.25 * t ** 2 * np.cos(2 * t) - t ** 3
            + 2 * t ** 4 + (math.pi - 0.25) * t ** 2)


def _linear_a():
    u = 0.1 * np.random.default_rng(0).standard_normal((10, 10))
    return 2 * u - (u + u.T)  # antisymmetric, as torchdiffeq's LinearODE


@pn.dynamics(state=10, params={"A": _linear_a()})
def linear_ode(t, y, p):
    return p.A @ y


def _expm_times(a, ts, y0):
    w, v = np.linalg.eig(a)
    return np.stack([np.real(v @ np.diag(np.exp(w * (t - ts[0]))) @ np.linalg.solve(v, y0)) for t in ts])


@pn.dynamics(state=1)
def exp_ode(t, y, p):
    return -0.1 * np.exp(-0.1 * t)  # a number for the one component


PEER_PROBLEMS = {
    "exp": (exp_ode, lambda ts: np.exp(-0.1 * ts)[:, None], 5e-2),
    "constant": (constant_ode, lambda ts: (0.2 * ts + 3.0)[:, None], 1e-4),
    "sine": (sine_ode, lambda ts: _sine_exact(ts)[:, None], 1e-4),
    "linear": (linear_ode, lambda ts: _expm_times(_linear_a(), ts, np.ones(10)), 2e-3),
}


@pytest.mark.parametrize("name", sorted(PEER_PROBLEMS))
def test_torchdiffeq_problems(backend, name):
    dyn, exact, eps = PEER_PROBLEMS[name]
    m = model(dyn, backend=backend, control=TORCHDIFFEQ_CONTROL)
    for ts in (TORCHDIFFEQ_TS, TORCHDIFFEQ_TS[::-1]):
        sol_exact = exact(ts)  # linear: the solution with y = 1 at ts[0], whichever end that is
        ys = m.solve(m.init(0), sol_exact[0], ts).ys
        assert np.max(np.abs((sol_exact - ys) / sol_exact)) < eps, ts[0]


# diffrax's Lotka–Volterra (its README example): α, β, γ, δ = 0.1, 0.02, 0.4, 0.02; y0 = (10, 10); t in [0, 140].
# No closed form; the first integral V = δx − γ ln x + βy − α ln y is conserved exactly by the ODE.
@pn.dynamics(state=2, params={"alpha": 0.1, "beta": 0.02, "gamma": 0.4, "delta": 0.02},
             positive=("alpha", "beta", "gamma", "delta"))
def lotka_volterra(t, y, p):
    prey, predator = y
    return np.stack([p.alpha * prey - p.beta * prey * predator, -p.gamma * predator + p.delta * prey * predator])


def test_diffrax_lotka_volterra_conserves_its_invariant(backend):
    m = model(lotka_volterra, backend=backend, control=pn.StepControl(rtol=1e-8, atol=1e-8))
    ts = np.linspace(0.0, 140.0, 15)
    ys = m.solve(m.init(0), np.array([10.0, 10.0]), ts).ys
    x, y = ys[:, 0], ys[:, 1]
    invariant = 0.02 * x - 0.4 * np.log(x) + 0.02 * y - 0.1 * np.log(y)
    assert np.max(np.abs(invariant - invariant[0])) < 1e-6 * abs(invariant[0])
    assert np.ptp(ys[:, 0]) > 25  # it really went round its orbits (prey between ~9 and ~38)


# ---------------------------------------------------------------------- agreement, as for the spiral
AGREE_TS = np.linspace(0.0, 3.0, 11)
AGREE_Y0 = np.array([0.44249296, 4.6280594])


@pytest.fixture(scope="module")
def ude_results():
    """value_and_grad of the UDE at rtol=atol=1e-10, float64, per (backend, adjoint), computed once."""
    cache = {}

    def get(backend, adjoint):
        if (backend, adjoint) not in cache:
            m = model(lotka_volterra_ude, backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-10),
                      adjoint=pn.DirectAdjoint() if adjoint == "direct" else pn.BacksolveAdjoint())
            target = np.cos(AGREE_TS)[:, None] * np.array([1.0, 2.0])
            cache[backend, adjoint] = m.value_and_grad(m.init(0), AGREE_Y0, AGREE_TS, loss=pn.MSE(target))
        return cache[backend, adjoint]
    return get


PAIRS = list(itertools.combinations(BACKEND_NAMES, 2))


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
@pytest.mark.parametrize("adjoint", ["direct", "backsolve"])
def test_ude_backends_agree(ude_results, pair, adjoint):
    """JAX vs torch (and Julia where it runs): values and gradients within 1e-9 relative, equal forward NFE."""
    for name in pair:
        if unavailable_reason(name):
            pytest.skip(unavailable_reason(name))
    a, b = ude_results(pair[0], adjoint), ude_results(pair[1], adjoint)
    assert a.value == pytest.approx(b.value, rel=1e-9)
    assert rel_err(a.ys, b.ys) < 1e-9
    assert rel_err(a.grad_params, b.grad_params) < 1e-9
    assert rel_err(a.grad_y0, b.grad_y0) < 1e-9
    assert a.stats.nfe_forward == b.stats.nfe_forward
    if adjoint == "direct":
        assert a.stats.nfe_backward == b.stats.nfe_backward


def test_ude_gradient_matches_finite_differences(backend, ude_results):
    """A directional derivative of the loss (all params and y0) against a central difference of two solves."""
    res = ude_results(backend, "direct")
    m = model(lotka_volterra_ude, backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-10))
    rng = np.random.default_rng(2)
    dp, dy = rng.standard_normal(m.num_params), rng.standard_normal(2)
    target = np.cos(AGREE_TS)[:, None] * np.array([1.0, 2.0])

    def loss(h):
        ys = m.solve(m.init(0) + h * dp, AGREE_Y0 + h * dy, AGREE_TS).ys
        return np.mean((ys - target) ** 2)

    h = 1e-5
    fd = (loss(h) - loss(-h)) / (2 * h)
    assert res.grad_params @ dp + res.grad_y0 @ dy == pytest.approx(fd, rel=1e-6)


def test_reverse_time_float32_and_batches(backend):
    m64 = model(lotka_volterra_ude, backend=backend, control=pn.StepControl(rtol=1e-9, atol=1e-9))
    params = m64.init(0)
    forward = m64.solve(params, AGREE_Y0, AGREE_TS).ys
    back = m64.solve(params, forward[-1], AGREE_TS[::-1]).ys
    assert rel_err(back[::-1], forward) < 1e-6
    batch = np.stack([AGREE_Y0, forward[-1]])
    ys = m64.solve(params, batch, AGREE_TS).ys
    assert ys.shape == (11, 2, 2) and rel_err(ys[:, 0], forward) < 1e-8
    m32 = model(lotka_volterra_ude, backend=backend, control=pn.StepControl(rtol=1e-5, atol=1e-5),
                dtype="float32")
    ys32 = m32.solve(m32.init(0), AGREE_Y0, AGREE_TS).ys
    assert ys32.dtype == np.float32 and rel_err(ys32, forward) < 1e-3


def test_torchdiffeq_problems_in_float32_at_its_default_tolerances(backend):
    """torchdiffeq's odeint_tests run every problem in float32 too, at its default rtol=1e-7 / atol=1e-9 (0.84 of
    float32's epsilon): accepted, and within torchdiffeq's thresholds in both directions."""
    control = pn.StepControl(rtol=1e-7, atol=1e-9)
    for name in ("constant", "sine"):
        dyn, exact, eps = PEER_PROBLEMS[name]
        m = model(dyn, backend=backend, control=control, dtype="float32")
        for ts in (TORCHDIFFEQ_TS, TORCHDIFFEQ_TS[::-1]):
            sol_exact = exact(ts)
            ys = m.solve(m.init(0), sol_exact[0], ts).ys
            assert ys.dtype == np.float32
            assert np.max(np.abs((sol_exact - ys) / sol_exact)) < eps, (name, ts[0])
