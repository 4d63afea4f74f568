"""A NumPy evaluation of the MLP layer catalogue (``Linear``, ``Activation``, ``Sequential``): the reference a
:class:`pyneuralode.Dynamics` calls its networks with in :meth:`pyneuralode.Dynamics.evaluate`."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._errors import NotSupportedError
from ._layers import AbstractLayer, Activation, Linear, Sequential
from ._params import param_layout

ACTIVATIONS: dict[str, Callable] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "cube": lambda x: x * x * x,
    "identity": lambda x: x,
}


def numpy_layer(spec: AbstractLayer) -> Callable[[np.ndarray, float, np.ndarray], np.ndarray]:
    """``apply(flat, t, x)``: ``spec`` applied to ``x`` (features on the last axis) with canonical flat params."""
    root = spec.expand()
    slots = param_layout(root)
    tensors_of: dict[int, list] = {}
    for slot in slots:
        tensors_of.setdefault(slot.layer_index, []).append(slot)
    counter = iter(range(len(slots) + 10**9))

    def build(layer):
        index = next(counter)
        if isinstance(layer, Sequential):
            children = [build(child) for child in layer.layers]

            def sequential(flat, t, x):
                for child in children:
                    x = child(flat, t, x)
                return x
            return sequential
        own = tensors_of.get(index, [])
        if isinstance(layer, Linear):
            def linear(flat, t, x):
                w = flat[own[0].offset:own[0].stop].reshape(own[0].shape)
                if layer.time_input:
                    x = np.concatenate([x, np.broadcast_to(t, (*x.shape[:-1], 1))], axis=-1)
                y = x @ w.T
                return y + flat[own[1].offset:own[1].stop] if layer.bias else y
            return linear
        if isinstance(layer, Activation):
            fn = ACTIVATIONS[layer.name]
            return lambda flat, t, x: fn(x)
        raise NotSupportedError(f"The NumPy reference evaluates Linear/Activation/Sequential networks only, not "
                                f"{type(layer).__name__}.")

    return build(root)
