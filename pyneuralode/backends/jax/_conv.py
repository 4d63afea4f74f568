"""2-D convolution for the JAX backend, written so XLA:CPU keeps it fast inside solver loops.

Why (jax-ml/jax#12868): XLA:CPU runs a convolution on its fast Eigen kernel
only in canonical form (input NHWC, kernel HWIO, output NHWC), and the pass that rewrites other convolutions into
that form visits only the entry computation — never a while-loop body, and every diffrax solve is a while loop.
So inside an ODE block an NCHW convolution, and *both* gradient convolutions autodiff derives from an NHWC one,
take a slow generic path (a 64-channel MNIST ODE-Net training step: ~20-25 s instead of ~1-3 s).

The fix used here is the note's pattern (A), "canon": stride-1 convolutions are a ``custom_vjp`` whose forward,
input gradient and weight gradient are each written as a canonical NHWC/HWIO convolution by hand:

- input gradient: the output cotangent convolved with the spatially flipped kernel, in/out swapped, padding
  ``k - 1 - p``;
- weight gradient: a convolution in which the input's channels play the batch and the batch plays the channels
  (``z`` as ``(C, H, W, B)``, the cotangent as the kernel ``(Ho, Wo, B, O)``).

Pattern (B), "shift" (im2col from ``kh*kw`` static slices plus one matmul), is kept as an alternative; select
with ``PYNEURALODE_JAX_CONV=canon|shift|xla|nchw`` for measurements (``xla`` = plain
``lax.conv_general_dilated`` in NHWC with autodiff; ``nchw`` = the same in NCHW/OIHW, the slow pre-fix baseline). Strided convolutions (downsampling, outside the ODE
loop in the paper's networks) are rewritten as stride-1 canonical ones by space-to-depth (:func:`_space_to_depth`):
autodiff of a strided ``lax`` convolution gives an ``lhs_dilation`` input gradient that is slow even at the top
level.

The spec's layout stays NCHW/OIHW (PyTorch's); :func:`conv2d` converts at its edges, and XLA fuses those
transposes with the neighbouring elementwise work.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
IMPLEMENTATIONS = ("canon", "shift", "xla", "nchw")


def implementation() -> str:
    """The stride-1 convolution in use (``PYNEURALODE_JAX_CONV``, default ``canon``)."""
    impl = os.environ.get("PYNEURALODE_JAX_CONV", "canon")
    if impl not in IMPLEMENTATIONS:
        from ..._errors import SpecError
        raise SpecError(f"PYNEURALODE_JAX_CONV={impl!r} is not one of {', '.join(IMPLEMENTATIONS)}.")
    return impl


def _xla(z, w, stride, padding):
    return lax.conv_general_dilated(z, w, stride, [(p, p) for p in padding], dimension_numbers=_DN)


def _canon(padding):
    """A stride-1 NHWC/HWIO convolution whose VJP is two canonical convolutions (see the module docstring)."""
    ph, pw = padding

    @jax.custom_vjp
    def conv(z, w):
        return _xla(z, w, (1, 1), padding)

    def fwd(z, w):
        return conv(z, w), (z, w)

    def bwd(res, g):
        z, w = res
        kh, kw = w.shape[0], w.shape[1]
        w_t = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
        dz = lax.conv_general_dilated(g, w_t, (1, 1), [(kh - 1 - ph,) * 2, (kw - 1 - pw,) * 2],
                                      dimension_numbers=_DN)
        dw = lax.conv_general_dilated(z.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1),
                                      [(ph, ph), (pw, pw)], dimension_numbers=_DN)
        return dz, dw.transpose(1, 2, 0, 3)

    conv.defvjp(fwd, bwd)
    return conv


def _shift(z, w, padding):
    """im2col from ``kh*kw`` static slices of the padded input and one matmul (pattern B)."""
    kh, kw, cin, cout = w.shape
    ph, pw = padding
    b, h, wd, _ = z.shape
    ho, wo = h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1
    zp = jnp.pad(z, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    cols = jnp.concatenate([zp[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)
    return (cols.reshape(b * ho * wo, kh * kw * cin) @ w.reshape(kh * kw * cin, cout)).reshape(b, ho, wo, cout)


def _space_to_depth(z, w, stride, padding):
    """A strided convolution as a stride-1 one: ``s x s`` blocks of the padded input become channels.

    With the kernel zero-padded to a multiple of the stride and cut the same way, output ``(i, j)`` sums
    ``zp[s i + a, s j + c] w[a, c]`` over the same taps, so the result is exact. Its VJP is then that of a stride-1
    canonical convolution plus reshapes. Autodiff of a strided ``lax`` convolution instead gives an input gradient
    with ``lhs_dilation``, which XLA:CPU runs on a slow generic path even at the top level of a program
    (0.16 s of a ~2.5 s one-core MNIST ODE-Net step for the 26x26 downsampling layer, now ~0.03 s).
    """
    (sh, sw), (ph, pw) = stride, padding
    kh, kw, cin, cout = w.shape
    b, h, wd, _ = z.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    kh2, kw2 = -(-kh // sh) * sh, -(-kw // sw) * sw
    need_h, need_w = sh * (ho - 1) + kh2, sw * (wo - 1) + kw2  # multiples of the stride
    zero = jnp.zeros((), z.dtype)
    zp = lax.pad(z, zero, [(0, 0, 0), (ph, need_h - h - ph, 0), (pw, need_w - wd - pw, 0), (0, 0, 0)])
    zs = (zp.reshape(b, need_h // sh, sh, need_w // sw, sw, cin).transpose(0, 1, 3, 2, 4, 5)
          .reshape(b, need_h // sh, need_w // sw, sh * sw * cin))
    w2 = jnp.pad(w, ((0, kh2 - kh), (0, kw2 - kw), (0, 0), (0, 0)))
    ws = (w2.reshape(kh2 // sh, sh, kw2 // sw, sw, cin, cout).transpose(0, 2, 1, 3, 4, 5)
          .reshape(kh2 // sh, kw2 // sw, sh * sw * cin, cout))
    return _canon((0, 0))(zs, ws)


def conv2d_nhwc(z, w_hwio, *, stride, padding):
    """Convolution of NHWC ``z`` with an HWIO kernel, fast inside loops (and its VJP fast everywhere)."""
    kh, kw = w_hwio.shape[:2]
    impl = implementation()
    if impl == "xla" or padding[0] > kh - 1 or padding[1] > kw - 1:
        return _xla(z, w_hwio, tuple(stride), tuple(padding))
    if tuple(stride) != (1, 1):
        return _space_to_depth(z, w_hwio, tuple(stride), tuple(padding))
    if impl == "shift":
        return _shift(z, w_hwio, tuple(padding))
    return _canon(tuple(padding))(z, w_hwio)


def conv2d(x, weight, *, stride, padding, time=None):
    """PyTorch-convention convolution: ``x`` NCHW, ``weight`` OIHW; with ``time`` a constant channel holding
    ``time`` is put first (torchdiffeq's ``ConcatConv2d``). Returns NCHW."""
    if implementation() == "nchw":  # the unfixed baseline, kept for benchmarks/mnist_step.py
        if time is not None:
            x = jnp.concatenate([jnp.broadcast_to(jnp.asarray(time, x.dtype), (x.shape[0], 1, *x.shape[2:])), x], 1)
        return lax.conv_general_dilated(x, weight, tuple(stride), [(p, p) for p in padding],
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))
    z = x.transpose(0, 2, 3, 1)
    if time is not None:
        tt = jnp.broadcast_to(jnp.asarray(time, z.dtype), (*z.shape[:-1], 1))
        z = jnp.concatenate([tt, z], axis=-1)
    y = conv2d_nhwc(z, weight.transpose(2, 3, 1, 0), stride=stride, padding=padding)
    return y.transpose(0, 3, 1, 2)
