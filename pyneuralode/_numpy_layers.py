"""A NumPy evaluation of the MLP layer catalogue (``Linear``, ``Activation``, ``Sequential``): the reference a
:class:`pyneuralode.Dynamics` calls its networks with in :meth:`pyneuralode.Dynamics.evaluate`."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._errors import NotSupportedError
from ._layers import AbstractLayer, Activation, Linear, Sequential, walk
from ._params import param_layout

ACTIVATIONS: dict[str, Callable] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "cube": lambda x: x * x * x,
    "rbf": lambda x: np.exp(-(x * x)),
    "identity": lambda x: x,
}


def numpy_layer(spec: AbstractLayer) -> Callable:
    """``apply(tensor, t, x)``: ``spec`` applied to ``x`` (features on the last axis), ``tensor(slot)`` giving
    each parameter (a :class:`pyneuralode._params.ParamSlot` of ``param_layout(spec)``) with its shape.

    Written with NumPy functions only, so the same code evaluates the network on arrays (the reference) and, on
    traced values, writes it into a graph in the graph's own ops (``pn.grad`` differentiates it there). Nested
    ``Sequential``s only chain their leaves, so the leaves in :func:`pyneuralode._layers.walk` order are the whole
    computation."""
    own: dict[int, list] = {}
    for slot in param_layout(spec):
        own.setdefault(slot.layer_index, []).append(slot)
    steps = []
    for index, layer in enumerate(walk(spec.expand())):
        if isinstance(layer, Sequential):
            continue
        if not isinstance(layer, (Linear, Activation)):
            raise NotSupportedError(f"The NumPy reference evaluates Linear/Activation/Sequential networks only, "
                                    f"not {type(layer).__name__}.")
        steps.append((layer, own.get(index, [])))

    def apply(tensor, t, x):
        for layer, slots in steps:
            if isinstance(layer, Activation):
                x = ACTIVATIONS[layer.name](x)
                continue
            if layer.time_input:  # t is the last input feature
                x = np.concatenate([x, np.broadcast_to(t, (*x.shape[:-1], 1))], axis=-1)
            tensors = [tensor(s) for s in slots]
            x = x @ tensors[0].T + (tensors[1] if layer.bias else 0.0)
        return x

    return apply
