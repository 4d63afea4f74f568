"""A NumPy evaluation of the vector-field layer catalogue (``Linear``, ``Activation``, ``Sequential``, ``Residual``,
``Augment``): the reference a :class:`pyneuralode.Dynamics` calls its networks with in
:meth:`pyneuralode.Dynamics.evaluate`, and the ops :func:`pyneuralode.grad` writes a network into a graph with."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._errors import NotSupportedError
from ._augment import Augment
from ._blocks import compose_layers
from ._layers import AbstractLayer, Activation, Linear
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
    """``apply(tensor, t, x)``: ``spec`` applied to ``x`` (vector samples: features on the last axis), ``tensor(slot)``
    giving each parameter (a :class:`pyneuralode._params.ParamSlot` of ``param_layout(spec)``) with its shape.

    Written with NumPy functions only, so the same code evaluates the network on arrays (the reference) and, on
    traced values, writes it into a graph in the graph's own ops (``pn.grad`` differentiates it there). Covers the
    layers of vector fields: ``Linear``, activations, ``Sequential``, ``Residual`` and ``Augment``; anything else
    raises ``NotSupportedError``."""
    root = spec.expand()
    own: dict[int, list] = {}
    for slot in param_layout(root):
        own.setdefault(slot.layer_index, []).append(slot)
    def leaf(layer: AbstractLayer, subtree: range) -> Callable:
        if isinstance(layer, Augment):  # zero features appended to each vector sample
            return lambda tensor, t, x: np.concatenate([x, np.zeros((*x.shape[:-1], layer.dims))], axis=-1)
        if isinstance(layer, Activation):
            return lambda tensor, t, x: ACTIVATIONS[layer.name](x)
        if isinstance(layer, Linear):
            slots = own.get(subtree[0], [])

            def linear(tensor, t, x):
                if layer.time_input:  # t is the last input feature
                    x = np.concatenate([x, np.broadcast_to(t, (*x.shape[:-1], 1))], axis=-1)
                out = x @ tensor(slots[0]).T
                return out + tensor(slots[1]) if layer.bias else out
            return linear
        raise NotSupportedError(f"The NumPy reference evaluates Linear, activation, Sequential, Residual and Augment "
                                f"networks only, not {type(layer).__name__}.")

    return compose_layers(root, leaf)
