"""The canonical flat parameter vector (the same vector drives every backend) and its deterministic numpy initialisation.

Layout: walk the spec depth-first (:func:`pyneuralode._layers.walk`); for each layer its tensors in the order of
``param_specs()``; each tensor flattened row-major in PyTorch's shape convention. Every backend slices this one
vector with :func:`param_layout`, so identical weights reach every backend and gradients come back in the same
order.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._errors import SpecError
from ._layers import AbstractLayer, ParamSpec, initialiser
from ._options import checked_options


@dataclasses.dataclass(frozen=True)
class ParamSlot:
    """Where one tensor lives in the flat vector: ``flat[offset:offset + size].reshape(shape)``.

    ``name`` is its dotted path: sublayer names then the tensor's name, e.g. ``"0.weight"`` for the first Linear
    of an MLP (positions, as ``torch.nn.Sequential`` names them) or ``"alpha"`` and ``"U.0.weight"`` in a
    :func:`pyneuralode.dynamics` field with a parameter ``alpha`` and a network ``U``.
    """

    layer_index: int
    layer: AbstractLayer
    spec: ParamSpec
    offset: int
    name: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def stop(self) -> int:
        return self.offset + self.size


def param_layout(spec: AbstractLayer) -> tuple[ParamSlot, ...]:
    """All parameter tensors of ``spec`` with their offsets in the canonical flat vector."""
    slots, offset = [], 0
    for index, (prefix, layer) in enumerate(_named_walk(spec.expand(), "")):
        for pspec in layer.param_specs():
            slots.append(ParamSlot(index, layer, pspec, offset, prefix + pspec.name))
            offset += pspec.size
    return tuple(slots)


def _named_walk(layer: AbstractLayer, prefix: str):
    """``(dotted prefix, layer)`` in :func:`pyneuralode._layers.walk` order."""
    yield prefix, layer
    for name, child in zip(layer.sublayer_names(), layer.sublayers()):
        yield from _named_walk(child, f"{prefix}{name}.")


def num_params(spec: AbstractLayer) -> int:
    """Length of the canonical flat parameter vector of ``spec``."""
    layout = param_layout(spec)
    return layout[-1].stop if layout else 0


@checked_options
def init_params(spec: AbstractLayer, seed: int = 0, dtype="float64") -> np.ndarray:
    """Draw the canonical flat parameters of ``spec`` from ``numpy.random.default_rng(seed)``.

    Weights and biases follow PyTorch's default rule U(-1/sqrt(fan_in), 1/sqrt(fan_in)); normalisation scales
    start at 1 and shifts at 0. The draw is in float64 and cast, so float32 and float64 runs share weights.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be an integer >= 0 (numpy's generators take no negative seeds), got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    parts = [initialiser(slot.spec)(rng).reshape(-1) for slot in param_layout(spec)]
    flat = np.concatenate(parts) if parts else np.zeros(0)
    return flat.astype(dtype)


def unflatten(spec: AbstractLayer, flat: np.ndarray) -> list[np.ndarray]:
    """Split a flat vector into the spec's tensors (canonical order, PyTorch shapes)."""
    return [np.asarray(flat[s.offset:s.stop]).reshape(s.shape) for s in param_layout(spec)]
