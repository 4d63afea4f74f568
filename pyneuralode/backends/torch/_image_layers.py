"""torch builders of the image layers (``Conv2d``, ``ConcatConv2d``, ``GroupNorm``, ``GlobalAvgPool2d``,
``Flatten``), registered with the spec compiler on import. Each module's ``forward(t, x)`` takes batched NCHW."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._conv_layers import ConcatConv2d, Conv2d, Flatten, GlobalAvgPool2d, GroupNorm
from ._compile import register_layer


class Conv2dModule(torch.nn.Module):
    """``F.conv2d`` with PyTorch-convention weight; for ``ConcatConv2d`` the time channel is concatenated
    first, exactly as torchdiffeq's ``ConcatConv2d`` (``torch.cat([ones_like(x[:, :1]) * t, x], 1)``)."""

    def __init__(self, layer: Conv2d, *, dtype, device):
        super().__init__()
        self.time_channel, self.stride, self.padding = layer.time_channel, layer.stride, layer.padding
        shape = layer.param_specs()[0].shape
        self.weight = torch.nn.Parameter(torch.zeros(shape, dtype=dtype, device=device))
        self.bias = (torch.nn.Parameter(torch.zeros(layer.out_channels, dtype=dtype, device=device))
                     if layer.bias else None)

    def forward(self, t, x):
        if self.time_channel:
            x = torch.cat([torch.ones_like(x[:, :1]) * t, x], 1)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class GroupNormModule(torch.nn.Module):
    """``F.group_norm`` with weight (ones) and bias (zeros) of shape ``(C,)``."""

    def __init__(self, layer: GroupNorm, *, dtype, device):
        super().__init__()
        self.groups, self.eps = layer.num_groups, layer.eps
        self.weight = torch.nn.Parameter(torch.ones(layer.num_channels, dtype=dtype, device=device))
        self.bias = torch.nn.Parameter(torch.zeros(layer.num_channels, dtype=dtype, device=device))

    def forward(self, t, x):
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


class _Pointwise(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def forward(self, t, x):
        return self._fn(x)


register_layer(Conv2d, lambda layer, dtype, device: Conv2dModule(layer, dtype=dtype, device=device))
register_layer(ConcatConv2d, lambda layer, dtype, device: Conv2dModule(layer, dtype=dtype, device=device))
register_layer(GroupNorm, lambda layer, dtype, device: GroupNormModule(layer, dtype=dtype, device=device))
register_layer(GlobalAvgPool2d, lambda layer, dtype, device: _Pointwise(lambda x: x.mean((2, 3), keepdim=True)))
register_layer(Flatten, lambda layer, dtype, device: _Pointwise(lambda x: x.reshape(x.shape[0], -1)))
