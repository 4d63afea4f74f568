"""Augmented neural ODEs: ``pn.Augment`` (a spec layer) and ``pn.ODEModel(augment=d)`` on every backend.

Each check restates augmentation independently: the augmented model must give exactly what the plain model gives
on an input padded with zeros by hand, its loss must be the loss of the first ``n`` features only, and its
gradients must match finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends.julia._network import describe_network

CONTROL = pn.StepControl(rtol=1e-10, atol=1e-10)
FIELD = pn.MLP([3, 6, 3])                      # n = 1 data feature + 2 augmented
Y0 = np.array([[0.5], [-0.3]])
TS = np.linspace(0.0, 1.0, 3)
TARGET = np.random.default_rng(0).random((3, 2, 1))


def _pad(x, d, axis=-1):
    shape = list(x.shape)
    shape[axis] = d
    return np.concatenate([x, np.zeros(shape)], axis=axis)


def test_augmented_model_solves_the_padded_state_and_drops_the_extra_features(backend):
    model = pn.ODEModel(FIELD, control=CONTROL, augment=2, backend=backend)
    plain = pn.ODEModel(FIELD, control=CONTROL, backend=backend)
    params = model.init(0)
    sol = model.solve(params, Y0, TS)
    full = plain.solve(params, _pad(Y0, 2), TS)
    assert sol.ys.shape == (3, 2, 1)
    np.testing.assert_allclose(sol.ys, full.ys[..., :1], rtol=0, atol=1e-13)
    assert np.abs(full.ys[-1, :, 1:]).max() > 1e-3     # the extra features did move: they are really dropped
    assert sol.stats == full.stats


def test_augmented_loss_sees_the_data_features_only_and_its_gradients_are_exact(backend):
    model = pn.ODEModel(FIELD, control=CONTROL, augment=2, backend=backend)
    params = model.init(0)
    res = model.value_and_grad(params, Y0, TS, loss=pn.MSE(TARGET))
    assert res.value == pytest.approx(np.mean((model.solve(params, Y0, TS).ys - TARGET) ** 2), rel=1e-12)
    assert res.grad_y0.shape == Y0.shape and res.ys.shape == (3, 2, 1)

    def loss(p, y0):
        return np.mean((model.solve(p, y0, TS).ys - TARGET) ** 2)
    h = 1e-6
    direction = np.random.default_rng(1).standard_normal(params.shape)
    fd = (loss(params + h * direction, Y0) - loss(params - h * direction, Y0)) / (2 * h)
    assert res.grad_params @ direction == pytest.approx(fd, rel=1e-6)
    e = np.zeros_like(Y0)
    e[1, 0] = 1.0
    fd_y0 = (loss(params, Y0 + h * e) - loss(params, Y0 - h * e)) / (2 * h)
    assert res.grad_y0[1, 0] == pytest.approx(fd_y0, rel=1e-6)


def test_augmented_trainer_step_is_the_augmented_value_and_grad(backend):
    if backend == "julia":
        pytest.skip("covered by the host trainer's own tests; one Julia start per module is enough here")
    model = pn.ODEModel(FIELD, control=CONTROL, augment=2, backend=backend)
    params = model.init(0)
    trainer = pn.Trainer(model, optimizer=pn.SGD(lr=0.1), loss=pn.MSE)
    trainer.init(params)
    info = trainer.step(Y0, TS, TARGET)
    res = model.value_and_grad(params, Y0, TS, loss=pn.MSE(TARGET))
    assert info.loss == pytest.approx(res.value, rel=1e-12)
    np.testing.assert_allclose(trainer.params, params - 0.1 * res.grad_params, rtol=0, atol=1e-12)


VECTOR_NET = pn.Sequential(pn.Augment(2), pn.ODEBlock(pn.MLP([4, 6, 4]), control=CONTROL), pn.Linear(4, 2))
X = np.random.default_rng(2).random((3, 2))
LABELS = np.array([0, 1, 1])


def test_augment_layer_in_a_network_equals_a_zero_padded_input(backend):
    net = pn.Network(VECTOR_NET, input_shape=(2,), dtype="float64", backend=backend)
    plain = pn.Network(pn.Sequential(*VECTOR_NET.layers[1:]), input_shape=(4,), dtype="float64", backend=backend)
    params = net.init(0)
    assert net.num_params == plain.num_params and np.array_equal(params, plain.init(0))
    got, want = net.value_and_grad(params, X, LABELS), plain.value_and_grad(params, _pad(X, 2), LABELS)
    assert got.value == pytest.approx(want.value, rel=1e-13)
    np.testing.assert_allclose(got.grad_params, want.grad_params, rtol=0, atol=1e-13)
    assert got.stats == want.stats


def test_augment_pads_image_channels(backend):
    spec = pn.Sequential(pn.Augment(1), pn.Conv2d(2, 2, 3, padding=1), pn.Flatten(), pn.Linear(32, 2))
    images = np.random.default_rng(3).random((2, 1, 4, 4))
    net = pn.Network(spec, input_shape=(1, 4, 4), dtype="float64", backend=backend)
    plain = pn.Network(pn.Sequential(*spec.layers[1:]), input_shape=(2, 4, 4), dtype="float64", backend=backend)
    params = net.init(0)
    np.testing.assert_allclose(net.apply(params, images), plain.apply(params, _pad(images, 1, axis=1)),
                               rtol=0, atol=1e-13)


def test_augment_shapes_and_julia_description():
    assert pn.Augment(3).out_shape((2,)) == (5,)
    assert pn.Augment(2).out_shape((1, 28, 28)) == (3, 28, 28)
    assert describe_network(VECTOR_NET).split(";")[:2] == ["seq,3", "augment,2"]
    assert pn.ODEModel(FIELD, augment=2).state_shape == (1,)


@pytest.mark.parametrize("make, message", [
    (lambda: pn.Augment(0), "Augment dims must be a positive integer, got 0."),
    (lambda: pn.Augment(True), "Augment dims must be a positive integer, got True."),
    (lambda: pn.ODEModel(FIELD, augment=3), r"augment=3 leaves no data features: the field takes 3 features"),
    (lambda: pn.ODEModel(FIELD, augment=-1), "ODEModel augment must be a positive integer, got -1."),
    (lambda: pn.ODEModel(pn.Conv2d(2, 2, 3, padding=1), augment=1),
     r"ODEModel\(augment=...\) pads vector states .* put pn.Augment\(d\) before a pn.ODEBlock"),
])
def test_bad_augmentation_names_the_fix(make, message):
    with pytest.raises(pn.SpecError, match=message):
        make()


def test_augmented_model_refuses_a_state_of_the_field_width():
    model = pn.ODEModel(FIELD, augment=2)
    with pytest.raises(pn.SpecError, match=r"y0 has shape \(2, 3\) but the vector field expects \(1,\)"):
        model.solve(model.init(0), _pad(Y0, 2), TS)
