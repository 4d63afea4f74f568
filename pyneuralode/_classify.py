"""Classification losses and the input checks of classifier networks (images and integer labels).

A classification loss compares a network's logits ``(batch, classes)`` with integer labels ``(batch,)``. It is
described neutrally here; each backend runs its library's implementation (optax's
``softmax_cross_entropy_with_integer_labels``, ``torch.nn.functional.cross_entropy``), and ``__call__`` is the
numpy reference used by tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._errors import SpecError
from ._options import CheckedOptions
from ._validate import as_real_array


class AbstractClassificationLoss(metaclass=CheckedOptions):
    """A scalar loss of ``(logits, labels)``; backends map the loss *type* to their implementation."""

    def __call__(self, logits, labels) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class CrossEntropy(AbstractClassificationLoss):
    """Mean softmax cross-entropy of logits against integer class labels (``torch.nn.CrossEntropyLoss``)."""

    def __call__(self, logits, labels) -> float:
        logits = np.asarray(logits, dtype=np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())


def check_loss(loss) -> AbstractClassificationLoss:
    if not isinstance(loss, AbstractClassificationLoss):
        raise SpecError(f"loss must be a classification loss such as pn.CrossEntropy(), got {loss!r}.")
    return loss


def check_images(x, sample_shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A batch ``(B, *sample_shape)`` of real floating-point inputs, cast to ``dtype``; B >= 1."""
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if arr.dtype != object and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise SpecError(f"inputs must be floating point, got dtype {arr.dtype}: scale integer images first, e.g. "
                        "x.astype('float32') / 255 (pn.datasets.mnist already gives float32 in [0, 1]).")
    arr = as_real_array(arr, "inputs", dtype)
    expected = (None, *sample_shape)
    if arr.ndim != len(expected) or arr.shape[1:] != tuple(sample_shape):
        shown = ", ".join(map(str, sample_shape))
        raise SpecError(f"inputs have shape {arr.shape} but the network expects (batch, {shown}); add a batch "
                        "axis with x[None] for a single sample.")
    if arr.shape[0] == 0:
        raise SpecError("the batch is empty (0 samples): pass at least one sample.")
    return arr


def check_labels(labels, batch: int, num_classes: int) -> np.ndarray:
    """Integer class labels ``(batch,)`` in ``[0, num_classes)``, as int64."""
    arr = np.asarray(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise SpecError(f"labels must be integer class indices, got dtype {arr.dtype}: convert with "
                        "labels.astype('int64') (not one-hot vectors).")
    if arr.shape != (batch,):
        raise SpecError(f"labels have shape {arr.shape} but the batch has {batch} samples: pass one integer "
                        f"label per sample, shape ({batch},).")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise SpecError(f"label {bad} is out of range: the network has {num_classes} classes, so labels must lie "
                        f"in [0, {num_classes - 1}].")
    return arr.astype(np.int64)
