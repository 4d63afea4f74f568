"""JAX compilers of the image layers (``Conv2d``, ``ConcatConv2d``, ``GroupNorm``, ``GlobalAvgPool2d``,
``Flatten``), registered with the field compiler on import. Inputs are batched NCHW (PyTorch's layout)."""

from __future__ import annotations

import jax.numpy as jnp

from ..._conv_layers import ConcatConv2d, Conv2d, Flatten, GlobalAvgPool2d, GroupNorm
from ._conv import conv2d
from ._field import register_layer


def _conv(layer: Conv2d):
    time_channel = layer.time_channel

    def apply(tensors, t, y):
        out = conv2d(y, tensors[0], stride=layer.stride, padding=layer.padding, time=t if time_channel else None)
        return out + tensors[1][:, None, None] if layer.bias else out
    return apply


def group_norm(y, weight, bias, *, groups: int, eps: float):
    """``torch.nn.functional.group_norm`` on batched ``(B, C, ...)``: biased variance, then affine."""
    b, c = y.shape[:2]
    g = y.reshape(b, groups, -1)
    mean = jnp.mean(g, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=-1, keepdims=True)
    normed = ((g - mean) * jnp.reciprocal(jnp.sqrt(var + eps))).reshape(y.shape)
    shape = (1, c) + (1,) * (y.ndim - 2)
    return normed * weight.reshape(shape) + bias.reshape(shape)


def _group_norm(layer: GroupNorm):
    return lambda tensors, t, y: group_norm(y, tensors[0], tensors[1], groups=layer.num_groups, eps=layer.eps)


register_layer(Conv2d, _conv)
register_layer(ConcatConv2d, _conv)
register_layer(GroupNorm, _group_norm)
register_layer(GlobalAvgPool2d, lambda layer: lambda tensors, t, y: jnp.mean(y, axis=(2, 3), keepdims=True))
register_layer(Flatten, lambda layer: lambda tensors, t, y: y.reshape(y.shape[0], -1))
