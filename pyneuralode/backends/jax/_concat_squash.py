"""JAX compile of :class:`pyneuralode.ConcatSquash`: ``(y Wᵀ + b) * sigmoid(t W_gᵀ + b_g) + t W_hᵀ``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..._concat_squash import ConcatSquash
from ._field import register_layer


def _concat_squash(layer: ConcatSquash):
    def apply(tensors, t, y):
        weight, bias, gate_w, gate_b, hyper_w = tensors
        t = jnp.asarray(t, y.dtype)
        gate = jax.nn.sigmoid(t * gate_w[:, 0] + gate_b)
        return (y @ weight.T + bias) * gate + t * hyper_w[:, 0]
    return apply


register_layer(ConcatSquash, _concat_squash)
