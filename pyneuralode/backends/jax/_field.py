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
from ..._blocks import compose_layers
from ..._layers import AbstractLayer, Activation, Linear, field_layer_not_supported
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


_PACKED: set[type] = set()
"""Layer types whose own parameters arrive as ONE flat vector (their slice of the canonical vector) rather than one
tensor each — for layers with many small parameters read elementwise (:class:`pyneuralode.Dynamics`'s scalars):
each separate tensor costs the gradient its own kernels, and a slice feeding elementwise maths fuses for free."""


def register_layer(layer_type: type, compiler: Callable[[AbstractLayer], LayerFn], *, packed: bool = False) -> None:
    """Teach the JAX backend a new primitive layer type (used by problem modules that add layers); ``packed``: its
    compiler takes its own parameters as one flat vector first (see :data:`_PACKED`)."""
    _COMPILERS[layer_type] = compiler
    if packed:
        _PACKED.add(layer_type)


def tensor_plan(root: AbstractLayer) -> tuple[list[tuple[int, int, tuple | None]], list[int]]:
    """``(tensors, slot_tensor)``: the tensors :func:`compile_split` cuts from the flat vector, each ``(start,
    stop, shape)`` (``shape`` None for a packed layer's flat vector), and the tensor each parameter slot of
    ``param_layout(root)`` lives in."""
    tensors: list[tuple[int, int, tuple | None]] = []
    slot_tensor: list[int] = []
    previous = None
    for s in param_layout(root):
        if type(s.layer) in _PACKED and previous is not None and previous.layer_index == s.layer_index:
            tensors[-1] = (tensors[-1][0], s.stop, None)  # the packed layer's next parameter: extend its vector
        else:
            tensors.append((s.offset, s.stop, None if type(s.layer) in _PACKED else s.shape))
        slot_tensor.append(len(tensors) - 1)
        previous = s
    return tensors, slot_tensor


def compile_field(spec: AbstractLayer) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """``field(params_flat, t, y)`` for the whole spec, with static slices into the flat vector."""
    split, apply = compile_split(spec)
    return lambda params, t, y: apply(split(params), t, y)


def compile_split(spec: AbstractLayer):
    """``(split, apply)``: ``split(params_flat)`` gives the spec's tensors, ``apply(tensors, t, y)`` the field.

    A solver loop should split once, outside the loop, and pass the tensors as its arguments: slicing the flat
    vector inside every evaluation costs a dozen small ops per call, which XLA does not hoist out of a while loop
    whose arguments are not constants (a third of a small UDE's forward solve)."""
    tensors, _ = tensor_plan(spec.expand())

    def split(params):
        return [params[a:b] if shape is None else params[a:b].reshape(shape) for a, b, shape in tensors]
    return split, compile_tensors(spec)


def compile_tensors(spec: AbstractLayer) -> LayerFn:
    """``apply(tensors, t, y)`` for the whole spec, ``tensors`` its parameter tensors in canonical order (as
    :func:`tensor_plan` cuts them: a packed layer's parameters are one flat vector).

    ``Sequential`` chains its children; every other layer gets its own tensors from its registered compiler — a
    layer with sublayers of its own (:class:`pyneuralode.Dynamics` and its networks) gets its whole subtree's
    tensors, in canonical order, and compiles its sublayers itself with this function.
    """
    root = spec.expand()
    positions: dict[int, list[int]] = {}
    for s, k in zip(param_layout(root), tensor_plan(root)[1]):
        if k not in positions.setdefault(s.layer_index, []):
            positions[s.layer_index].append(k)
    def leaf(layer: AbstractLayer, subtree: range):
        if type(layer) not in _COMPILERS:
            raise field_layer_not_supported(layer, "jax", _COMPILERS)
        apply, mine = _COMPILERS[type(layer)](layer), [k for i in subtree for k in positions.get(i, [])]
        return lambda tensors, t, y: apply([tensors[k] for k in mine], t, y)

    return compose_layers(root, leaf)
