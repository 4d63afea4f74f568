"""Compile a pyneuralode spec to a ``torch.nn.Module`` whose ``forward(t, y)`` is the vector field.

Every spec (an MLP, a conv net, a ``pn.dynamics`` field, an event condition) runs as its graph
(:func:`pyneuralode._numpy_layers.layer_graph`, one sample) through :data:`._graph.TORCH_OPS`. The parameters are
one ``torch.nn.Parameter`` per canonical slot (:func:`pyneuralode.param_layout`), registered in that order, so
loading the flat vector and reading the flat gradient are one loop over the layout. Tensors keep PyTorch's shapes,
which are the canonical ones.

The batch runs batch-aware rather than through ``torch.func.vmap`` (vmap's per-op dispatch made a batch-64 UDE
field ~4x slower than the same field written by hand): each value carries its leading batch axis only when it
depends on ``y`` (see :mod:`._graph`). A plan — the graph's ops as a list of closures — is built once per sample
shape, batching, device and dtype, so a call does no graph interpretation.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._layers import AbstractLayer
from ..._numpy_layers import layer_graph, numpy_layer, sample_rank
from ..._params import param_layout
from ._graph import TORCH_OPS


class VectorField(torch.nn.Module):
    """The compiled spec as a torch module: ``forward(t, y)`` with ``y`` one sample or a batch ``(B, *sample)``
    (any leading axes where the spec fixes its sample shape, as an MLP's ``(D,)``).

    ``flat_parameters()`` lists the parameters in canonical order; :func:`load_flat` and :func:`flat_grad`
    move between them and the canonical flat vector. ``model.native()`` returns one inside a
    :class:`NativeODE` (its ``vector_field``).
    """

    def __init__(self, spec: AbstractLayer, *, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.spec = spec.expand()
        numpy_layer(self.spec)  # a layer with no lowering is refused here, not at the first call
        self._slots = param_layout(self.spec)
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(slot.shape, dtype=dtype, device=device)) for slot in self._slots])
        self._slot_params = list(self.weights)
        self._by_name = {slot.name: p for slot, p in zip(self._slots, self._slot_params)}
        self.num_params = self._slots[-1].stop if self._slots else 0
        self._sample_rank = sample_rank(self.spec)
        self._plans: dict = {}

    def forward(self, t, y):
        if not (isinstance(t, torch.Tensor) and t.dtype == y.dtype):
            t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        rank = y.dim() - 1 if self._sample_rank is None else self._sample_rank
        lead = y.shape[:y.dim() - rank]
        key = (y.shape[len(lead):], len(lead) > 0, y.device, y.dtype)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(*key)
        leaves, steps, output, out_batched = plan
        if len(lead) > 1:
            y = y.reshape(-1, *key[0])
        values = [t, y, *leaves]
        append = values.append
        for fn, inputs in steps:
            append(fn(*[values[i] for i in inputs]))
        out = values[output]
        if lead and not out_batched:  # a value that does not depend on y
            out = out.expand(y.shape[0], *out.shape)
        return out.reshape(*lead, *out.shape[1:]) if len(lead) > 1 else out

    def _plan(self, sample, batched_state: bool, device, dtype):
        """``(leaves, steps, output, out_batched)`` for the spec's graph on samples of shape ``sample``: the values
        are numbered ``t``, ``y``, then ``leaves`` (the parameters themselves, which load_flat and ``.to()`` update
        in place, and the literals as tensors), then one per step ``(fn, inputs)``."""
        graph = layer_graph(self.spec, tuple(sample))
        nodes = graph.nodes
        is_leaf = [node.op in ("param", "literal") for node in nodes]
        order = [0, 1, *(k for k in range(2, len(nodes)) if is_leaf[k]),
                 *(k for k in range(2, len(nodes)) if not is_leaf[k])]
        position = {k: i for i, k in enumerate(order)}  # a node's value's place in the list forward() fills
        batched = {0: False, 1: batched_state}
        leaves, steps = [], []
        for k in order[2:]:
            node = nodes[k]
            flags = [batched[i] for i in node.inputs]
            batched[k] = any(flags)
            if node.op == "param":
                leaves.append(self._by_name[node.attr("name")])
            elif node.op == "literal":
                array = node.attr("value").array
                leaves.append(torch.as_tensor(np.array(array), device=device,
                                              dtype=dtype if array.dtype.kind == "f" else torch.bool))
            else:
                fn = TORCH_OPS[node.op](node, flags, [len(nodes[i].shape) for i in node.inputs])
                steps.append((fn, tuple(position[i] for i in node.inputs)))
        return leaves, steps, position[graph.output], batched[graph.output]

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
