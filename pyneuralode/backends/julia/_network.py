"""A :class:`pyneuralode.Network` compiled for Julia: PyNeuralODEJL's ``JuliaNetwork`` (``julia/src/network.jl``).

The spec is written as a prefix description (:func:`describe_network`); Julia builds Lux layers from it
(``Conv(...; cross_correlation=true)``, ``Dense``, its own group norm) that read their slices of the canonical
flat parameter vector, so gradients come back in the canonical layout with no permutation. Samples cross as
``x.T``: numpy's C-ordered ``(B, C, H, W)`` batch is Julia's column-major ``(W, H, C, B)`` (WHCN) with no copy,
and Conv2d's canonical ``(out, in, kh, kw)`` weight, read column-major, is Lux's ``(kw, kh, in, out)`` kernel.
Each ``ODEBlock`` solves with its own solver, step control and adjoint, mapped as for an ODE model.

This file never imports juliacall: the Julia module arrives from :func:`._runtime.start`.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..._augment import Augment
from ..._blocks import ODEBlock, Residual
from ..._classify import CrossEntropy
from ..._conv_layers import Conv2d, Flatten, GlobalAvgPool2d, GroupNorm
from ..._errors import NotSupportedError, non_finite_error
from ..._layers import Activation, Linear, Sequential
from ..._params import num_params
from ..._solution import Stats
from ._program import _check_backward_warnings, _status_error, _to_numpy, julia_options

NETWORK_LAYERS: dict[type, str] = {
    Sequential: "seq", Residual: "res", ODEBlock: "ode", Conv2d: "conv", GroupNorm: "gn", Activation: "act",
    GlobalAvgPool2d: "pool", Flatten: "flatten", Linear: "linear", Augment: "augment",
}
"""Spec layer type -> the item kind PyNeuralODEJL's ``build_network`` parses (ConcatConv2d is a Conv2d)."""


def _items(layer, out: list[str]) -> None:
    kind = next((k for cls, k in NETWORK_LAYERS.items() if isinstance(layer, cls)), None)
    if kind is None:
        raise NotSupportedError(f"{type(layer).__name__} layers are not available in a pn.Network on backend "
                                f"'julia' yet: it compiles {', '.join(c.__name__ for c in NETWORK_LAYERS)} (and "
                                "ConcatConv2d). Use backend='jax' or 'torch' for this network.")
    if kind == "seq":
        out.append(f"seq,{len(layer.layers)}")
        for child in layer.layers:
            _items(child, out)
    elif kind == "res":
        out.append("res")
        _items(layer.layer, out)
    elif kind == "ode":
        out.append(f"ode,{layer.t1!r},{num_params(layer.field)}")
        _items(layer.field, out)
    elif kind == "conv":
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        out.append(f"conv,{layer.in_channels},{layer.out_channels},{kh},{kw},{sh},{sw},{ph},{pw},"
                   f"{int(layer.bias)},{int(layer.time_channel)}")
    elif kind == "gn":
        out.append(f"gn,{layer.num_groups},{layer.num_channels},{layer.eps!r}")
    elif kind == "act":
        out.append(f"act,{layer.name}")
    elif kind == "augment":
        out.append(f"augment,{layer.dims}")
    elif kind == "linear":
        out.append(f"linear,{layer.in_features},{layer.out_features},{int(layer.bias)},{int(layer.time_input)}")
    else:
        out.append(kind)


def describe_network(spec) -> str:
    """The prefix description PyNeuralODEJL.build_network reads (see julia/src/network.jl)."""
    out: list[str] = []
    _items(spec.expand(), out)
    return ";".join(out)


class JuliaNetworkProgram:
    """The Julia program of one :class:`pyneuralode.Network`; numpy in and out."""

    def __init__(self, network, module=None):
        from ._runtime import start

        if network.device == "cuda":
            raise NotSupportedError("pn.Network on backend 'julia' runs on the CPU only for now: use "
                                    "device=None/'cpu', or backend='jax'/'torch' for the GPU.")
        self.network = network
        self._dtype = network.dtype
        self._description = describe_network(network.spec)
        self._block_options = [julia_options(block.as_model(backend="julia", dtype=network.dtype))
                               for block in network.ode_blocks]
        self._reversediff = [o["sensealg"] == "reversediff" for o in self._block_options]
        self._module = start() if module is None else module
        self._net = self._call(self._module.build_network, self._description, dtype=self._dtype)
        for k, options in enumerate(self._block_options, start=1):
            opts = self._call(self._module.solve_options, **options)
            self._call(self._module.set_block_options_b, self._net, k, opts)

    @staticmethod
    def _call(fn, *args, **kwargs):
        from ._program import JuliaProgram

        return JuliaProgram._call(fn, *args, **kwargs)

    def _raise(self, status: str, block: int, text: str) -> None:
        if status == "Success":
            return
        blocks = self.network.ode_blocks
        spec = blocks[min(max(block, 1), len(blocks)) - 1]  # the block Julia names (1-based)
        error = _status_error(status, f"forward solve of ODE block {block}", spec, text)
        if error is not None:
            raise error

    def apply(self, params, x):
        (logits, nfe, accepted, rejected, status, block, text) = self._call(
            self._module.network_apply, self._net, np.asarray(params, dtype=self._dtype), x.T)
        self._raise(str(status), int(block), str(text))
        if text:
            warnings.warn(f"Julia (network forward): {text}", RuntimeWarning, stacklevel=3)
        logits = np.ascontiguousarray(_to_numpy(logits).T, dtype=self._dtype)
        if not np.all(np.isfinite(logits)):
            raise non_finite_error("network output")
        stats = [Stats(nfe_forward=int(n), steps_accepted=int(a), steps_rejected=int(r))
                 for n, a, r in zip(_to_numpy(nfe), _to_numpy(accepted), _to_numpy(rejected))]
        return logits, stats

    def value_and_grad(self, params, x, labels, loss):
        if type(loss) is not CrossEntropy:
            raise NotSupportedError(f"{type(loss).__name__} is not available for a pn.Network on backend 'julia': "
                                    "it differentiates pn.CrossEntropy().")
        (value, grad, logits, nfe_f, accepted, rejected, nfe_b, status, block, text, text_b) = self._call(
            self._module.network_value_and_grad, self._net, np.asarray(params, dtype=self._dtype), x.T,
            np.asarray(labels, dtype=np.int64))
        self._raise(str(status), int(block), str(text))
        if text:
            warnings.warn(f"Julia (network forward): {text}", RuntimeWarning, stacklevel=3)
        max_steps = max((b.control.max_steps for b in self.network.ode_blocks), default=0)
        _check_backward_warnings(str(text_b), max_steps)
        grad = np.asarray(_to_numpy(grad), dtype=self._dtype)
        value = float(value)
        if not (np.isfinite(value) and np.all(np.isfinite(grad))):
            raise non_finite_error("loss or its gradient")
        stats = []
        for k, (nf, a, r, nb) in enumerate(zip(_to_numpy(nfe_f), _to_numpy(accepted), _to_numpy(rejected),
                                               _to_numpy(nfe_b))):
            nb = int(nb)
            if self._reversediff[k] and nb == 0:
                nb = int(nf)  # ReverseDiffAdjoint replays its tape: one VJP per recorded field call
            stats.append(Stats(nfe_forward=int(nf), nfe_backward=nb, steps_accepted=int(a), steps_rejected=int(r)))
        return value, grad, np.ascontiguousarray(_to_numpy(logits).T, dtype=self._dtype), stats

    def parameters(self, params) -> list[np.ndarray]:
        """Every Conv/GroupNorm/Linear tensor as the Julia layer uses it (Conv weight ``(kw, kh, in, out)``),
        in canonical order: the layout map made visible (tests compare it with ``pn.unflatten``)."""
        arrays = self._call(self._module.network_parameters, self._net, np.asarray(params, dtype=self._dtype))
        return [np.asarray(_to_numpy(a), dtype=self._dtype) for a in arrays]

    def make_trainer(self, optimizer, loss, *, devices=None):
        raise NotSupportedError("Training a pn.Network natively is not wired on backend 'julia' yet: train with "
                                "backend='jax' or 'torch' (the canonical parameters carry over), or loop over "
                                "net.value_and_grad(...) with your own update.")

    def native(self, params):
        """The Julia ``PyNeuralODEJL.JuliaNetwork``: callable ``net(x, flat)`` with WHCN ``x`` (``x.T`` of a
        numpy NCHW batch) and canonical flat parameters, returning logits ``(classes, B)``. It takes the
        parameters per call, so ``params`` (what ``Network.native`` starts from) is passed there by the caller."""
        return self._net
