"""Optimiser state read back from a checkpoint: each entry checked against the parameter it belongs to.

``torch.optim`` creates its per-parameter state (Adam's moments, SGD's momentum buffer) lazily and takes a loaded
state dict on trust, so a wrong-shaped entry would only fail, or silently broadcast, at the next step. Every such
entry is a scalar (a step count) or has its parameter's shape; anything else is refused here.
"""

from __future__ import annotations

import numpy as np

from ..._errors import SpecError


def checked_entry(key: str, value, params: list, index: int) -> np.ndarray:
    """``value`` as a numpy array if it fits ``params[index]`` as its optimiser state entry ``key`` (a scalar, or
    the parameter's shape); otherwise a :class:`pyneuralode.SpecError`."""
    value = np.asarray(value)
    if not 0 <= index < len(params):
        raise SpecError(f"optimiser entry {key} names parameter {index}, but the model has {len(params)}.")
    if value.ndim and tuple(value.shape) != tuple(params[index].shape):
        raise SpecError(f"optimiser entry {key} has shape {tuple(value.shape)} but parameter {index} has shape "
                        f"{tuple(params[index].shape)}.")
    return value
