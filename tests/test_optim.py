"""Learning-rate schedules, L-BFGS and observation masks: the same numbers on every backend.

- Schedules: the numpy definition, optax's schedule and torch's scheduler give the same rates step by step, and
  the Trainer applies them (SGD without momentum: ``p_{k+1} = p_k - lr(k) g_k`` against value_and_grad).
- Masks/weights: the weighted loss equals the mean over the observed entries, with NaN allowed where unobserved,
  and its value and gradient agree across backends.
- Checkpoints of scheduled and L-BFGS trainers resume exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends.torch._optim import TorchOptimizer

from helpers import model

SCHEDULES = {
    "exponential": pn.ExponentialDecay(init_value=0.1, decay_rate=0.5, transition_steps=7),
    "staircase": pn.ExponentialDecay(init_value=0.1, decay_rate=0.5, transition_steps=7, staircase=True),
    "cosine": pn.CosineDecay(init_value=0.1, decay_steps=20, alpha=0.05),
    "piecewise": pn.PiecewiseConstant(init_value=0.1, boundaries=(5, 12), factors=(0.3, 0.1)),
}
STEPS = 30  # beyond the cosine's decay_steps: optax holds its final value, so must torch

CONTROL = pn.StepControl(rtol=1e-8, atol=1e-10)
W_TRUE = np.array([[-0.3, 1.1], [-0.9, -0.2]])
TS = np.linspace(0.0, 2.0, 9)
Y0 = np.array([[1.0, 0.5], [-0.4, 0.8], [0.3, -1.0]])


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_same_rates_numpy_optax_torch(name):
    import jax
    import torch
    jax.config.update("jax_enable_x64", True)
    schedule = SCHEDULES[name]
    reference = np.array([schedule(k) for k in range(STEPS)])
    # as the JAX trainers call it: jitted, on optax's int32 step count (int32 / int is float32 in JAX, so the
    # rates were float32-rounded, 1.5e-8 relative, until the count was made a float; a new user's report)
    rate = jax.jit(pn.SGD(lr=schedule)._optax_lr())
    optax_rates = np.array([float(rate(jax.numpy.asarray(k, jax.numpy.int32))) for k in range(STEPS)])
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = TorchOptimizer(pn.SGD(lr=schedule, momentum=0.0), [param])
    torch_rates = []
    for _ in range(STEPS):
        torch_rates.append(opt.lr)
        opt.step()
    np.testing.assert_allclose(optax_rates, reference, rtol=1e-12)
    np.testing.assert_allclose(torch_rates, reference, rtol=1e-12)
    assert len(set(np.round(reference, 12))) > 2  # the schedule really changes the rate


def test_schedule_errors():
    with pytest.raises(pn.SpecError, match="decay_rate must be a finite number > 0"):
        pn.ExponentialDecay(init_value=0.1, decay_rate=0.0)
    with pytest.raises(pn.SpecError, match="boundaries must be strictly increasing"):
        pn.PiecewiseConstant(init_value=0.1, boundaries=(5, 5), factors=(0.1, 0.1))
    with pytest.raises(pn.SpecError, match="CosineDecay alpha must lie in"):
        pn.CosineDecay(init_value=0.1, decay_steps=5, alpha=2.0)
    with pytest.raises(pn.SpecError, match="Adam lr must be a finite number > 0 or a schedule"):
        pn.Adam(lr="0.1")
    with pytest.raises(pn.SpecError, match="either a schedule as lr or boundaries/factors"):
        pn.SGD(lr=SCHEDULES["cosine"], boundaries=(3,), factors=(0.1,))
    assert pn.SGD(lr=0.1, boundaries=(3,), factors=(0.5,)).schedule == pn.PiecewiseConstant(
        init_value=0.1, boundaries=(3,), factors=(0.5,))


@pytest.fixture(scope="module")
def linear_data():
    """A linear ODE ``dy/dt = W y`` observed at TS from three starts (the truth the fits aim at)."""
    truth = model(pn.Linear(2, 2, bias=False), backend="jax", control=CONTROL)
    return truth.solve(W_TRUE.reshape(-1), Y0, TS).ys


def _linear_model(backend):
    return model(pn.Linear(2, 2, bias=False), backend=backend, control=CONTROL)


def test_trainer_applies_schedule(backend, linear_data):
    """Plain SGD with a schedule: every update is ``-lr(k) · gradient``, the gradient from value_and_grad."""
    schedule = SCHEDULES["piecewise"]
    m = _linear_model(backend)
    trainer = pn.Trainer(m, optimizer=pn.SGD(lr=pn.PiecewiseConstant(init_value=0.1, boundaries=(1, 2),
                                                                      factors=(0.3, 0.1)), momentum=0.0),
                         loss=pn.MSE)
    params = np.zeros(4)
    trainer.init(params)
    for k in range(3):
        g = m.value_and_grad(params, Y0, TS, loss=pn.MSE(linear_data)).grad_params
        params = params - [0.1, 0.03, 0.003][k] * g
        trainer.step(Y0, TS, linear_data)
        np.testing.assert_allclose(trainer.params, params, rtol=1e-10, atol=1e-14)
    assert schedule(0) == 0.1


# ---------------------------------------------------------------------------------------------- masks, weights
def _masked(linear_data):
    rng = np.random.default_rng(3)
    mask = rng.random(linear_data.shape) < 0.6
    mask[0] = True
    target = np.where(mask, linear_data + 0.05 * rng.standard_normal(linear_data.shape), np.nan)
    return target, mask


def test_masked_loss_is_the_mean_over_observed_entries(linear_data):
    target, mask = _masked(linear_data)
    ys = linear_data * 1.1
    observed = (ys - target)[mask]
    assert pn.MSE(target, mask=mask)(ys) == pytest.approx(np.mean(observed**2), rel=1e-14)
    assert pn.L1(target, mask=mask)(ys) == pytest.approx(np.mean(np.abs(observed)), rel=1e-14)
    weights = np.array([1.0, 3.0])  # per state component, broadcast
    w = np.broadcast_to(weights, ys.shape)
    diff = ys - linear_data
    assert pn.MSE(linear_data, weights=weights)(ys) == pytest.approx(np.sum(w * diff**2) / np.sum(w), rel=1e-14)
    assert pn.MSE(linear_data, mask=np.ones(ys.shape, bool))(ys) == pytest.approx(pn.MSE(linear_data)(ys),
                                                                                   rel=1e-14)


def test_mask_errors(linear_data):
    target, mask = _masked(linear_data)
    with pytest.raises(pn.SpecError, match=r"pass mask=np.isfinite\(target\)"):
        pn.MSE(target)
    with pytest.raises(pn.SpecError, match="NaN or infinite values at observed entries"):
        pn.MSE(target, mask=np.ones(target.shape, bool))
    with pytest.raises(pn.SpecError, match="mask must be a boolean array"):
        pn.MSE(linear_data, mask=np.ones(target.shape))
    with pytest.raises(pn.SpecError, match=r"weights has shape \(3,\), which does not broadcast"):
        pn.MSE(linear_data, weights=np.ones(3))
    with pytest.raises(pn.SpecError, match="select no observation"):
        pn.L1(linear_data, mask=np.zeros(target.shape, bool))
    with pytest.raises(pn.SpecError, match="weights must be finite and >= 0"):
        pn.L1(linear_data, weights=-np.ones(2))


def test_masked_value_and_grad_agrees_with_finite_differences(backend, linear_data):
    target, mask = _masked(linear_data)
    m = _linear_model(backend)
    params = (W_TRUE + 0.1).reshape(-1)
    loss = pn.MSE(target, mask=mask)
    res = m.value_and_grad(params, Y0, TS, loss=loss)
    assert res.value == pytest.approx(loss(m.solve(params, Y0, TS).ys), rel=1e-12)
    direction = np.array([0.3, -0.2, 0.5, 0.1])
    eps = 1e-5
    fd = (loss(m.solve(params + eps * direction, Y0, TS).ys)
          - loss(m.solve(params - eps * direction, Y0, TS).ys)) / (2 * eps)
    assert res.grad_params @ direction == pytest.approx(fd, rel=1e-6)


def test_trainer_step_with_mask(backend, linear_data):
    target, mask = _masked(linear_data)
    m = _linear_model(backend)
    params = (W_TRUE + 0.1).reshape(-1)
    trainer = pn.Trainer(m, optimizer=pn.SGD(lr=0.1, momentum=0.0), loss=pn.MSE)
    trainer.init(params)
    info = trainer.step(Y0, TS, target, mask=mask)
    res = m.value_and_grad(params, Y0, TS, loss=pn.MSE(target, mask=mask))
    assert info.loss == pytest.approx(res.value, rel=1e-12)
    np.testing.assert_allclose(trainer.params, params - 0.1 * res.grad_params, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------- L-BFGS
def test_lbfgs_reaches_the_minimum_on_every_backend(backend, linear_data):
    """Noise-free data from W_TRUE: the least-squares fit has its minimum (loss 0) at W_TRUE. L-BFGS from a
    perturbed start reaches it on each backend, though the implementations take different paths (Julia's runs on
    the host: tests/test_host_lbfgs.py)."""
    m = _linear_model(backend)
    trainer = pn.Trainer(m, optimizer=pn.LBFGS(), loss=pn.MSE)
    trainer.init((W_TRUE + np.array([[0.3, -0.2], [0.25, 0.2]])).reshape(-1))
    first = trainer.step(Y0, TS, linear_data)
    for _ in range(40):
        info = trainer.step(Y0, TS, linear_data)
    assert first.evaluations >= 2  # the gradient at the start, plus at least one line-search trial
    assert info.loss < 1e-16 * first.loss or info.loss < 1e-20
    np.testing.assert_allclose(trainer.params, W_TRUE.reshape(-1), rtol=0, atol=1e-7)


def test_lbfgs_backs_off_from_a_trial_whose_solve_fails(backend):
    """Fitting y' = a y to exp(0.6 t) on [0, 4] from a = 0 with max_steps=30: the first trial step lands near
    a = 1, whose solve needs 38 steps. torch's L-BFGS raised MaxStepsError there on every step and never moved (a
    new user's report); now a failed trial is a failed sufficient-decrease test and the search backs off, as on
    JAX. Both reach a = 0.6."""
    ts, y0 = np.linspace(0.0, 4.0, 9), np.array([[1.0]])
    model = pn.ODEModel(pn.Linear(1, 1, bias=False), control=pn.StepControl(rtol=1e-8, atol=1e-8, max_steps=30),
                        backend=backend)
    with pytest.raises(pn.MaxStepsError):  # the trial point the line search first proposes
        model.solve(np.array([1.0]), y0, ts)
    trainer = pn.Trainer(model, optimizer=pn.LBFGS(), loss=pn.MSE)
    trainer.init(np.array([0.0]))
    for _ in range(8):
        trainer.step(y0, ts, np.exp(0.6 * ts)[:, None, None])
    np.testing.assert_allclose(trainer.params, [0.6], atol=1e-7)


@pytest.mark.parametrize("optimizer", [pn.Adam(lr=pn.CosineDecay(init_value=0.05, decay_steps=4)), pn.LBFGS()],
                         ids=["adam-cosine", "lbfgs"])
def test_scheduled_and_lbfgs_checkpoints_resume_exactly(backend, linear_data, optimizer, tmp_path):
    """torch.optim.LBFGS keeps lists of tensors in its state (stored stacked); optax's state is a pytree. (JAX's
    L-BFGS resume is covered by the UDE run's resume test, which shares its compiled step.)"""
    if backend == "jax" and optimizer.needs_value_fn:
        pytest.skip("covered by tests/test_ude.py::test_ude_resume_is_exact_in_both_phases (shares its compile)")
    m = _linear_model(backend)
    start = (W_TRUE + 0.2).reshape(-1)
    straight = pn.Trainer(m, optimizer=optimizer, loss=pn.MSE)
    straight.init(start)
    for _ in range(6):
        straight.step(Y0, TS, linear_data)
    first = pn.Trainer(m, optimizer=optimizer, loss=pn.MSE)
    first.init(start)
    for _ in range(3):
        first.step(Y0, TS, linear_data)
    pn.train.save_checkpoint(tmp_path / "ck.npz", first.state_arrays(), {})
    resumed = pn.Trainer(m, optimizer=optimizer, loss=pn.MSE)
    resumed.load_state_arrays(pn.train.load_checkpoint(tmp_path / "ck.npz")[0])
    for _ in range(3):
        resumed.step(Y0, TS, linear_data)
    np.testing.assert_array_equal(resumed.params, straight.params)


def test_another_optimisers_state_is_refused(backend, linear_data):
    """A JAX L-BFGS state loaded into an Adam trainer was accepted (its first arrays fit Adam's) and the next step
    left half the parameters NaN (a new user's report): arrays a trainer does not have are refused (torch's own
    state loading refuses a mismatch in its words)."""
    m = _linear_model(backend)
    lbfgs = pn.Trainer(m, optimizer=pn.LBFGS(), loss=pn.MSE)
    lbfgs.init(m.init(0))
    lbfgs.step(Y0, TS, linear_data)
    adam = pn.Trainer(m, optimizer=pn.Adam(lr=0.01), loss=pn.MSE)
    adam.init(m.init(1))
    with pytest.raises(pn.SpecError, match=("which this trainer does not have: it was saved by a trainer with "
                                            "another optimiser") if backend == "jax" else None):
        adam.load_state_arrays(lbfgs.state_arrays())
    adam.load_state_arrays(adam.state_arrays())  # its own state still loads


def test_lbfgs_only_where_the_loss_is_full_batch():
    cnf = pn.CNF(pn.MLP([2, 4, 2], time_input=True), backend="jax")
    with pytest.raises(pn.SpecError, match="a line-search optimiser such as pn.LBFGS needs a deterministic"):
        pn.FlowTrainer(cnf, optimizer=pn.LBFGS())
    with pytest.raises(pn.SpecError, match="LBFGS memory_size must be a positive integer"):
        pn.LBFGS(memory_size=0)


# ------------------------------------------------------------------------------------------------ custom losses
@pn.loss
def relative_mse(ys, target, mask):
    r = np.where(mask, (ys - target) / (np.abs(target) + 0.1), 0.0)
    return np.sum(r * r) / np.sum(mask)


def test_custom_loss_value_and_gradient(backend, linear_data):
    """A pn.loss runs natively in the backend's step: its value equals the function called on NumPy arrays and
    its gradient equals central finite differences of that NumPy value."""
    target, mask = _masked(linear_data)
    target = np.where(mask, target, 0.0)
    m = _linear_model(backend)
    params = (W_TRUE + 0.1).reshape(-1)
    loss = relative_mse(target, mask=mask)
    res = m.value_and_grad(params, Y0, TS, loss=loss)
    ys = m.solve(params, Y0, TS).ys
    r = np.where(mask, (ys - target) / (np.abs(target) + 0.1), 0.0)
    assert res.value == pytest.approx(np.sum(r * r) / np.sum(mask), rel=1e-12)
    assert loss(ys) == pytest.approx(res.value, rel=1e-12)
    direction = np.array([0.3, -0.2, 0.5, 0.1])
    eps = 1e-5
    fd = (loss(m.solve(params + eps * direction, Y0, TS).ys)
          - loss(m.solve(params - eps * direction, Y0, TS).ys)) / (2 * eps)
    assert res.grad_params @ direction == pytest.approx(fd, rel=1e-6)
    trainer = pn.Trainer(m, optimizer=pn.SGD(lr=0.1, momentum=0.0), loss=relative_mse)
    trainer.init(params)
    info = trainer.step(Y0, TS, target, mask=mask)
    assert info.loss == pytest.approx(res.value, rel=1e-12)
    np.testing.assert_allclose(trainer.params, params - 0.1 * res.grad_params, rtol=1e-10)


def test_custom_loss_errors(linear_data):
    with pytest.raises(pn.SpecError, match="takes ys, then target, then any further arrays"):
        pn.loss(lambda ys: np.mean(ys))
    with pytest.raises(pn.SpecError, match=r"needs the array\(s\) mask besides the target"):
        relative_mse(linear_data)
    with pytest.raises(pn.SpecError, match="unexpected or repeated array 'weights'"):
        relative_mse(linear_data, mask=linear_data > 0, weights=1.0)

    @pn.loss
    def not_scalar(ys, target):
        return (ys - target) ** 2

    with pytest.raises(pn.SpecError, match=r"must return a real scalar \(the loss\), got a value of shape \(9, 3, 2\)"):
        not_scalar(linear_data)

    @pn.loss
    def branchy(ys, target):
        return np.mean(ys) if np.mean(ys) > 0 else np.mean(target)

    with pytest.raises(pn.SpecError, match="inside a pn.loss function"):
        branchy(linear_data)

    @pn.loss
    def sorted_loss(ys, target):
        return np.mean(np.sort(ys))

    with pytest.raises(pn.SpecError, match="is not supported in a pn.loss function"):
        sorted_loss(linear_data)

    @pn.loss
    def final_state(ys, target):
        return np.mean((ys[-1] - target) ** 2)

    model = _linear_model("jax")  # a final-state target: the message says how to write it (a new user's report)
    with pytest.raises(pn.SpecError, match=r"pass a target of the solution's shape \(e.g. zeros\) and the data as "
                                           "an extra array argument"):
        model.value_and_grad(W_TRUE.reshape(-1), Y0, TS, loss=final_state(linear_data[-1]))

    @pn.loss
    def final(ys, target, data):
        return np.mean((ys[-1] - data) ** 2)

    res = model.value_and_grad(W_TRUE.reshape(-1), Y0, TS, loss=final(np.zeros_like(linear_data), linear_data[-1]))
    assert res.value < 1e-12  # the data were made by W_TRUE
