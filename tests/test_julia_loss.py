"""``pn.loss`` on backend "julia": the loss graph compiled to generated Julia source (``loss_source``), its value and
its Zygote gradient with respect to ``ys`` taken in Julia (julia/src/loss.jl), the cotangent pulled back as for
``pn.L1``/``pn.MSE``.

Part 1 runs everywhere (no Julia): the generated sources (arguments by position, 0-d arrays, literal arrays, float32)
parse with tree-sitter-julia and lint clean with fatou; an op Julia cannot take is refused naming it, before Julia is
called; and the Python glue against a stand-in PyNeuralODEJL that follows the documented layouts (flat row-major
arrays with Julia's reversed shapes in, Julia's ``vec`` of the gradient out; ``(D, B, T)`` solutions and cotangents)
and solves the linear ODE ``dy/dt = W y`` exactly (``expm``, its gradient through ``expm_frechet``): values and
gradients against the NumPy reference and finite differences, batched and unbatched, with a mask, in float64 and
float32. :mod:`test_host_lbfgs` trains through the same stand-in.

Part 2 is marked ``julia`` and runs only where Julia exists (never in this project's CI, which has no Julia): the
value and gradients of a masked ``pn.loss`` on a ``pn.dynamics`` UDE agree with JAX's to 1e-9 in float64.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends.julia._graph import loss_source
from pyneuralode.backends.julia._loss import JuliaLosses
from pyneuralode.backends.julia._program import JuliaProgram

from test_julia_static import FATOU_CONFIG, _fatou, _parser, _problems

W_TRUE = np.array([[-0.3, 1.1], [-0.9, -0.2]])
TS = np.linspace(0.0, 2.0, 9)
Y0 = np.array([[1.0, 0.5], [-0.4, 0.8], [0.3, -1.0]])


@pn.loss
def relative_mse(ys, target, mask):
    r = np.where(mask, (ys - target) / (np.abs(target) + 0.1), 0.0)
    return np.sum(r * r) / np.sum(mask)


@pn.loss
def scaled_tail(ys, target, scale):
    """A 0-d array argument, an array literal, indexing and a reduction over some axes."""
    w = np.array([1.0, 3.0])
    return scale * np.mean(np.sum(w * (ys[1:] - target[1:]) ** 2, axis=-1)) + 0.5 * np.max(np.abs(ys))


def _graph(function, *arrays):
    shapes = tuple((n, np.shape(a), "bool" if np.asarray(a).dtype == np.bool_ else "float")
                   for n, a in zip(function.names, arrays))
    return function.graph(shapes)


def expm(a: np.ndarray) -> np.ndarray:
    """The matrix exponential by scaling and squaring of its Taylor series (NumPy only; exact to rounding for the
    small matrices here)."""
    squarings = max(0, int(np.ceil(np.log2(max(np.linalg.norm(a, 1), 1e-300)))) + 1)
    a = a / 2.0**squarings
    term, total = np.eye(len(a)), np.eye(len(a))
    for k in range(1, 25):
        term = term @ a / k
        total = total + term
    for _ in range(squarings):
        total = total @ total
    return total


def expm_frechet(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The Fréchet derivative ``L(A, E)`` of ``expm`` at ``A`` in the direction ``E``: the upper-right block of
    ``expm([[A, E], [0, A]])`` (Higham, *Functions of Matrices*, Thm. 3.6)."""
    n = len(a)
    return expm(np.block([[a, e], [np.zeros((n, n)), a]]))[:n, n:]


def _exact(w: np.ndarray, y0: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """``expm(W (t - t0)) y0`` at each time, ``(T, *y0.shape)``."""
    return np.stack([y0 @ expm(w * (t - ts[0])).T for t in ts])


# ==================================================================================== part 1: no Julia needed
def test_loss_source_reads_its_arrays_by_position():
    ys = np.ones((9, 3, 2))
    source, constants = loss_source(_graph(relative_mse, ys, ys, ys > 0), relative_mse.names)
    lines = source.splitlines()
    assert lines[0] == "function (a1, a2, a3, c)" and constants == []
    assert lines[1:4] == ["    v0 = a1", "    v1 = a2", "    v2 = a3"]  # ys, target, mask
    assert "    v9 = ifelse.(v2, v7, v8)" in lines and "    v5 = 0.1" in lines
    assert lines[-2:] == ["    return v13", "end"]
    source32, _ = loss_source(_graph(relative_mse, ys, ys, ys > 0), relative_mse.names, "float32")
    assert "    v5 = Float32(0.1)" in source32.splitlines()


def test_loss_source_zero_d_arrays_and_literal_arrays():
    ys = np.ones((5, 2))
    source, constants = loss_source(_graph(scaled_tail, ys, ys, np.array(2.0)), scaled_tail.names)
    assert "    v2 = a3[1]" in source.splitlines()  # the 0-d `scale`: a number
    assert len(constants) == 1 and "c[1]" in source
    np.testing.assert_array_equal(constants[0], [1.0, 3.0])


def _sources():
    ys, ys1 = np.ones((9, 3, 2)), np.ones((5, 2))
    for dtype in ("float64", "float32"):
        yield f"relative_mse_{dtype}", loss_source(_graph(relative_mse, ys, ys, ys > 0), relative_mse.names, dtype)[0]
        yield f"scaled_tail_{dtype}", loss_source(_graph(scaled_tail, ys1, ys1, np.array(2.0)), scaled_tail.names,
                                                  dtype)[0]


def test_generated_loss_sources_parse_and_lint_clean(tmp_path):
    parser = _parser()
    for name, source in _sources():
        tree = parser.parse(source.encode())
        assert not tree.root_node.has_error and not _problems(tree.root_node, []), (name, source)
        (tmp_path / f"{name}.jl").write_text(f"const {name} = {source}")
    (tmp_path / "broken.jl").write_text("const broken = function (a1, a2, c)\n    v0 = summ(a1)\n    return v0\nend\n")
    config = tmp_path / "fatou.toml"
    config.write_text(FATOU_CONFIG)
    result = subprocess.run([_fatou(), "--config", str(config), "lint", "--julia-version", "1.10", "--output",
                             "concise", str(tmp_path)], capture_output=True, text=True, timeout=120)
    report = result.stdout + result.stderr
    assert [line for line in report.splitlines() if ".jl:" in line and "broken.jl" not in line] == [], report
    assert "broken.jl" in report and "summ" in report, report  # the linter does read these files


def test_the_julia_functions_the_glue_calls_are_exported_with_those_keywords():
    """The names ``JuliaLosses`` calls on the module are exported by PyNeuralODEJL, defined in loss.jl, and take the
    keywords Python passes (a typo would otherwise first show on a machine with Julia)."""
    import re
    from pathlib import Path

    import pyneuralode.backends.julia._loss as glue

    src = Path(glue.__file__).resolve().parents[2] / "julia" / "src"
    exports = set(re.findall(r"[\w!]+", " ".join(re.findall(r"^export (.*(?:\n {4}.*)*)",
                                                           (src / "PyNeuralODEJL.jl").read_text(), re.M))))
    called = set(re.findall(r"self\._module\.(\w+)", Path(glue.__file__).read_text()))
    assert called == {"build_loss", "loss_value_and_grad"}
    loss_jl = (src / "loss.jl").read_text()
    for name in called:
        assert name in exports and re.search(rf"^function {name}\(", loss_jl, re.M), name
    build = re.search(r"^function build_loss\((.*?)\)\n", loss_jl, re.M | re.S).group(1)
    assert set(re.findall(r"(\w+)::", build.split(";")[1])) == {"dtype"}
    assert "include(\"loss.jl\")" in (src / "PyNeuralODEJL.jl").read_text()


class _Value:
    """What juliacall hands back for a Julia array (``to_numpy`` copies)."""

    def __init__(self, array):
        self.array = np.array(array)

    def to_numpy(self):
        return self.array.copy()


def _from_julia(flat, julia_shape) -> np.ndarray:
    """The NumPy array whose Julia view is ``reshape(flat, julia_shape...)`` (column-major): its transpose."""
    return np.reshape(np.asarray(flat), tuple(julia_shape), order="F").T


class StandIn:
    """A stand-in for PyNeuralODEJL: ``dy/dt = W y`` (a ``pn.Linear(2, 2, bias=False)`` field, ``W`` its canonical
    weight) solved exactly, its VJP exact through the Fréchet derivative of ``expm``, and ``pn.loss`` evaluated by the
    function itself in NumPy with a central-difference gradient. It follows solve.jl's and loss.jl's documented
    layouts and records what the Python glue hands over. ``fail_at`` makes the listed ``vjp_forward`` calls (1-based)
    report ``MaxIters``."""

    def __init__(self, functions=(), fail_at=()):
        self.functions = {f.names: f for f in functions}
        self.calls: dict[str, list] = {}
        self.fail_at, self.forwards = set(fail_at), 0

    def _log(self, name, *args):
        self.calls.setdefault(name, []).append(args)

    def solve_options(self, **kwargs):
        self._log("solve_options", kwargs)
        return "opts"

    def build_field(self, description, flat, *, dtype, device):
        self._log("build_field", description, dtype, device)
        assert description == "linear,2,2,0,0"
        return {"w": np.zeros((2, 2)), "dtype": dtype}

    def set_params_b(self, field, flat):
        field["w"] = np.asarray(flat, dtype=np.float64).reshape(2, 2)  # Linear weight (out, in), row-major

    def vjp_forward(self, field, opts, u0, ts):
        self.forwards += 1
        u0 = np.asarray(u0, dtype=np.float64)  # (D, B): the transpose of NumPy's (B, D)
        assert u0.shape[0] == 2
        if self.forwards in self.fail_at:
            return None, _Value(np.zeros((0, 0, 0))), 7, 7, 1, 0, 0, "MaxIters", ""
        ys = np.stack([expm(field["w"] * (t - ts[0])) @ u0 for t in ts], axis=-1)  # (D, B, T)
        pending = (field["w"].copy(), u0, np.asarray(ts, dtype=np.float64), field["dtype"])
        return pending, _Value(ys.astype(field["dtype"])), 6 * len(ts), 6 * len(ts), len(ts), 0, 0, "Success", ""

    def vjp_backward(self, pending, cot):
        w, u0, ts, dtype = pending
        cot = np.asarray(cot, dtype=np.float64)  # (D, B, T)
        assert cot.shape == (*u0.shape, len(ts))
        grad_u0, grad_w = np.zeros_like(u0), np.zeros_like(w)
        for k, t in enumerate(ts):
            tau = t - ts[0]
            grad_u0 += expm(w * tau).T @ cot[:, :, k]
            # d<C, expm(τW) U0>/dW = τ L(τWᵀ, C U0ᵀ): the adjoint of expm's Fréchet derivative L(A, ·) is L(Aᵀ, ·)
            grad_w += tau * expm_frechet(tau * w.T, cot[:, :, k] @ u0.T)
        return _Value(grad_u0.astype(dtype)), _Value(grad_w.reshape(-1).astype(dtype)), 5 * len(ts), ""

    def evaluate(self, field, u, t):
        return _Value(field["w"] @ np.asarray(u, dtype=np.float64))  # (D, B) in and out

    def build_loss(self, source, consts, const_shapes, *, dtype):
        self._log("build_loss", source, dtype)
        names = tuple(source.splitlines()[0][len("function ("):-1].split(", "))
        assert names[-1] == "c" and len(consts) == len(const_shapes)
        return {"arity": len(names) - 1, "dtype": dtype}

    def loss_value_and_grad(self, compiled, arrays, shapes):
        self._log("loss_value_and_grad", [np.asarray(a).dtype for a in arrays], shapes)
        assert len(arrays) == compiled["arity"] and all(np.ndim(a) == 1 for a in arrays)
        xs = [_from_julia(a, s) for a, s in zip(arrays, shapes)]
        function = next(f for f in self.functions.values() if len(f.names) == len(xs))
        ys, rest = xs[0].astype(np.float64), xs[1:]

        def value(y):
            return float(function.fn(y, *rest))

        grad, eps = np.zeros_like(ys), 1e-6 * max(1.0, float(np.max(np.abs(ys))))
        for i in np.ndindex(ys.shape):
            step = np.zeros_like(ys)
            step[i] = eps
            grad[i] = (value(ys + step) - value(ys - step)) / (2 * eps)
        return value(ys), _Value(grad.T.ravel(order="F"))  # Julia's vec of its (reversed-shape) gradient


def stand_in_model(stand_in: StandIn, *, dtype="float64", control=None) -> pn.ODEModel:
    """A julia-backend model whose program runs on ``stand_in`` (no Julia is started)."""
    m = pn.ODEModel(pn.Linear(2, 2, bias=False), backend="julia", dtype=dtype,
                    control=control or pn.StepControl(rtol=1e-8, atol=1e-10))
    object.__setattr__(m, "_program", JuliaProgram(m, module=stand_in))
    return m


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    ys = _exact(W_TRUE, Y0, TS)
    mask = rng.random(ys.shape) < 0.6
    mask[0] = True
    target = np.where(mask, ys + 0.05 * rng.standard_normal(ys.shape), 0.0)
    return ys, target, mask


def test_the_stand_in_is_exact(data):
    """The stand-in's solution and VJP against finite differences of its own exact solution (so the glue tests
    below compare with a correct reference)."""
    _, target, _ = data
    m = stand_in_model(StandIn())
    params = (W_TRUE + 0.1).reshape(-1)
    res = m.value_and_grad(params, Y0, TS, loss=pn.MSE(target))
    np.testing.assert_allclose(res.ys, _exact(params.reshape(2, 2), Y0, TS), rtol=1e-12, atol=1e-12)
    direction, eps = np.array([0.3, -0.2, 0.5, 0.1]), 1e-6
    fd = (pn.MSE(target)(_exact((params + eps * direction).reshape(2, 2), Y0, TS))
          - pn.MSE(target)(_exact((params - eps * direction).reshape(2, 2), Y0, TS))) / (2 * eps)
    assert res.grad_params @ direction == pytest.approx(fd, rel=1e-7)
    v = np.array([[0.2, -0.1], [0.4, 0.3], [-0.5, 0.1]])
    fd = (pn.MSE(target)(_exact(params.reshape(2, 2), Y0 + eps * v, TS))
          - pn.MSE(target)(_exact(params.reshape(2, 2), Y0 - eps * v, TS))) / (2 * eps)
    assert np.sum(res.grad_y0 * v) == pytest.approx(fd, rel=1e-7)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_custom_loss_glue_value_and_gradients(data, batched):
    """A masked pn.loss through the Julia program's glue: the value is the function on the solution, the gradients
    those of finite differences of it; the cotangent reaches vjp_backward in the (D, B, T) layout."""
    ys_true, target, mask = data
    y0, target, mask = (Y0, target, mask) if batched else (Y0[1], target[:, 1], mask[:, 1])
    stand_in = StandIn([relative_mse])
    m = stand_in_model(stand_in)
    params = (W_TRUE + 0.1).reshape(-1)
    loss = relative_mse(target, mask=mask)
    res = m.value_and_grad(params, y0, TS, loss=loss)
    ys = _exact(params.reshape(2, 2), y0, TS)
    assert res.value == pytest.approx(loss(ys), rel=1e-12)
    assert res.grad_y0.shape == y0.shape
    direction, eps = np.array([0.3, -0.2, 0.5, 0.1]), 1e-6
    fd = (loss(_exact((params + eps * direction).reshape(2, 2), y0, TS))
          - loss(_exact((params - eps * direction).reshape(2, 2), y0, TS))) / (2 * eps)
    assert res.grad_params @ direction == pytest.approx(fd, rel=1e-6)
    v = np.linspace(-0.5, 0.5, y0.size).reshape(y0.shape)
    fd = (loss(_exact(params.reshape(2, 2), y0 + eps * v, TS))
          - loss(_exact(params.reshape(2, 2), y0 - eps * v, TS))) / (2 * eps)
    assert np.sum(res.grad_y0 * v) == pytest.approx(fd, rel=1e-6)
    (dtypes, shapes), = stand_in.calls["loss_value_and_grad"]
    assert dtypes == [np.float64, np.float64, np.bool_]  # the mask stays boolean
    assert shapes == ((ys.shape[::-1],) * 3)  # Julia's shapes: NumPy's reversed


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_save_time_gradient_glue(data, batched):
    """``grad_ts=True`` through the Julia glue (the loss's cotangent from loss.jl, the field from ``evaluate``)
    against central differences of the exact solution in each save time."""
    _, target, mask = data
    y0, target, mask = (Y0, target, mask) if batched else (Y0[1], target[:, 1], mask[:, 1])
    m = stand_in_model(StandIn([relative_mse]))
    w = W_TRUE + 0.1
    for loss in (pn.MSE(target), relative_mse(target, mask=mask)):
        res = m.value_and_grad(w.reshape(-1), y0, TS, loss=loss, grad_ts=True)
        fd, eps = np.zeros(len(TS)), 1e-6
        for i in range(len(TS)):
            up, down = TS.copy(), TS.copy()
            up[i], down[i] = TS[i] + eps, TS[i] - eps
            fd[i] = (loss(_exact(w, y0, up)) - loss(_exact(w, y0, down))) / (2 * eps)
        np.testing.assert_allclose(res.grad_ts, fd, rtol=1e-5, atol=1e-8)


def test_custom_loss_compiles_once_per_shape_and_dtype(data):
    _, target, mask = data
    stand_in = StandIn([relative_mse])
    m = stand_in_model(stand_in)
    params = (W_TRUE + 0.1).reshape(-1)
    for _ in range(2):
        m.value_and_grad(params, Y0, TS, loss=relative_mse(target, mask=mask))
    m.value_and_grad(params, Y0[0], TS, loss=relative_mse(target[:, 0], mask=mask[:, 0]))
    assert len(stand_in.calls["build_loss"]) == 2 and len(stand_in.calls["loss_value_and_grad"]) == 3
    assert [dtype for _, dtype in stand_in.calls["build_loss"]] == ["float64", "float64"]


def test_custom_loss_in_float32(data):
    _, target, mask = data
    stand_in = StandIn([relative_mse])
    m = stand_in_model(stand_in, dtype="float32", control=pn.StepControl(rtol=1e-6, atol=1e-8))  # float32 resolves
    params = (W_TRUE + 0.1).reshape(-1)
    res = m.value_and_grad(params, Y0, TS, loss=relative_mse(target, mask=mask))
    assert res.grad_params.dtype == np.float32 and res.grad_y0.dtype == np.float32
    (source, dtype), = stand_in.calls["build_loss"]
    assert dtype == "float32" and "Float32(0.1)" in source
    (dtypes, _), = stand_in.calls["loss_value_and_grad"]
    assert dtypes == [np.float32, np.float32, np.bool_]
    reference = m.replace(dtype="float64")
    object.__setattr__(reference, "_program", JuliaProgram(reference, module=StandIn([relative_mse])))
    want = reference.value_and_grad(params, Y0, TS, loss=relative_mse(target, mask=mask))
    assert res.value == pytest.approx(want.value, rel=1e-4)
    np.testing.assert_allclose(res.grad_params, want.grad_params, rtol=1e-3, atol=1e-5)


def test_an_op_julia_cannot_take_is_refused_naming_it():
    @pn.loss
    def batched_gram(ys, target):
        return np.sum(ys @ np.transpose(ys, (0, 2, 1)))

    ys = np.ones((4, 3, 2))
    losses = JuliaLosses(module=None, dtype="float64", call=None)  # refused before any Julia call
    with pytest.raises(pn.NotSupportedError, match="matmul of 3-D by 3-D arrays in a pn.loss is not available on "
                                                   "backend 'julia'"):
        losses.value_and_cotangent(batched_gram(ys), ys)


def test_a_non_finite_loss_is_refused(data):
    @pn.loss
    def log_loss(ys, target):
        return np.sum(np.log(ys - target))  # ys - target < 0 somewhere: NaN

    _, target, _ = data
    m = stand_in_model(StandIn([log_loss]))
    with pytest.raises(pn.NonFiniteError, match="loss or its gradient"):
        m.value_and_grad(W_TRUE.reshape(-1), Y0, TS, loss=log_loss(target))


def test_per_sample_times_still_refuse_a_custom_loss(data):
    _, target, mask = data
    m = stand_in_model(StandIn([relative_mse]))
    ts = np.tile(TS, (3, 1))
    with pytest.raises(pn.NotSupportedError, match="cannot take per-sample times"):
        m.value_and_grad(W_TRUE.reshape(-1), Y0, ts, loss=relative_mse(target, mask=mask))


def test_other_losses_are_refused_with_what_works():
    from pyneuralode.backends.julia._loss import host_loss_value_and_cotangent

    class Huber(pn.MSE):
        pass

    with pytest.raises(pn.NotSupportedError, match="pn.L1, pn.MSE and losses made with pn.loss"):
        host_loss_value_and_cotangent(Huber(np.zeros(3)), np.ones(3))


# ==================================================================================== part 2: on a real Julia
julia = pytest.mark.julia


@julia
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_custom_loss_agrees_with_jax(jl, batched):
    """A masked pn.loss on a pn.dynamics UDE, float64, Tsit5 at rtol = atol = 1e-10: value and gradients (params and
    y0) within 1e-9 relative of JAX's, as the UDE's built-in-loss agreement test holds them."""
    from test_julia_dynamics import lotka_volterra_ude

    control = pn.StepControl(rtol=1e-10, atol=1e-10, max_steps=100_000)
    julia_model = pn.ODEModel(lotka_volterra_ude, solver=pn.Tsit5(), control=control, backend="julia")
    jax_model = pn.ODEModel(lotka_volterra_ude, solver=pn.Tsit5(), control=control, backend="jax")
    params = julia_model.init(0)
    ts = np.linspace(0.0, 1.0, 6)
    y0 = np.array([[0.44, 4.6], [1.2, 0.8]]) if batched else np.array([0.44, 4.6])
    rng = np.random.default_rng(1)
    target = jax_model.solve(params, y0, ts).ys * (1 + 0.1 * rng.standard_normal((len(ts), *y0.shape)))
    mask = rng.random(target.shape) < 0.7
    loss = relative_mse(target, mask=mask)
    a = julia_model.value_and_grad(params, y0, ts, loss=loss)
    b = jax_model.value_and_grad(params, y0, ts, loss=loss)
    assert a.value == pytest.approx(b.value, rel=1e-9)
    for x, y in ((a.grad_params, b.grad_params), (a.grad_y0, b.grad_y0)):
        assert float(np.max(np.abs(x - y)) / np.max(np.abs(y))) < 1e-9


@julia
def test_custom_loss_float32_runs_on_julia(jl):
    from test_julia_dynamics import lotka_volterra_ude

    m64 = pn.ODEModel(lotka_volterra_ude, solver=pn.Tsit5(), backend="julia")
    m32 = m64.replace(dtype="float32")
    params, y0, ts = m64.init(0), np.array([0.44, 4.6]), np.linspace(0.0, 1.0, 6)
    target = np.full((len(ts), 2), 1.0)
    loss = scaled_tail(target, scale=np.array(2.0))
    a, b = m32.value_and_grad(params, y0, ts, loss=loss), m64.value_and_grad(params, y0, ts, loss=loss)
    assert a.grad_params.dtype == np.float32
    assert a.value == pytest.approx(b.value, rel=1e-4)
    np.testing.assert_allclose(a.grad_params, b.grad_params, rtol=1e-3, atol=1e-4 * np.max(np.abs(b.grad_params)))
