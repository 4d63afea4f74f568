"""torch compile of :class:`pyneuralode.ConcatSquash` (FFJORD's ``ConcatSquashLinear``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..._concat_squash import ConcatSquash
from ._compile import register_layer


class ConcatSquashModule(torch.nn.Module):
    """``(W x + b) * sigmoid(W_g t + b_g) + W_h t``; parameters named as ``ConcatSquash.param_specs()``."""

    def __init__(self, layer: ConcatSquash, *, dtype, device):
        super().__init__()
        n_in, n_out = layer.in_features, layer.out_features

        def zeros(*shape):
            return torch.nn.Parameter(torch.zeros(*shape, dtype=dtype, device=device))
        self.weight, self.bias = zeros(n_out, n_in), zeros(n_out)
        self.gate_weight, self.gate_bias, self.hyper_bias_weight = zeros(n_out, 1), zeros(n_out), zeros(n_out, 1)

    def forward(self, t, x):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        gate = torch.sigmoid(t * self.gate_weight[:, 0] + self.gate_bias)
        return F.linear(x, self.weight, self.bias) * gate + t * self.hyper_bias_weight[:, 0]


register_layer(ConcatSquash, lambda layer, dtype, device: ConcatSquashModule(layer, dtype=dtype, device=device))
