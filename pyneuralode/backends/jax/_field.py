"""Compile a pyneuralode spec to a pure JAX function ``field(params_flat, t, y) -> dy/dt``.

``y`` always carries a leading batch axis here (the program adds one for unbatched inputs), so layers see
``(batch, *sample_shape)``. Parameters are sliced from the canonical flat vector with static offsets, so the
compiled function takes the same vector every backend takes.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..._augment import Augment
from ..._blocks import Residual
from ..._layers import AbstractLayer, Activation, Linear, Sequential, field_layer_not_supported, walk
from ..._params import param_layout

_ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "cube": lambda x: x * x * x,
    "rbf": lambda x: jnp.exp(-(x * x)),
    "identity": lambda x: x,
}

LayerFn = Callable[[list, jax.Array, jax.Array], jax.Array]  # (tensors, t, y) -> y


def _linear(layer: Linear) -> LayerFn:
    def apply(tensors, t, y):
        weight = tensors[0]
        if layer.time_input:  # t is the last input feature (DiffEqFlux / the paper's ConcatLinear)
            y = jnp.concatenate([y, jnp.broadcast_to(t, (*y.shape[:-1], 1)).astype(y.dtype)], axis=-1)
        out = y @ weight.T
        return out + tensors[1] if layer.bias else out
    return apply


def _activation(layer: Activation) -> LayerFn:
    fn = _ACTIVATIONS[layer.name]
    return lambda tensors, t, y: fn(y)


def _augment(layer: Augment) -> LayerFn:
    def apply(tensors, t, y):  # zeros appended on the first sample axis (features, or channels of NCHW)
        return jnp.concatenate([y, jnp.zeros((y.shape[0], layer.dims, *y.shape[2:]), y.dtype)], axis=1)
    return apply


_COMPILERS: dict[type, Callable[[AbstractLayer], LayerFn]] = {Linear: _linear, Activation: _activation,
                                                             Augment: _augment}


def register_layer(layer_type: type, compiler: Callable[[AbstractLayer], LayerFn]) -> None:
    """Teach the JAX backend a new primitive layer type (used by problem modules that add layers)."""
    _COMPILERS[layer_type] = compiler


def compile_field(spec: AbstractLayer) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``field(params_flat, t, y)`` for the whole spec, with static slices into the flat vector."""
    split, apply = compile_split(spec)
    return lambda params, t, y: apply(split(params), t, y)


def compile_split(spec: AbstractLayer):
    """``(split, apply)``: ``split(params_flat)`` gives the spec's tensors, ``apply(tensors, t, y)`` the field.

    A solver loop should split once, outside the loop, and pass the tensors as its arguments: slicing the flat
    vector inside every evaluation costs a dozen small ops per call, which XLA does not hoist out of a while loop
    whose arguments are not constants (a third of a small UDE's forward solve)."""
    slices = [(s.offset, s.stop, s.shape) for s in param_layout(spec.expand())]
    return (lambda params: [params[a:b].reshape(shape) for a, b, shape in slices]), compile_tensors(spec)


def compile_tensors(spec: AbstractLayer) -> LayerFn:
    """``apply(tensors, t, y)`` for the whole spec, ``tensors`` its parameter tensors in canonical order.

    ``Sequential`` chains its children; every other layer gets its own tensors from its registered compiler — a
    layer with sublayers of its own (:class:`pyneuralode.Dynamics` and its networks) gets its whole subtree's
    tensors, in canonical order, and compiles its sublayers itself with this function.
    """
    root = spec.expand()
    positions: dict[int, list[int]] = {}
    for k, s in enumerate(param_layout(root)):
        positions.setdefault(s.layer_index, []).append(k)
    counter = iter(range(len(walk(root))))

    def build(layer: AbstractLayer):
        index = next(counter)  # walk() order: parent before children, as param_layout numbers them
        if isinstance(layer, Sequential):
            children = [build(child) for child in layer.layers]

            def sequential(tensors, t, y):
                for child in children:
                    y = child(tensors, t, y)
                return y
            return sequential
        if isinstance(layer, Residual):  # y + layer(t, y)
            inner = build(layer.layer)
            return lambda tensors, t, y: y + inner(tensors, t, y)
        if type(layer) not in _COMPILERS:
            raise field_layer_not_supported(layer, "jax", _COMPILERS)
        subtree = range(index, index + len(walk(layer)))
        for _ in subtree[1:]:
            next(counter)
        apply, mine = _COMPILERS[type(layer)](layer), [k for i in subtree for k in positions.get(i, [])]
        return lambda tensors, t, y: apply([tensors[k] for k in mine], t, y)

    return build(root)
