"""Augmented neural ODEs (Dupont, Doucet & Teh, NeurIPS 2019): solve in ``R^(n+d)`` from ``[x, 0]``.

A neural ODE's flow is a homeomorphism, so its trajectories cannot cross: it cannot map ``-1 -> 1`` and
``1 -> -1`` on the line (the paper's ``g_1d``), and it needs a contorted, expensive flow to separate the annulus
``A_2``. Padding the state with ``d`` zeros lets trajectories pass each other in the extra dimensions.

Two faces of one idea:

- :class:`Augment` is a spec layer (no parameters) that zero-pads the first sample axis: the features of a vector
  sample ``(n,) -> (n + d,)``, the channels of an image ``(C, H, W) -> (C + d, H, W)`` (ANODE's augmented
  channels). Put it before an :class:`pyneuralode.ODEBlock` in a :class:`pyneuralode.Network`.
- ``pn.ODEModel(field, augment=d)`` solves ``dz/dt = field(t, z)`` from ``z(t0) = [y0, 0]`` with ``field`` on
  ``n + d`` features, and returns (and puts in the loss) only the first ``n`` features of each state; ``grad_y0``
  is the gradient with respect to the ``n`` given features.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._errors import SpecError
from ._layers import AbstractLayer, _check_positive_int


@dataclasses.dataclass(frozen=True)
class Augment(AbstractLayer):
    """Append ``dims`` zero features (vector samples) or zero channels (``(C, H, W)`` samples); no parameters.

    ``pn.Sequential(pn.Augment(1), pn.ODEBlock(pn.MLP([3, 32, 3])), pn.Linear(3, 2))`` is ANODE's classifier for a
    2-D input; ``Augment(d)`` before the ODE block of the MNIST ODE-Net gives its augmented-channel variant.
    """

    dims: int

    def __post_init__(self):
        _check_positive_int(self.dims, "Augment dims")

    def param_specs(self):
        return ()

    def out_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if not in_shape:
            raise SpecError("Augment pads the first axis of a sample; a scalar sample has none.")
        return (in_shape[0] + self.dims, *in_shape[1:])


def check_augment(augment, field: AbstractLayer) -> int:
    """``augment`` of an :class:`pyneuralode.ODEModel` (0 for none), checked against its ``field``."""
    if augment == 0 and not isinstance(augment, bool):
        return 0
    dims = _check_positive_int(augment, "ODEModel augment")
    shape = field.in_shape
    if shape is None or len(shape) != 1:
        raise SpecError("ODEModel(augment=...) pads vector states and needs a field that fixes its input width, "
                        "such as pn.MLP([n + augment, ...]); for images put pn.Augment(d) before a pn.ODEBlock in a "
                        "pn.Network.")
    if shape[0] <= dims:
        raise SpecError(f"ODEModel augment={dims} leaves no data features: the field takes {shape[0]} features, "
                        f"which must be the state's width plus augment.")
    return dims


def pad_features(y: np.ndarray, dims: int) -> np.ndarray:
    """``y`` with ``dims`` zeros appended on its last axis (numpy)."""
    return np.concatenate([y, np.zeros((*y.shape[:-1], dims), dtype=y.dtype)], axis=-1)


def augmented_loss(loss, dims: int):
    """``loss`` (on ``n`` features) as the equivalent loss on the ``n + dims``-feature augmented states: the same
    loss type with its target zero-padded and weight 0 on the augmented features, so its (weighted) mean runs over
    the data features only and the augmented ones get no gradient."""
    from ._losses import L1, MSE
    if not isinstance(loss, (L1, MSE)):
        raise SpecError(f"An augmented model (augment={dims}) trains with pn.L1 or pn.MSE; {type(loss).__name__} "
                        "would see the augmented features.")
    weights = np.ones(loss.target.shape) if loss.weights is None else loss.weights
    return type(loss)(pad_features(np.asarray(loss.target), dims), weights=pad_features(weights, dims))
