"""Image layers of the network spec: convolution, time-aware convolution, group norm, pooling, flatten.

Samples are ``(channels, height, width)`` (PyTorch's NCHW without the batch axis), and parameters keep
PyTorch's shapes: ``Conv2d`` weight ``(out, in, kh, kw)`` then bias ``(out,)``; ``GroupNorm`` weight then bias,
both ``(C,)``. Backends may compute in another layout internally (the JAX backend uses NHWC on CPU, see
``pyneuralode/backends/jax/_conv.py``) but take and return this one.

``ConcatConv2d`` is torchdiffeq's ``ConcatConv2d`` (``examples/odenet_mnist.py``): the time ``t`` enters as an
extra constant input channel placed **first** (``torch.cat([tt, x], 1)``), so its weight is
``(out, in + 1, kh, kw)`` with input channel 0 the time channel. (``Linear(time_input=True)`` puts ``t`` *last*,
as the paper's ``ConcatLinear`` does; the two peers differ and we follow each.)
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from ._errors import SpecError
from ._layers import AbstractLayer, Activation, ParamSpec, _check_positive_int


def _pair(value, what: str, *, allow_zero: bool = False) -> tuple[int, int]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise SpecError(f"{what} must be an integer or a pair of integers, got {value!r}.")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or item < (0 if allow_zero else 1):
            bound = ">= 0" if allow_zero else ">= 1"
            raise SpecError(f"{what} must be an integer {bound} (or a pair of them), got {value!r}.")
        out.append(int(item))
    return out[0], out[1]


def _check_image(shape, channels: int, what: str) -> tuple[int, int, int]:
    shape = tuple(shape)
    if len(shape) != 3 or shape[0] != channels:
        raise SpecError(f"{what} expects samples of shape ({channels}, height, width), got {shape}.")
    return shape  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Conv2d(AbstractLayer):
    """A 2-D cross-correlation, as ``torch.nn.Conv2d``: weight ``(out_channels, in_channels, kh, kw)``, bias.

    ``kernel_size``, ``stride`` and ``padding`` (zeros, both sides) are integers or ``(h, w)`` pairs.
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    bias: bool = True

    time_channel = False

    def __post_init__(self):
        _check_positive_int(self.in_channels, f"{type(self).__name__} in_channels")
        _check_positive_int(self.out_channels, f"{type(self).__name__} out_channels")
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _pair(self.padding, "padding", allow_zero=True))

    @property
    def weight_in_channels(self) -> int:
        """Input channels of the weight (one more than ``in_channels`` when time is a channel)."""
        return self.in_channels + int(self.time_channel)

    def param_specs(self):
        kh, kw = self.kernel_size
        fan_in = self.weight_in_channels * kh * kw
        specs = [ParamSpec("weight", (self.out_channels, self.weight_in_channels, kh, kw), fan_in=fan_in)]
        if self.bias:
            specs.append(ParamSpec("bias", (self.out_channels,), fan_in=fan_in))
        return tuple(specs)

    def out_shape(self, in_shape):
        _, h, w = _check_image(in_shape, self.in_channels, type(self).__name__)
        sizes = []
        for size, k, s, p in zip((h, w), self.kernel_size, self.stride, self.padding):
            out = (size + 2 * p - k) // s + 1
            if out < 1:
                raise SpecError(f"{type(self).__name__} with kernel {self.kernel_size} and padding {self.padding} "
                                f"does not fit an input of spatial size {(h, w)}: use a smaller kernel or pad more.")
            sizes.append(out)
        return (self.out_channels, *sizes)


@dataclasses.dataclass(frozen=True)
class ConcatConv2d(Conv2d):
    """``Conv2d`` over ``[t, x]``: the time is a constant extra input channel placed first (torchdiffeq's
    ``ConcatConv2d``), so the weight is ``(out_channels, in_channels + 1, kh, kw)``."""

    time_channel = True
    uses_time = True


@dataclasses.dataclass(frozen=True)
class GroupNorm(AbstractLayer):
    """Group normalisation as ``torch.nn.GroupNorm``: per sample, the channels are split into ``num_groups``
    groups, each normalised by its mean and (biased) variance, then scaled by ``weight`` (ones) and shifted by
    ``bias`` (zeros), both ``(num_channels,)``. Works on ``(C,)`` and ``(C, H, W)`` samples."""

    num_groups: int
    num_channels: int
    eps: float = 1e-5

    def __post_init__(self):
        _check_positive_int(self.num_groups, "GroupNorm num_groups")
        _check_positive_int(self.num_channels, "GroupNorm num_channels")
        if self.num_channels % self.num_groups:
            raise SpecError(f"GroupNorm num_channels={self.num_channels} is not divisible by "
                            f"num_groups={self.num_groups}: pick a divisor such as min(32, channels).")
        if isinstance(self.eps, bool) or not isinstance(self.eps, numbers.Real) or not self.eps > 0:
            raise SpecError(f"GroupNorm eps must be a number > 0, got {self.eps!r}.")
        object.__setattr__(self, "eps", float(self.eps))

    def param_specs(self):
        c = (self.num_channels,)
        return (ParamSpec("weight", c, init="ones"), ParamSpec("bias", c, init="zeros"))

    def out_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) < 1 or in_shape[0] != self.num_channels:
            raise SpecError(f"GroupNorm expects {self.num_channels} channels first, got sample shape {in_shape}.")
        return in_shape


@dataclasses.dataclass(frozen=True)
class GlobalAvgPool2d(AbstractLayer):
    """The mean over height and width, keeping them as size 1: ``(C, H, W) -> (C, 1, 1)``, as
    ``torch.nn.AdaptiveAvgPool2d((1, 1))``."""

    def param_specs(self):
        return ()

    def out_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise SpecError(f"GlobalAvgPool2d expects (C, H, W) samples, got {in_shape}.")
        return (in_shape[0], 1, 1)


@dataclasses.dataclass(frozen=True)
class Flatten(AbstractLayer):
    """Each sample flattened row-major (PyTorch's ``Flatten``, C-order over ``(C, H, W)``)."""

    def param_specs(self):
        return ()

    def out_shape(self, in_shape):
        return (int(np.prod(tuple(in_shape), dtype=np.int64)),)


def ReLU() -> Activation:  # noqa: N802  (reads like the layer it builds)
    """``Activation("relu")``: a convenience matching ``torch.nn.ReLU``."""
    return Activation("relu")


def norm(channels: int, groups: int | None = None) -> GroupNorm:
    """torchdiffeq's ``norm(dim)``: ``GroupNorm(min(32, dim), dim)``; ``groups`` overrides the group count."""
    return GroupNorm(groups or min(32, channels), channels)
