"""The torch compiler of the neutral expression graph: a :class:`pyneuralode.Dynamics` as one more layer module.

:class:`DynamicsModule` is registered with the spec compiler (:mod:`._compile`), so a ``Dynamics`` field goes
through the same ``VectorField`` and ``TorchProgram`` as an MLP (torchdiffeq, NFE counting, every adjoint). Its
networks are built by that same compiler (children modules); its ops run through :data:`TORCH_OPS`, the graph's
NumPy semantics written with torch functions. The graph describes one sample: an unbatched state runs it
directly, a batch through ``torch.func.vmap``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._dynamics import Dynamics
from ..._graph import evaluate, index_of
from ._compile import register_layer


def _axes(node, x):
    axis = node.attr("axis")
    return tuple(range(x.dim())) if axis is None else axis


def _reduction(fn):
    def apply(node, x):
        axes = _axes(node, x)
        return fn(x, axes, node.attr("keepdims")) if axes else x  # NumPy: axis=() reduces nothing
    return apply


def _prod(x, axes, keepdims):
    for axis in sorted(axes, reverse=True):  # torch.prod takes one dim at a time
        x = torch.prod(x, dim=axis, keepdim=keepdims)
    return x


TORCH_OPS = {
    "negative": lambda n, x: torch.negative(x), "exp": lambda n, x: torch.exp(x), "log": lambda n, x: torch.log(x),
    "log1p": lambda n, x: torch.log1p(x), "expm1": lambda n, x: torch.expm1(x), "sin": lambda n, x: torch.sin(x),
    "cos": lambda n, x: torch.cos(x), "tan": lambda n, x: torch.tan(x), "arcsin": lambda n, x: torch.arcsin(x),
    "arccos": lambda n, x: torch.arccos(x), "arctan": lambda n, x: torch.arctan(x),
    "sinh": lambda n, x: torch.sinh(x), "cosh": lambda n, x: torch.cosh(x), "tanh": lambda n, x: torch.tanh(x),
    "sqrt": lambda n, x: torch.sqrt(x), "abs": lambda n, x: torch.abs(x), "sign": lambda n, x: torch.sign(x),
    "logical_not": lambda n, x: torch.logical_not(x),
    "add": lambda n, a, b: a + b, "subtract": lambda n, a, b: a - b, "multiply": lambda n, a, b: a * b,
    "divide": lambda n, a, b: a / b, "power": lambda n, a, b: torch.pow(a, b),
    "maximum": lambda n, a, b: torch.maximum(a, b), "minimum": lambda n, a, b: torch.minimum(a, b),
    "arctan2": lambda n, a, b: torch.atan2(a, b), "logaddexp": lambda n, a, b: torch.logaddexp(a, b),
    "less": lambda n, a, b: a < b, "less_equal": lambda n, a, b: a <= b, "greater": lambda n, a, b: a > b,
    "greater_equal": lambda n, a, b: a >= b, "equal": lambda n, a, b: a == b, "not_equal": lambda n, a, b: a != b,
    "logical_and": lambda n, a, b: torch.logical_and(a, b), "logical_or": lambda n, a, b: torch.logical_or(a, b),
    "sum": _reduction(lambda x, axes, keep: torch.sum(x, dim=axes, keepdim=keep)),
    "mean": _reduction(lambda x, axes, keep: torch.mean(x, dim=axes, keepdim=keep)),
    "prod": _reduction(_prod),
    "max": _reduction(lambda x, axes, keep: torch.amax(x, dim=axes, keepdim=keep)),
    "min": _reduction(lambda x, axes, keep: torch.amin(x, dim=axes, keepdim=keep)),
    "integer_power": lambda n, x: x ** n.attr("exponent"),
    "where": lambda n, c, a, b: torch.where(c, a, b),
    "matmul": lambda n, a, b: torch.matmul(a, b),
    "stack": lambda n, *xs: torch.stack(xs, dim=n.attr("axis")),
    "concatenate": lambda n, *xs: torch.cat(xs, dim=n.attr("axis")),
    "getitem": lambda n, x: x[index_of(n)],
    "reshape": lambda n, x: x.reshape(n.attr("shape")),
    "transpose": lambda n, x: x.permute(n.attr("axes")),
    "broadcast_to": lambda n, x: torch.broadcast_to(x, n.attr("shape")),
}
"""``op -> fn(node, *values)`` for every non-leaf graph op, with NumPy's semantics."""


class DynamicsModule(torch.nn.Module):
    """``forward(t, y)`` of a :class:`pyneuralode.Dynamics`: ``y`` one sample ``state`` or a batch
    ``(batch, *state)``. Declared parameters are its own (``slot_parameter(name)``); networks are children."""

    def __init__(self, layer: Dynamics, *, dtype, device, children=()):
        super().__init__()
        self.graph = layer.graph
        self.state_ndim = len(layer.state)
        self.declared = torch.nn.ParameterDict({
            name: torch.nn.Parameter(torch.zeros(value.array.shape, dtype=dtype, device=device))
            for name, value in layer.params})
        self.nets = torch.nn.ModuleDict(dict(zip((name for name, _ in layer.nets), children)))
        # literals and constants as tensors of the model's dtype, created once (bools stay bool)
        self._fixed = {}
        for k, node in enumerate(layer.graph.nodes):
            if node.op in ("literal", "constant"):
                array = (dict(layer.constants)[node.attr("name")] if node.op == "constant"
                         else node.attr("value")).array
                tensor = torch.as_tensor(np.array(array), dtype=dtype if array.dtype.kind == "f" else torch.bool,
                                         device=device)
                self.register_buffer(f"fixed_{k}", tensor, persistent=False)
                self._fixed[k] = f"fixed_{k}"
        self._dtype = dtype

    def slot_parameter(self, name: str) -> torch.nn.Parameter:
        """The declared parameter ``name`` (kept in a ``ParameterDict``, so any identifier is a valid name)."""
        return self.declared[name]

    def _one_sample(self, t, u):
        nodes = self.graph.nodes
        index_of_node = {id(node): k for k, node in enumerate(nodes)}

        def leaf(node, args):
            op = node.op
            if op == "time":
                return t
            if op == "state":
                return u
            if op == "param":
                return self.declared[node.attr("name")]
            if op == "call":
                return self.nets[node.attr("net")](t, args[0][None])[0]  # layer modules take a batch axis
            return getattr(self, self._fixed[index_of_node[id(node)]])

        return evaluate(self.graph, leaf, TORCH_OPS)

    def forward(self, t, y):
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        if y.dim() == self.state_ndim:
            return self._one_sample(t, y)
        return torch.func.vmap(self._one_sample, in_dims=(None, 0))(t, y)


register_layer(Dynamics, lambda layer, dtype, device, children=(): DynamicsModule(
    layer, dtype=dtype, device=device, children=children))
