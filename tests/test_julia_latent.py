"""``pn.LatentODE(backend="julia")`` (issue 15): PyNeuralODEJL's ``LatentModel`` (julia/src/latent.jl).

Part 1 runs everywhere: the wiring (program table, errors that name the fix), the parameter layout the Julia program
hands over (each part's description and its slice of the canonical vector, with Julia's ``num_params`` restated), and
the Python glue against a stand-in module that follows the documented Julia layouts (``x`` ``(D, B, T)``, ``mask``
``(B, T)``, ``ε`` and the posterior ``(L, B)``) with the encoder restated in NumPy.

Part 2 is marked ``julia`` and runs only where Julia exists (it has never run in this project's CI, which has no
Julia): Julia vs JAX in float64 with the same fixed ε on the encoder (no solve: 1e-12), the ELBO, its gradient and
predictions. With fixed-step Midpoint every backend steps on the same grid (``fixed_step_grid``) with the same
method (pyneuralode's RK4 is the 3/8 rule, OrdinaryDiffEq's the classic one: docs/julia.md), so the agreement is
held to 1e-9 relative as JAX vs torch are; with adaptive Dopri5 at rtol = atol = 1e-10 OrdinaryDiffEq's controller
takes other steps than diffrax's, so those are held to 1e-7, as the CNF's Julia tests are. Plus the layout round
trip, float32, and the forward NFE equal to the latent solve counted alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rel_err

import pyneuralode as pn
from pyneuralode.backends.julia._latent import JuliaLatentProgram, latent_options, latent_parts

RNG = np.random.default_rng(0)
TIMES = [np.sort(RNG.choice(np.linspace(0.0, 2.0, 9), k, replace=False)) for k in (4, 6, 3)]
VALUES = [RNG.standard_normal((len(t), 2)) for t in TIMES]
TS, MASK, X = pn.union_times(TIMES, VALUES)
EPS = RNG.standard_normal((3, 3))
TIGHT = pn.StepControl(rtol=1e-10, atol=1e-10)
MODEL = pn.LatentODE(latent_dim=3, rnn_hidden=5, field=pn.MLP([3, 6, 3], activation="tanh"),
                     decoder=pn.MLP([3, 6, 2], activation="tanh"), control=TIGHT, dtype="float64")
PARAMS = MODEL.init(0)
PRED_TS = np.linspace(TS[0], 3.0, 7)

julia = pytest.mark.julia


# ---------------------------------------------------------------- part 1: no Julia needed
def test_latent_ode_is_wired_for_julia():
    from pyneuralode._latent import _PROGRAMS

    assert _PROGRAMS["julia"] == "pyneuralode.backends.julia._latent:JuliaLatentProgram"
    model = MODEL.replace(backend="julia")  # construction needs no Julia; compiling does
    assert model.num_params == MODEL.num_params


def _julia_num_params(description: str) -> int:
    """``sum(num_params, parse_spec(description))`` of julia/src/layers.jl, restated."""
    total = 0
    for item in description.split(";"):
        kind, *fields = item.split(",")
        if kind == "linear":
            nin, nout, bias, time = map(int, fields)
            total += nout * (nin + time) + nout * bias
        elif kind == "squash":
            nin, nout = map(int, fields)
            total += nout * nin + 4 * nout
    return total


def test_the_parts_julia_receives_split_the_canonical_layout():
    parts = latent_parts(MODEL)
    assert [p.name for p in parts] == ["encoder", "head", "field", "decoder"]
    assert [p.description for p in parts] == ["linear,8,5,1,0;act,tanh",   # RNNCell: [x (2), Δt, h (5)] -> 5
                                              "linear,5,6,1,0",            # h -> [μ, log σ_q²]
                                              "linear,3,6,1,0;act,tanh;linear,6,3,1,0",
                                              "linear,3,6,1,0;act,tanh;linear,6,2,1,0"]
    assert parts[0].start == 0 and parts[-1].stop == MODEL.num_params
    for part, following in zip(parts, parts[1:]):
        assert part.stop == following.start
    for part in parts:
        slots = [s for s in MODEL.param_layout() if s.name.startswith(part.name + ".")]
        assert (slots[0].offset, slots[-1].stop) == (part.start, part.stop), part.name
        assert _julia_num_params(part.description) == part.stop - part.start, part.name


def test_errors_name_the_fix():
    with pytest.raises(pn.NotSupportedError, match="CPU only.*backend='jax'/'torch'"):
        latent_options(MODEL.replace(backend="julia", device="cuda"))
    with pytest.raises(pn.NotSupportedError, match="CheckpointAdjoint"):
        pn.LatentODE(backend="julia", adjoint=pn.CheckpointAdjoint())


def test_without_julia_the_model_says_how_to_get_it():
    from pyneuralode.backends.julia import julia_available

    if julia_available()[0]:
        pytest.skip("Julia is available here")
    model = MODEL.replace(backend="julia")
    with pytest.raises(pn.BackendUnavailable, match="juliaup"):
        model.encode(PARAMS, TS, X, MASK)


def test_every_julia_function_the_program_calls_is_exported_with_those_keywords():
    """The names ``JuliaLatentProgram`` calls on the module (``_b`` is Julia's ``!``) are exported by PyNeuralODEJL and
    defined with the keywords Python passes (a typo here would only show on a machine with Julia)."""
    import re
    from pathlib import Path

    import pyneuralode.backends.julia._latent as glue

    src = Path(glue.__file__).resolve().parents[2] / "julia" / "src"
    exports = set(re.findall(r"[\w!]+", " ".join(re.findall(r"^export (.*(?:\n {4}.*)*)", (src / "PyNeuralODEJL.jl")
                                                                                 .read_text(), re.M))))
    called = set(re.findall(r"self\._module\.(\w+)", Path(glue.__file__).read_text()))
    assert called == {"solve_options", "build_latent", "set_latent_params_b", "get_latent_params", "latent_encode",
                      "latent_predict", "latent_value_and_grad"}
    julia = " ".join(p.read_text() for p in src.glob("*.jl"))
    for name in called:
        jl_name = name[:-2] + "!" if name.endswith("_b") else name
        assert jl_name in exports, jl_name
        assert re.search(rf"^(function )?{re.escape(jl_name)}\(", julia, re.M), jl_name
    build = re.search(r"^function build_latent\((.*?)\)\n", (src / "latent.jl").read_text(), re.M | re.S).group(1)
    keywords = set(re.findall(r"(\w+)::", build.split(";")[1]))
    assert keywords == {"latent", "hidden", "noise_std", "dtype"}


class _Value:
    """What juliacall hands back for a Julia array (``to_numpy`` copies)."""

    def __init__(self, array):
        self.array = np.array(array)

    def to_numpy(self):
        return self.array.copy()


class _StandIn:
    """A stand-in for PyNeuralODEJL following latent.jl's documented layouts, the encoder restated in NumPy; it
    records what the Python glue hands over."""

    def __init__(self):
        self.calls = {}

    def solve_options(self, **kwargs):
        self.calls["solve_options"] = kwargs
        return "opts"

    def build_latent(self, *args, **kwargs):
        self.calls["build_latent"] = (args, kwargs)
        return {"flat": None}

    def set_latent_params_b(self, m, flat):
        m["flat"] = np.array(flat)

    def get_latent_params(self, m):
        return _Value(m["flat"])

    def latent_encode(self, m, ts, x, mask):
        tensors = {s.name: m["flat"][s.offset:s.stop].reshape(s.shape) for s in MODEL.param_layout()}
        w, b = tensors["encoder.0.weight"], tensors["encoder.0.bias"]
        D, B, T = x.shape
        assert mask.shape == (B, T) and mask.dtype == bool and ts.shape == (T,)
        h, t_prev = np.zeros((5, B)), np.zeros(B)
        seen = np.zeros(B, bool)
        for k in reversed(range(T)):
            gap = np.where(seen, t_prev - ts[k], 0.0)
            new = np.tanh(w @ np.vstack([x[:, :, k], gap[None], h]) + b[:, None])
            h = np.where(mask[:, k][None], new, h)
            seen, t_prev = seen | mask[:, k], np.where(mask[:, k], ts[k], t_prev)
        q = tensors["head.weight"] @ h + tensors["head.bias"][:, None]
        return _Value(q[:3]), _Value(q[3:])

    def latent_value_and_grad(self, m, opts, ts, x, mask, eps):
        self.calls["value_and_grad"] = (x.shape, mask.shape, eps.shape)
        B = x.shape[1]
        return (1.5, _Value(np.arange(B)), _Value(np.ones(B)), _Value(np.arange(MODEL.num_params)), 20, 20, 3, 1,
                0, "Success", "", 0, "")

    def latent_predict(self, m, opts, ts, x, mask, pred_ts, eps):
        D, B, _ = x.shape
        pred = np.arange(D * B * len(pred_ts), dtype=float).reshape(D, B, len(pred_ts), order="F")
        return _Value(pred), 7, 7, 1, 0, 0, "Success", ""


def test_python_glue_hands_julia_the_documented_layouts():
    stand_in = _StandIn()
    program = JuliaLatentProgram(MODEL.replace(backend="julia"), module=stand_in)
    args, kwargs = stand_in.calls["build_latent"]
    assert list(args[:4]) == [p.description for p in latent_parts(MODEL)]
    assert args[4].shape == (MODEL.num_params,)
    assert kwargs == {"latent": 3, "hidden": 5, "noise_std": 0.3, "dtype": "float64"}
    assert stand_in.calls["solve_options"]["sensealg"] == "reversediff"  # DirectAdjoint, as for an ODE model
    assert stand_in.calls["solve_options"]["solver"] == "dp5"

    x = np.where(MASK[..., None], X, 0.0)
    mean, log_var = program.encode(PARAMS, TS, x, MASK)
    np.testing.assert_array_equal(program.get_params(), PARAMS)
    want = MODEL.replace(backend="torch").encode(PARAMS, TS, X, MASK)
    np.testing.assert_allclose(mean, want.mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(log_var, want.log_var, rtol=0, atol=1e-13)

    res = program.value_and_grad(PARAMS, TS, x, MASK, EPS)
    assert stand_in.calls["value_and_grad"] == ((2, 3, TS.size), (3, TS.size), (3, 3))
    np.testing.assert_array_equal(res.grad_params, np.arange(MODEL.num_params))
    assert (res.value, res.stats.nfe_forward, res.stats.nfe_backward) == (1.5, 20, 20)  # ReverseDiffAdjoint replay

    pred = program.predict(PARAMS, TS, x, MASK, PRED_TS, EPS)
    assert pred.shape == (3, PRED_TS.size, 2)
    D, B = 2, 3
    assert pred[1, 4, 0] == 0 + D * 1 + D * B * 4      # Julia's pred[1, 2, 5] (column-major)


# ---------------------------------------------------------------- part 2: Julia vs JAX (needs Julia)
def _pair(**changes):
    model = MODEL.replace(**changes)
    return model.replace(backend="jax"), model.replace(backend="julia")


MIDPOINT = dict(solver=pn.Midpoint(), control=pn.StepControl(dt=0.05))


@julia
def test_layout_round_trip(jl):
    _, model = _pair()
    program = model.program
    program.encode(PARAMS, TS, np.nan_to_num(X), MASK)
    np.testing.assert_array_equal(program.get_params(), PARAMS)


@julia
def test_encoder_agrees_with_jax(jl):
    jax_model, julia_model = _pair()
    pj, pl = jax_model.encode(PARAMS, TS, X, MASK), julia_model.encode(PARAMS, TS, X, MASK)
    assert rel_err(pl.mean, pj.mean) < 1e-12 and rel_err(pl.log_var, pj.log_var) < 1e-12


@julia
@pytest.mark.parametrize("changes, tol", [(MIDPOINT, 1e-9), ({}, 1e-7),
                                          (dict(adjoint=pn.BacksolveAdjoint()), 1e-7)],
                         ids=["midpoint-direct", "dopri5-direct", "dopri5-backsolve"])
def test_elbo_and_gradient_agree_with_jax(jl, changes, tol):
    jax_model, julia_model = _pair(**changes)
    gj = jax_model.value_and_grad(PARAMS, TS, X, MASK, eps=EPS)
    gl = julia_model.value_and_grad(PARAMS, TS, X, MASK, eps=EPS)
    assert gl.value == pytest.approx(gj.value, rel=tol)
    assert rel_err(gl.grad_params, gj.grad_params) < tol
    assert rel_err(gl.log_likelihood, gj.log_likelihood) < tol
    assert rel_err(gl.kl, gj.kl) < 1e-12          # the encoder alone
    assert gl.stats.nfe_backward > 0


@julia
@pytest.mark.parametrize("changes, tol", [(MIDPOINT, 1e-9), ({}, 1e-7)], ids=["midpoint", "dopri5"])
def test_predictions_agree_with_jax(jl, changes, tol):
    jax_model, julia_model = _pair(**changes)
    pj = jax_model.predict(PARAMS, TS, X, PRED_TS, MASK, eps=EPS)
    pl = julia_model.predict(PARAMS, TS, X, PRED_TS, MASK, eps=EPS)
    assert pl.shape == pj.shape == (3, PRED_TS.size, 2)
    assert rel_err(pl, pj) < tol


@julia
def test_forward_nfe_is_the_latent_solve_counted_alone(jl):
    """The same solve as the ODE model's own gradient path (``vjp_forward``) from the same z(t0)."""
    _, model = _pair()
    res = model.value_and_grad(PARAMS, TS, X, MASK, eps=EPS)
    post = model.encode(PARAMS, TS, X, MASK)
    z0 = post.mean + np.exp(0.5 * post.log_var) * EPS
    part = next(p for p in latent_parts(MODEL) if p.name == "field")
    alone = model.ode_model().value_and_grad(PARAMS[part.start:part.stop], z0, TS,
                                            loss=pn.MSE(np.zeros((TS.size, 3, 3)))).stats
    assert (res.stats.nfe_forward, res.stats.steps_accepted, res.stats.steps_rejected) == \
        (alone.nfe_forward, alone.steps_accepted, alone.steps_rejected)


@julia
def test_float32_runs_close_to_float64(jl):
    _, model = _pair()
    g64 = model.value_and_grad(PARAMS, TS, X, MASK, eps=EPS)
    m32 = model.replace(dtype="float32", control=pn.StepControl(rtol=1e-5, atol=1e-6))
    g32 = m32.value_and_grad(PARAMS.astype(np.float32), TS, X, MASK, eps=EPS)
    assert g32.grad_params.dtype == np.float32
    assert g32.value == pytest.approx(g64.value, rel=1e-4)
    assert rel_err(g32.grad_params, g64.grad_params) < 1e-3
