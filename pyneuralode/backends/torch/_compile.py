"""Compile a pyneuralode spec to a ``torch.nn.Module`` whose ``forward(t, y)`` is the vector field.

The module tree mirrors the expanded spec (``layer.expand()``, then ``sublayers()``), and its parameters are
registered in canonical order (:func:`pyneuralode.param_layout`), so loading the flat vector and reading the
flat gradient are one loop over the layout. Tensors keep PyTorch's shapes, which are the canonical ones.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..._augment import Augment
from ..._blocks import Residual
from ..._layers import AbstractLayer, Activation, Linear, Sequential, field_layer_not_supported
from ..._params import param_layout


def _softplus(x):
    # jax.nn.softplus is logaddexp(x, 0); torch's F.softplus switches to x above threshold=20, which differs in
    # the 9th digit. Use the exact form so float64 backends agree.
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


_ACTIVATION_FNS = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softplus": _softplus,
    "sigmoid": torch.sigmoid,
    "elu": F.elu,
    "silu": F.silu,
    "cube": lambda x: x * x * x,
    "rbf": lambda x: torch.exp(-(x * x)),
    "identity": lambda x: x,
}


class ActivationModule(torch.nn.Module):
    """A pointwise function from :data:`pyneuralode.ACTIVATIONS`; ``forward(t, x)`` ignores ``t``."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self._fn = _ACTIVATION_FNS[name]

    def forward(self, t, x):
        return self._fn(x)

    def extra_repr(self) -> str:
        return self.name


class LinearModule(torch.nn.Module):
    """``W [x, t] + b`` with PyTorch-convention ``W`` of shape ``(out, in [+1])``; ``t`` is the LAST input."""

    def __init__(self, layer: Linear, *, dtype, device):
        super().__init__()
        self.time_input = layer.time_input
        fan_in = layer.in_features + int(layer.time_input)
        self.weight = torch.nn.Parameter(torch.zeros(layer.out_features, fan_in, dtype=dtype, device=device))
        self.bias = (torch.nn.Parameter(torch.zeros(layer.out_features, dtype=dtype, device=device))
                     if layer.bias else None)

    def forward(self, t, x):
        if self.time_input:
            tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape((1,) * x.dim()).expand(
                *x.shape[:-1], 1)
            x = torch.cat([x, tt], dim=-1)
        return F.linear(x, self.weight, self.bias)


class SequentialModule(torch.nn.Module):
    """Children applied in order, each called as ``child(t, x)``."""

    def __init__(self, children):
        super().__init__()
        self.layers = torch.nn.ModuleList(children)

    def forward(self, t, x):
        for layer in self.layers:
            x = layer(t, x)
        return x


class AugmentModule(torch.nn.Module):
    """``dims`` zeros appended on the first sample axis (features, or channels of NCHW); ``t`` ignored."""

    def __init__(self, dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, t, x):
        return torch.cat([x, x.new_zeros((x.shape[0], self.dims, *x.shape[2:]))], dim=1)


class ResidualModule(torch.nn.Module):
    """``x + inner(t, x)``: a skip connection inside a vector field."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, t, x):
        return x + self.inner(t, x)


_MODULE_BUILDERS: dict[type, object] = {
    Augment: lambda layer, dtype, device: AugmentModule(layer.dims),
    Residual: lambda layer, dtype, device, children: ResidualModule(children[0]),
    Linear: lambda layer, dtype, device: LinearModule(layer, dtype=dtype, device=device),
    Activation: lambda layer, dtype, device: ActivationModule(layer.name),
}


def register_layer(layer_type: type, builder) -> None:
    """Teach the torch backend a new primitive layer: ``builder(layer, dtype, device) -> nn.Module`` whose
    ``forward(t, x)`` computes the layer and whose parameters carry the names of ``layer.param_specs()``.

    A layer with sublayers of its own (:class:`pyneuralode.Dynamics`) gets their built modules too:
    ``builder(layer, dtype, device, children)``; its module may name its own parameters through a
    ``slot_parameter(name)`` method (for names that are also ``nn.Module`` attributes)."""
    _MODULE_BUILDERS[layer_type] = builder


def _build(layer: AbstractLayer, *, dtype, device, built: list) -> torch.nn.Module:
    """One module per spec node, appended to ``built`` in :func:`pyneuralode._layers.walk` order."""
    layer = layer.expand()
    if not isinstance(layer, Sequential) and type(layer) not in _MODULE_BUILDERS:
        raise field_layer_not_supported(layer, "torch", _MODULE_BUILDERS)
    placeholder_index = len(built)
    built.append(None)
    children = [_build(child, dtype=dtype, device=device, built=built) for child in layer.sublayers()]
    if isinstance(layer, Sequential):
        module = SequentialModule(children)
    elif children:
        module = _MODULE_BUILDERS[type(layer)](layer, dtype, device, children)
    else:
        module = _MODULE_BUILDERS[type(layer)](layer, dtype, device)
    built[placeholder_index] = module
    return module


def _slot_parameter(module: torch.nn.Module, name: str) -> torch.nn.Parameter:
    lookup = getattr(module, "slot_parameter", None)
    return lookup(name) if lookup is not None else getattr(module, name)


class VectorField(torch.nn.Module):
    """The compiled spec as a torch module: ``forward(t, y)`` with ``y`` of shape ``(D,)`` or ``(B, D)``.

    ``flat_parameters()`` lists the parameters in canonical order; :func:`load_flat` and :func:`flat_grad`
    move between them and the canonical flat vector. ``model.native()`` returns one inside a
    :class:`NativeODE` (its ``vector_field``).
    """

    def __init__(self, spec: AbstractLayer, *, dtype: torch.dtype, device: torch.device):
        super().__init__()
        built: list = []
        self.net = _build(spec, dtype=dtype, device=device, built=built)
        self._slots = param_layout(spec)
        self._slot_params = [_slot_parameter(built[slot.layer_index], slot.spec.name) for slot in self._slots]
        self.num_params = self._slots[-1].stop if self._slots else 0

    def forward(self, t, y):
        return self.net(t, y)

    def flat_parameters(self) -> list[torch.nn.Parameter]:
        """The parameter tensors in canonical flat-vector order."""
        return list(self._slot_params)


def to_tensor(array, *, dtype=None, device=None) -> torch.Tensor:
    """``array`` as a tensor, sharing memory where torch can. A read-only numpy array (``spiral_data()`` returns
    them) is copied first: torch cannot share it and would warn that it is not writable."""
    array = np.asarray(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def load_flat(field: VectorField, flat) -> None:
    """Copy the canonical flat vector (numpy or tensor) into ``field``'s parameters, in place."""
    flat_t = flat if torch.is_tensor(flat) else to_tensor(flat)
    with torch.no_grad():
        for slot, param in zip(field._slots, field._slot_params):
            param.copy_(flat_t[slot.offset:slot.stop].reshape(slot.shape))


def flat_grad(field: VectorField, grads) -> np.ndarray:
    """Concatenate per-parameter gradients (canonical order; ``None`` means zero) into the flat vector."""
    parts = [np.zeros(p.numel(), dtype=_np_dtype(p)) if g is None else g.detach().cpu().numpy().reshape(-1)
             for p, g in zip(field._slot_params, grads)]
    return np.concatenate(parts) if parts else np.zeros(0)


def flat_values(field: VectorField) -> np.ndarray:
    """The field's current parameters as the canonical flat vector (numpy)."""
    return flat_grad(field, [p.detach() for p in field._slot_params])


def _np_dtype(tensor: torch.Tensor):
    return np.float32 if tensor.dtype == torch.float32 else np.float64
