"""Bad input gets one clear pyneuralode exception, with the same words on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

from helpers import model, spiral_batch, spiral_field

CONTROL = pn.StepControl(rtol=1e-3, atol=1e-4)
Y0, TS = spiral_batch()

# (id, callable(model, params) that must raise, exception type, message pattern)
BAD_CALLS = [
    ("y0-width", lambda m, p: m.solve(p, np.ones((4, 3)), TS), pn.SpecError, r"y0 has shape \(4, 3\).*expects \(2,\)"),
    ("y0-rank", lambda m, p: m.solve(p, np.ones((2, 4, 2)), TS), pn.SpecError, r"y0 has shape"),
    ("y0-nan", lambda m, p: m.solve(p, np.full((4, 2), np.nan), TS), pn.SpecError, r"y0 contains NaN"),
    ("params-length", lambda m, p: m.solve(p[:-1], Y0, TS), pn.SpecError, r"params has length 251 .* 252"),
    ("params-2d", lambda m, p: m.solve(p[None], Y0, TS), pn.SpecError, r"flat 1-D parameter vector"),
    ("params-complex", lambda m, p: m.solve(p.astype(complex), Y0, TS), pn.SpecError, r"real floating-point"),
    ("params-bool", lambda m, p: m.solve(p > 0, Y0, TS), pn.SpecError, r"real floating-point"),
    ("params-inf", lambda m, p: m.solve(np.where(np.arange(p.size) == 3, np.inf, p), Y0, TS), pn.SpecError,
     r"params contains NaN or infinite"),
    ("ts-not-monotonic", lambda m, p: m.solve(p, Y0, np.array([0.0, 0.2, 0.1])), pn.SpecError, r"strictly monotonic"),
    ("ts-repeated", lambda m, p: m.solve(p, Y0, np.array([0.0, 0.1, 0.1])), pn.SpecError, r"strictly monotonic"),
    ("ts-empty", lambda m, p: m.solve(p, Y0, np.array([])), pn.SpecError, r"at least one time"),
    ("ts-3d", lambda m, p: m.solve(p, Y0, np.zeros((2, 2, 2))), pn.SpecError, r"1-D array"),
    ("ts-per-sample-rows", lambda m, p: m.solve(p, Y0, np.zeros((2, 2))), pn.SpecError, r"batched y0 with 2"),
    ("loss-shape", lambda m, p: m.value_and_grad(p, Y0, TS, loss=pn.L1(np.zeros((5, 4, 3)))), pn.SpecError,
     r"target has shape \(5, 4, 3\) but the solution has shape \(5, 4, 2\)"),
    ("loss-type", lambda m, p: m.value_and_grad(p, Y0, TS, loss=lambda ys: 0.0), pn.SpecError, r"pn.L1"),
]


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_call(backend, case):
    _, call, exc, pattern = case
    m = model(spiral_field(), backend=backend, control=CONTROL)
    with pytest.raises(exc, match=pattern):
        call(m, m.init(0))


@pytest.mark.parametrize("kwargs, pattern", [
    ({"rtol": 0.0}, r"rtol must be a finite number > 0"),
    ({"atol": -1e-6}, r"atol must be a finite number > 0"),
    ({"rtol": float("nan")}, r"rtol must be a finite number > 0"),
    ({"dt": 0.0}, r"dt must be a finite number > 0"),
    ({"max_steps": 0}, r"max_steps must be a positive integer"),
    ({"safety": 1.5}, r"safety must lie in \(0, 1\)"),
    ({"factormin": 2.0}, r"factormin < 1 < factormax"),
])
def test_bad_step_control(kwargs, pattern):
    with pytest.raises(pn.SpecError, match=pattern):
        pn.StepControl(**kwargs)


@pytest.mark.parametrize("make, message", [
    (lambda: pn.ODEModel(spiral_field(), control=pn.StepControl(dt=0.5)),
     "Dopri5() is adaptive: dt is for fixed-step solvers (pn.Euler(), pn.Midpoint(), pn.Heun(), pn.RK4()); use dt0 "
     "for the first step of an adaptive one."),
    (lambda: pn.ODEModel(spiral_field(), solver=pn.Euler(), control=pn.StepControl(dt=0.1, dt0=0.1)),
     "Euler() is a fixed-step solver: dt0 is the first step of an adaptive solver; a fixed-step one takes only dt."),
    (lambda: pn.ODEBlock(spiral_field(), control=pn.StepControl(dt=0.5)),
     "Dopri5() is adaptive: dt is for fixed-step solvers (pn.Euler(), pn.Midpoint(), pn.Heun(), pn.RK4()); use dt0 "
     "for the first step of an adaptive one."),
    (lambda: pn.ODEBlock(spiral_field(), solver=pn.RK4()),
     "RK4() is a fixed-step solver: give the ODEBlock a step with control=pn.StepControl(dt=...)."),
])
def test_step_options_are_never_ignored(make, message):
    """dt was silently ignored by adaptive solvers (Dopri5 took the same steps with dt=0.5 and dt=0.01)."""
    with pytest.raises(pn.SpecError) as info:
        make()
    assert str(info.value) == message


def test_tolerance_finer_than_the_dtype_is_refused(backend):
    """rtol=1e-9 in float32 asks for less than one ulp: the error control then follows round-off, and JAX and torch
    took different steps (332 vs 368 evaluations on one forced problem). The CLI refused it; models now do too."""
    with pytest.raises(pn.SpecError) as info:
        model(spiral_field(), backend=backend, dtype="float32", control=pn.StepControl(rtol=1e-9))
    assert str(info.value) == ("StepControl rtol=1e-09 is below float32's resolution (1.2e-07): use a larger "
                               "StepControl rtol or dtype float64.")
    model(spiral_field(), backend=backend, dtype="float64", control=pn.StepControl(rtol=1e-9))  # float64 resolves it
    model(spiral_field(), backend=backend, dtype="float32", solver=pn.RK4(), control=pn.StepControl(rtol=1e-9, dt=0.1))


def test_y0_beyond_float32_is_refused_after_the_cast(backend):
    """A float64 y0 that overflows float32 was checked before the cast (then MaxStepsError / NonFiniteError)."""
    m = model(pn.Linear(2, 2), backend=backend, dtype="float32")
    for bad in (np.array([1e39, 1.0]), np.array([[1.0, -4e38]])):
        with pytest.raises(pn.SpecError) as info:
            m.solve(m.init(0), bad, np.array([0.0, 1.0]))
        assert str(info.value) == ("y0 has values out of float32 range (largest magnitude 3.403e+38): rescale "
                                   "them, or use dtype='float64'.")


def test_tiny_fixed_step_is_counted_before_the_grid_is_built(backend):
    """dt=1e-13 raised MemoryError/ValueError: the grid was allocated before max_steps was checked."""
    m = model(pn.Linear(1, 1, bias=False), backend=backend, solver=pn.Euler(), control=pn.StepControl(dt=1e-13))
    with pytest.raises(pn.MaxStepsError) as info:
        m.solve(np.array([1.0]), np.array([1.0]), np.array([0.0, 0.5, 1.0]))
    assert str(info.value) == ("The fixed-step grid needs 1e+13 steps, more than max_steps=4096: increase dt or "
                               "max_steps in pn.StepControl(dt=..., max_steps=...).")


@pytest.mark.parametrize("make, message", [
    (lambda: pn.CosineDecay(1e-2, 100), "CosineDecay takes no positional arguments but got 2: pass its options by "
                                         "name, CosineDecay(init_value=..., decay_steps=..., alpha=...)."),
    (lambda: pn.Adam(1e-3), "Adam takes no positional arguments but got 1: pass its options by name, "
                            "Adam(lr=..., b1=..., b2=..., eps=...)."),
    (lambda: pn.Dopri5(5), "Dopri5 takes no arguments, got 1: Dopri5()."),
    (lambda: pn.Trainer(pn.ODEModel(spiral_field()), pn.Adam()),
     "Trainer takes 1 positional argument but got 2: pass its options by name, Trainer(..., optimizer=..., "
     "loss=..., devices=...)."),
])
def test_options_given_by_position_name_the_keywords(make, message):
    """``pn.CosineDecay(1e-2, 100)`` (optax's positional form) raised Python's "takes 1 positional argument but 3
    were given", which does not say that the options are keyword-only or what they are called."""
    with pytest.raises(pn.UnknownOptionError) as info:
        make()
    assert str(info.value) == message and isinstance(info.value, TypeError)


def test_unknown_options_are_errors():
    """A SpecError of the family and the TypeError Python raises for an unknown keyword, both at once."""
    with pytest.raises(pn.UnknownOptionError, match="StepControl got an unknown option 'rtoll': did you mean 'rtol'"):
        pn.StepControl(rtoll=1e-3)
    with pytest.raises(TypeError, match="unknown option 'semi_norm': did you mean 'seminorm'"):
        pn.BacksolveAdjoint(semi_norm=True)
    with pytest.raises(pn.SpecError, match="unknown option 'semi_norm'"):
        pn.BacksolveAdjoint(semi_norm=True)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"solver": "Dopri6"}, pn.SpecError, r"Unknown solver 'Dopri6': choose one of .*pn.Dopri5\(\)"),
    ({"adjoint": "magic"}, pn.SpecError, r"Unknown adjoint 'magic'"),
    ({"backend": "tensorflow"}, pn.SpecError, r"Unknown backend 'tensorflow': choose one of 'jax', 'torch', 'julia'"),
    ({"dtype": "float16"}, pn.SpecError, r"dtype must be 'float32' or 'float64'"),
    ({"solver": pn.RK4()}, pn.SpecError, r"RK4\(\) is a fixed-step solver: .*StepControl\(dt=...\)"),
    ({"solver": pn.Rodas5P(), "backend": "jax"}, pn.NotSupportedError,
     r"Rodas5P\(\) is not available on backend 'jax': use backend='julia'"),
    ({"solver": pn.Vern7(), "backend": "torch"}, pn.NotSupportedError,
     r"Vern7\(\) is not available on backend 'torch': use backend='julia'"),
    ({"adjoint": pn.GaussAdjoint(), "backend": "jax"}, pn.NotSupportedError,
     r"GaussAdjoint\(\) is not available on backend 'jax': use backend='julia'"),
    ({"device": "tpu"}, pn.SpecError, r"device must be None, 'cpu' or 'cuda'"),
])
def test_bad_model_options(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        pn.ODEModel(spiral_field(), **kwargs)


@pytest.mark.parametrize("make, pattern", [
    (lambda: pn.MLP([2]), r"at least an input and an output size"),
    (lambda: pn.MLP([2, 0, 2]), r"positive integer"),
    (lambda: pn.MLP([2, 3], activation="swish"), r"Unknown activation 'swish'"),
    (lambda: pn.MLP("2,3"), r"sequence of layer widths"),
    (lambda: pn.Sequential(), r"at least one layer"),
    (lambda: pn.Sequential("tanh"), r"takes pyneuralode layers"),
])
def test_bad_spec(make, pattern):
    with pytest.raises(pn.SpecError, match=pattern):
        make()


def test_autograd_and_jax_transforms_through_the_numpy_api_name_native():
    """A torch tensor that requires grad failed with numpy's "Can't call numpy() on Tensor that requires grad", and
    a JAX tracer (model.solve inside jax.grad) with JAX's array-conversion error; both now say what to use."""
    torch, jax = pytest.importorskip("torch"), pytest.importorskip("jax")
    m = pn.ODEModel(spiral_field(), control=CONTROL, backend="jax")
    with pytest.raises(pn.SpecError, match=r"params is a torch tensor that requires grad: .* model.value_and_grad"
                                           r"\(...\), or embed model.native\(params\)"):
        m.solve(torch.tensor(m.init(0), requires_grad=True), Y0, TS)
    with pytest.raises(pn.SpecError, match=r"params is a JAX tracer .* use model.native\(params\), an equinox "
                                           "module"):
        jax.grad(lambda p: m.solve(p, Y0, TS).ys.sum())(jax.numpy.asarray(m.init(0)))


def test_compare_names_what_it_takes():
    """pn.compare(field, ...) (a layer where a model belongs) failed with "'MLP' object has no attribute
    'replace'"."""
    with pytest.raises(pn.SpecError, match=r"compare takes a pn.ODEModel, got MLP: wrap the field in one, "
                                           r"pn.compare\(pn.ODEModel\(field, solver=..., control=...\), ...\)"):
        pn.compare(spiral_field(), params=np.zeros(3), y0=Y0, ts=TS, loss=pn.L1(np.zeros(1)))


def test_max_steps_exceeded(backend):
    m = model(spiral_field(), backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-10, max_steps=5))
    with pytest.raises(pn.MaxStepsError, match=r"max_steps=5 .*increase max_steps.*stiff solver such as pn.Kvaerno5"):
        m.solve(m.init(0), Y0, TS)


def test_non_finite_state(backend):
    """dy/dt = y**3 from y0 = 10 blows up at t = 0.005; fixed Euler steps overflow to inf/NaN."""
    spec = pn.Sequential(pn.Activation("cube"), pn.Linear(1, 1, bias=False))
    m = model(spec, backend=backend, solver=pn.Euler(), control=pn.StepControl(dt=0.1))
    with pytest.raises(pn.NonFiniteError, match=r"state became NaN or infinite.*float64"):
        m.solve(np.array([1.0]), np.array([10.0]), np.linspace(0.0, 2.0, 3))


@pn.loss
def _relative_mse(ys, target, mask):
    r = np.where(mask, (ys - target) / (np.abs(target) + 0.1), 0.0)
    return np.sum(r * r) / np.sum(mask)


_TARGET = np.ones((len(TS), *Y0.shape))
_MASK = np.ones(_TARGET.shape, bool)


class _OptaxLike:
    """What an optax GradientTransformation looks like to a trainer: an object with init and update."""

    init = update = staticmethod(lambda *a: None)


def _step_with(m, **given):
    trainer = pn.Trainer(m, optimizer=pn.Adam())
    trainer.init(m.init(0))
    return trainer.step(Y0, TS, **given)


# A loss or an optimiser given in the form the *other* entry point takes: the error names the form this one takes.
WRONG_FORM = [
    ("trainer-step-bound-loss", lambda m: _step_with(m, loss=pn.MSE(_TARGET)),
     r"Trainer.step takes the data to fit: trainer.step\(y0, ts, target\); the loss kind belongs to the trainer: "
     r"pn.Trainer\(model, optimizer=..., loss=pn.MSE\)"),
    ("trainer-step-no-target", lambda m: _step_with(m),
     r"trainer.step\(y0, ts, target\); target must have shape \(len\(ts\), \*y0.shape\)"),
    ("vg-loss-class", lambda m: m.value_and_grad(m.init(0), Y0, TS, loss=pn.MSE),
     r"got the class pn.MSE: give it the target, loss=pn.MSE\(target\) \(it is pn.Trainer that takes the class"),
    ("vg-loss-function", lambda m: m.value_and_grad(m.init(0), Y0, TS, loss=_relative_mse),
     r"got _relative_mse, a pn.loss function without its arrays: call it with them, loss=_relative_mse\(target, "
     r"mask\)"),
    ("trainer-bound-loss", lambda m: pn.Trainer(m, optimizer=pn.Adam(), loss=pn.MSE(_TARGET)),
     r"a loss with its data bound: pass pn.MSE itself, and the target .* to each trainer.step"),
    ("trainer-bound-custom", lambda m: pn.Trainer(m, optimizer=pn.Adam(), loss=_relative_mse(_TARGET, _MASK)),
     r"a loss with its data bound: pass _relative_mse itself"),
    ("trainer-optimizer-class", lambda m: pn.Trainer(m, optimizer=pn.Adam),
     r"got the class pn.Adam: create one with its options, e.g. pn.Adam\(lr=1e-3\)"),
    ("trainer-optax", lambda m: pn.Trainer(m, optimizer=_OptaxLike()),
     r"an optax transformation: .* call model.value_and_grad\(params, y0, ts, loss=...\) and apply "
     r"res.grad_params"),
]


@pytest.mark.parametrize("case", WRONG_FORM, ids=[c[0] for c in WRONG_FORM])
def test_loss_and_optimizer_in_the_wrong_form_name_the_right_one(backend, case):
    """value_and_grad reported ``got CheckedOptions`` for ``loss=pn.MSE`` (the form pn.Trainer takes), and the
    trainers printed a class or an optax object's repr without saying what to pass instead."""
    _, call, pattern = case
    with pytest.raises(pn.SpecError, match=pattern):
        call(model(spiral_field(), backend=backend, control=CONTROL))


@pytest.mark.parametrize("bad", ["target", "mask-array"])
def test_custom_loss_refuses_nan_data_naming_the_mask_fix(bad):
    """NaN in a pn.loss's data reached the gradient through np.where's unselected branch, and the step stopped
    with 'the dynamics blew up'."""

    @pn.loss
    def weighted(ys, target, w):
        return np.sum(w * (ys - target) ** 2)

    target, w = _TARGET.copy(), np.ones(_TARGET.shape)
    (target if bad == "target" else w)[1] = np.nan
    what = "target" if bad == "target" else "array 'w'"
    with pytest.raises(pn.SpecError, match=rf"weighted {what} contains NaN or infinite values: .* np.where does not "
                                           r"keep a NaN out of the gradient. .* mask argument"):
        weighted(target, w)
