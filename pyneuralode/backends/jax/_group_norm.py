"""The JAX kernel of the graph's ``group_norm`` op on batched ``(B, C, ...)`` input (PyTorch's layout): one
multiply-add forward and a hand-written VJP, fast inside solver loops."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _gn_stats(y, groups: int, eps: float):
    """Per-(sample, group) mean and 1/sqrt(biased variance + eps), each ``(B, groups)``."""
    g = y.reshape(y.shape[0], groups, -1)
    mean = jnp.mean(g, axis=-1)
    centred = g - mean[..., None]
    return mean, lax.rsqrt(jnp.mean(centred * centred, axis=-1) + eps)


def _gn_apply(y, weight, bias, mean, inv, groups: int):
    """``(y - mean) * inv * weight + bias`` as one multiply-add with per-(sample, channel) scale and shift."""
    b, c = y.shape[:2]
    w = weight.reshape(groups, c // groups)
    scale = inv[:, :, None] * w
    shift = bias.reshape(groups, c // groups) - mean[:, :, None] * scale
    shape = (b, c) + (1,) * (y.ndim - 2)
    return y * scale.reshape(shape) + shift.reshape(shape)


@functools.cache
def _group_norm_fn(groups: int, eps: float):
    """GroupNorm with a hand-written VJP (see :func:`group_norm`)."""

    @jax.custom_vjp
    def gn(y, weight, bias):
        mean, inv = _gn_stats(y, groups, eps)
        return _gn_apply(y, weight, bias, mean, inv, groups)

    def fwd(y, weight, bias):
        mean, inv = _gn_stats(y, groups, eps)
        return _gn_apply(y, weight, bias, mean, inv, groups), (y, weight, mean, inv)

    def bwd(res, dy):
        # With xhat = (y - mean) * inv and n elements per group:
        #   dy/dbias = sum dy,  dy/dweight = sum dy * xhat  (per channel),
        #   dx = inv * (w dy - mean_g(w dy) - xhat * mean_g(w dy xhat)).
        # Everything follows from two per-(sample, channel) sums over the spatial axes, sum(dy) and sum(dy * y),
        # so the backward reads dy and y once and writes dx once (dx = dy * a + y * c2 + c1).
        y, weight, mean, inv = res
        b, c = y.shape[:2]
        k = c // groups
        n = y[0].size // groups
        axes = tuple(range(2, y.ndim))
        s_dy = jnp.sum(dy, axes).reshape(b, groups, k)
        s_dyy = jnp.sum(dy * y, axes).reshape(b, groups, k)
        w = weight.reshape(groups, k)
        d_bias = jnp.sum(s_dy, 0).reshape(c)
        d_weight = jnp.sum(inv[:, :, None] * (s_dyy - mean[:, :, None] * s_dy), 0).reshape(c)
        m1 = jnp.sum(w * s_dy, -1) / n                       # mean_g(w dy)
        m2 = inv * (jnp.sum(w * s_dyy, -1) / n - mean * m1)  # mean_g(w dy xhat)
        shape = (b, c) + (1,) * (y.ndim - 2)
        a = (inv[:, :, None] * w).reshape(shape)
        c2 = jnp.broadcast_to((-inv * inv * m2)[:, :, None], (b, groups, k)).reshape(shape)
        c1 = jnp.broadcast_to((inv * (inv * m2 * mean - m1))[:, :, None], (b, groups, k)).reshape(shape)
        return (dy * a + y * c2 + c1).astype(y.dtype), d_weight.astype(weight.dtype), d_bias.astype(weight.dtype)

    gn.defvjp(fwd, bwd)
    return gn


def group_norm(y, weight, bias, *, groups: int, eps: float):
    """``torch.nn.functional.group_norm`` on batched ``(B, C, ...)``: biased variance, then affine.

    Written for speed inside solver loops (where it runs three times per MNIST ODE-Net evaluation): the forward
    is one multiply-add with per-(sample, channel) scale and shift (as torch's CPU kernel computes it), 4x faster
    than normalise-then-affine under XLA:CPU, and the VJP is hand-written (two spatial sums and one
    multiply-add, 2x faster than autodiff's). Like the convolutions' ``custom_vjp`` it supports reverse mode only.
    """
    return _group_norm_fn(int(groups), float(eps))(y, weight, bias)
