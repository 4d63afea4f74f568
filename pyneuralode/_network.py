"""``Network``: a feed-forward network spec that may contain ODE blocks, run as a classifier on one backend.

Where :class:`pyneuralode.ODEModel` is one ODE solve with save times, a ``Network`` is a whole model such as
the paper's MNIST ODE-Net: layers before and after one or more :class:`pyneuralode.ODEBlock` layers, each block
carrying its own solver, tolerances and gradient method. The contracts are the same: one canonical flat
parameter vector (blocks' fields in place, depth-first), identical initial weights on every backend, and exact
NFE: ``stats.nfe_forward`` / ``stats.nfe_backward`` mean exactly what they mean for an ODEModel (see
:class:`pyneuralode.Stats`), summed over the blocks; ``block_stats`` has them per block.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._blocks import ODEBlock
from ._classify import CrossEntropy, check_images, check_labels, check_loss
from ._errors import NotSupportedError, SpecError
from ._layers import AbstractLayer, walk
from ._model_base import SpecParameters, check_runtime
from ._solution import Stats
from ._validate import check_params
from .backends._registry import get_backend
from ._options import checked_options

NETWORK_BACKENDS = ("jax", "torch", "julia")
"""Backends that compile a :class:`Network` (``compile_network``). Julia's compile is checked statically here and
runs only where Julia exists (docs/julia.md)."""


@dataclasses.dataclass(frozen=True)
class NetworkValueAndGrad:
    """A loss and its gradient: ``grad_params`` in the canonical flat layout; ``outputs`` are the logits.

    ``stats`` sums the ODE blocks' counts (all zero for a network without blocks); ``block_stats`` lists them
    per block, in spec order.
    """

    value: float
    grad_params: np.ndarray
    stats: Stats
    block_stats: tuple[Stats, ...]
    outputs: np.ndarray


def sum_stats(stats: tuple[Stats, ...]) -> Stats:
    """Field-wise sum of several blocks' stats (``None`` — uncounted — stays ``None``)."""
    if not stats:
        return Stats()
    out = {}
    for name in Stats.__dataclass_fields__:
        values = [getattr(s, name) for s in stats]
        out[name] = None if any(v is None for v in values) else int(sum(values))
    return Stats(**out)


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Network(SpecParameters):
    """A network spec compiled for one backend: ``apply`` gives outputs, ``value_and_grad`` a loss gradient.

    **Arguments:**

    - ``spec`` (positional): the network, e.g. ``pn.problems.mnist_model("odenet")``.
    - ``input_shape``: the shape of one input sample, e.g. ``(1, 28, 28)``; needed when the first layer does not
      fix it (convolutions accept any height and width).
    - ``backend``: ``"jax"``, ``"torch"`` or ``"julia"`` (CPU only; no native trainer there yet).
    - ``dtype``: ``"float32"`` (default, for training) or ``"float64"`` (for comparisons; on JAX it runs inside a
      scoped ``jax.enable_x64(True)`` context, as :class:`pyneuralode.ODEModel` does).
    - ``device``: ``None`` (the backend's default), ``"cpu"`` or ``"cuda"``.
    """

    spec: AbstractLayer = dataclasses.field(kw_only=False)
    input_shape: tuple[int, ...] | None = None
    backend: str = "jax"
    dtype: str = "float32"
    device: str | None = None

    def __post_init__(self):
        if not isinstance(self.spec, AbstractLayer):
            raise SpecError(f"spec must be a pyneuralode layer such as pn.Sequential(...), got "
                            f"{type(self.spec).__name__}.")
        object.__setattr__(self, "spec", self.spec.expand())
        shape = self.input_shape if self.input_shape is not None else self.spec.in_shape
        if shape is None:
            raise SpecError("This network does not fix its input shape: pass input_shape=, e.g. "
                            "pn.Network(spec, input_shape=(1, 28, 28)).")
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise SpecError(f"input_shape must be a tuple of positive integers, got {self.input_shape!r}.") from None
        if not shape or min(shape) < 1:
            raise SpecError(f"input_shape must be a tuple of positive integers, got {self.input_shape!r}.")
        object.__setattr__(self, "input_shape", shape)
        out = self.spec.out_shape(shape)
        if len(out) != 1:
            raise SpecError(f"A classifier network must end in a vector of logits, but this spec outputs samples of "
                            f"shape {out}: end it with pn.Flatten() and a pn.Linear(...).")
        object.__setattr__(self, "num_classes", int(out[0]))
        check_runtime(self)
        for block in self.ode_blocks:  # the same solver/adjoint/backend checks as ODEModel
            block.as_model(backend=self.backend, dtype=self.dtype, device=self.device)
        object.__setattr__(self, "_program", None)

    # ---------------------------------------------------------------- structure and parameters
    @property
    def ode_blocks(self) -> tuple[ODEBlock, ...]:
        """The ODE blocks of the spec, in parameter order."""
        return tuple(layer for layer in walk(self.spec) if isinstance(layer, ODEBlock))

    @property
    def _param_spec(self):
        return self.spec

    # ---------------------------------------------------------------- running
    @property
    def program(self):
        """The compiled backend program (compiled on first use and cached)."""
        if self._program is None:
            if self.backend not in NETWORK_BACKENDS:
                raise NotSupportedError(f"pn.Network is not available on backend {self.backend!r} yet: use "
                                        f"backend={' or '.join(map(repr, NETWORK_BACKENDS))}.")
            object.__setattr__(self, "_program", get_backend(self.backend).compile_network(self))
        return self._program

    def _check(self, params, x):
        params = check_params(params, self.num_params, self.dtype)
        x = check_images(x, self.input_shape, self.dtype)
        return params, x

    @checked_options
    def apply(self, params, x, *, return_stats: bool = False):
        """The outputs (logits) for the batch ``x`` of shape ``(batch, *input_shape)``.

        With ``return_stats=True`` returns ``(outputs, stats)``, ``stats`` the ODE blocks' forward counts.
        """
        params, x = self._check(params, x)
        outputs, block_stats = self.program.apply(params, x)
        return (outputs, sum_stats(block_stats)) if return_stats else outputs

    @checked_options
    def value_and_grad(self, params, x, labels, *, loss=None) -> NetworkValueAndGrad:
        """The loss of ``apply(params, x)`` against integer ``labels`` and its gradient w.r.t. ``params``.

        ``loss`` defaults to ``pn.CrossEntropy()``.
        """
        loss = check_loss(CrossEntropy() if loss is None else loss)
        params, x = self._check(params, x)
        labels = check_labels(labels, x.shape[0], self.num_classes)
        value, grad, outputs, block_stats = self.program.value_and_grad(params, x, labels, loss)
        return NetworkValueAndGrad(value, grad, sum_stats(block_stats), tuple(block_stats), outputs)

    @checked_options
    def native(self, params=None):
        """The backend's own object holding its own copy of the canonical flat ``params`` (default
        ``self.init(0)``): JAX, an equinox module ``net(x) -> logits`` (``net.params``, ``net.with_params(flat)``,
        ``net.apply_with_stats(x)`` for the blocks' forward counts, ``net.probes``' gradient for the backward
        ones); torch, an ``nn.Module`` ``net(x) -> logits`` (``net.load_params(flat)``, ``net.params()``,
        ``net.stats`` / ``net.block_stats()`` after a call and its backward pass); Julia, the ``JuliaNetwork``
        ``net(x, flat)`` (which takes the parameters per call)."""
        params = self.init(0) if params is None else check_params(params, self.num_params, self.dtype)
        return self.program.native(params)
