"""FFJORD's ``ConcatSquashLinear`` as a spec layer, and an MLP built from it (the fields of continuous flows).

``ConcatSquash(in, out)`` computes ``(W y + b) * sigmoid(W_g t + b_g) + W_h t`` — FFJORD's
``lib/layers/diffeq_layers/basic.py`` ``ConcatSquashLinear`` and the diffrax CNF example's ``ConcatSquash``
(``lin1(y) * sigmoid(lin2(t)) + lin3(t)``, ``lin3`` without bias).

Canonical layout (PyTorch shapes, in this order): ``weight (out, in)``, ``bias (out,)``, ``gate_weight (out, 1)``,
``gate_bias (out,)``, ``hyper_bias_weight (out, 1)``. Each is drawn with PyTorch's ``nn.Linear`` rule for its own
sub-layer: fan-in ``in`` for the first two and fan-in 1 (U(-1, 1)) for the three time tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence as _SequenceABC

import numpy as np

from ._errors import SpecError
from ._layers import (AbstractCompositeLayer, AbstractFeatureLayer, ParamSpec, Sequential, _check_activation,
                      _check_positive_int, with_activations)


@dataclasses.dataclass(frozen=True)
class ConcatSquash(AbstractFeatureLayer):
    """``(W y + b) * sigmoid(W_g t + b_g) + W_h t``: a linear map of the state gated and shifted by time.

    **Arguments:** ``in_features``, ``out_features`` (positive integers).
    """

    in_features: int
    out_features: int

    uses_time = True  # type: ignore[assignment]

    def __post_init__(self):
        _check_positive_int(self.in_features, "ConcatSquash in_features")
        _check_positive_int(self.out_features, "ConcatSquash out_features")

    def param_specs(self):
        n_in, n_out = self.in_features, self.out_features
        return (ParamSpec("weight", (n_out, n_in), fan_in=n_in),
                ParamSpec("bias", (n_out,), fan_in=n_in),
                ParamSpec("gate_weight", (n_out, 1), fan_in=1),
                ParamSpec("gate_bias", (n_out,), fan_in=1),
                ParamSpec("hyper_bias_weight", (n_out, 1), fan_in=1))



@dataclasses.dataclass(frozen=True)
class ConcatSquashMLP(AbstractCompositeLayer):
    """An MLP of :class:`ConcatSquash` layers ``sizes[0] -> ... -> sizes[-1]``, activation between them.

    The diffrax CNF example's ``Func`` (width 64, depth 3, tanh) is ``ConcatSquashMLP([2, 64, 64, 64, 2])``.
    """

    sizes: tuple[int, ...]
    activation: str | None = "tanh"

    uses_time = True  # type: ignore[assignment]

    def __post_init__(self):
        if isinstance(self.sizes, (str, bytes)) or not isinstance(self.sizes, (_SequenceABC, np.ndarray)):
            raise SpecError(f"ConcatSquashMLP sizes must be a sequence of widths such as [2, 64, 2], "
                            f"got {self.sizes!r}.")
        sizes = tuple(_check_positive_int(s, "ConcatSquashMLP layer width") for s in self.sizes)
        if len(sizes) < 2:
            raise SpecError(f"ConcatSquashMLP needs at least an input and an output size, got {list(sizes)}.")
        object.__setattr__(self, "sizes", sizes)
        _check_activation(self.activation)

    def expand(self) -> Sequential:
        return Sequential(*with_activations([ConcatSquash(n_in, n_out) for n_in, n_out in zip(self.sizes,
                                                                                           self.sizes[1:])],
                                            self.activation))

    @property
    def in_shape(self):
        return (self.sizes[0],)
