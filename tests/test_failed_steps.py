"""A training step that raises changes nothing: parameters and optimiser state stay exactly as they were.

Every native trainer (``pn.Trainer``, ``pn.FlowTrainer``, a ``pn.Network``'s) on every backend that has one: a
failed step (NaN/inf loss, too many solver steps) raises the shared error, and the next good step is the step a
trainer that never failed takes.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode._classify import CrossEntropy

from helpers import model, spiral_batch, spiral_field

CONTROL = pn.StepControl(rtol=1e-5, atol=1e-6, max_steps=200)  # a good step needs ~20
Y0, TS = spiral_batch()


def _assert_same_state(got: dict, expected: dict):
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def _trainer_fails_and_recovers(make, good, bad_calls):
    """``make()`` builds a started trainer; ``good(t)`` is one good step; each ``(call, exc, pattern)`` fails.

    After the failures the next good step is the one taken from the saved state (one trainer, one compile)."""
    trainer = make()
    good(trainer)  # a non-trivial optimiser state first
    before = trainer.state_arrays()
    for call, exc, pattern in bad_calls:
        with pytest.raises(exc, match=pattern):
            call(trainer)
        _assert_same_state(trainer.state_arrays(), before)
    good(trainer)
    after_failures = trainer.state_arrays()
    trainer.load_state_arrays(before)
    good(trainer)
    _assert_same_state(after_failures, trainer.state_arrays())
    assert not np.array_equal(after_failures["params"], before["params"])  # the good step did move


def test_failed_trainer_step_changes_nothing(backend):
    m = model(spiral_field(), backend=backend, control=CONTROL)
    target = m.solve(m.init(1), Y0, TS).ys

    def make():
        trainer = pn.Trainer(m, optimizer=pn.Adam(lr=1e-2), loss=pn.MSE)
        trainer.init(m.init(0))
        return trainer

    _trainer_fails_and_recovers(make, lambda t: t.step(Y0, TS, target), [
        # a finite target whose squared error overflows: the loss is inf after the solve and gradient
        (lambda t: t.step(Y0, TS, np.full_like(target, 1e300)), pn.NonFiniteError, "loss or its gradient"),
        # the same shapes over a 10^4 times longer interval: more than max_steps=200 steps
        (lambda t: t.step(Y0, TS * 1e4, target), pn.MaxStepsError, "max_steps=200"),
        (lambda t: t.step(Y0, TS, target.astype(complex)), pn.SpecError, "MSE target must be a real array"),
        (lambda t: t.step(Y0, TS, np.full(target.shape, "a")), pn.SpecError, "MSE target must be a real array"),
        (lambda t: t.step(Y0, TS, np.where(target > 0, np.nan, target)), pn.SpecError, "target contains NaN"),
    ])


@pytest.mark.parametrize("flow_backend", ["jax", "torch"])
def test_failed_flow_step_changes_nothing(flow_backend):
    flow = pn.CNF(pn.MLP([2, 8, 2], time_input=True), control=pn.StepControl(rtol=1e-4, atol=1e-4),
                  backend=flow_backend, trace="exact")
    x = pn.datasets.toy_2d("8gaussians", 16, 0)

    def make():
        trainer = pn.FlowTrainer(flow, optimizer=pn.Adam(lr=1e-2))
        trainer.init(flow.init(0))
        return trainer

    _trainer_fails_and_recovers(make, lambda t: t.step(x), [
        (lambda t: t.step(np.full_like(x, 1e300)), pn.PyNeuralODEError, "NaN or infinite|max_steps"),
    ])


@pytest.mark.parametrize("net_backend", ["jax", "torch"])
def test_failed_network_step_changes_nothing(net_backend):
    spec = pn.Sequential(pn.ODEBlock(pn.MLP([3, 8, 3]), control=pn.StepControl(rtol=1e-4, atol=1e-4)),
                         pn.Linear(3, 2))
    net = pn.Network(spec, backend=net_backend, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 3))
    labels = np.array([0, 1, 1, 0])

    def make():
        trainer = net.program.make_trainer(pn.Adam(lr=1e-2), CrossEntropy())
        trainer.init(net.init(0))
        return trainer

    _trainer_fails_and_recovers(make, lambda t: t.step(x, labels), [
        (lambda t: t.step(np.full_like(x, 1e307), labels), pn.NonFiniteError, "became NaN or infinite"),
    ])


def test_step_before_init_names_the_fix(backend):
    m = model(spiral_field(), backend=backend, control=CONTROL)
    trainer = pn.Trainer(m, optimizer=pn.Adam(lr=1e-2))
    for call in (lambda: trainer.step(Y0, TS, np.zeros((len(TS), *Y0.shape))), lambda: trainer.params,
                 trainer.state_arrays):
        with pytest.raises(pn.SpecError, match=r"no parameters yet: call trainer.init\(params\) first"):
            call()
    if backend == "julia":
        return  # no native FlowTrainer or network trainer on Julia (both refuse it with the fix)
    flow = pn.FlowTrainer(pn.CNF(pn.MLP([2, 8, 2], time_input=True), backend=backend), optimizer=pn.Adam())
    with pytest.raises(pn.SpecError, match=r"call trainer.init\(params\) first"):
        flow.step(np.zeros((4, 2)))
    net = pn.Network(pn.Sequential(pn.Linear(3, 2)), backend=backend, dtype="float64")
    with pytest.raises(pn.SpecError, match=r"call trainer.init\(params\) first"):
        net.program.make_trainer(pn.Adam(), CrossEntropy()).step(np.zeros((4, 3)), np.zeros(4, dtype=int))
