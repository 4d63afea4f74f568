"""Mini-batches of labelled images for one epoch: seeded shuffle, optional random-crop augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .._errors import SpecError
from ._augment import random_crop
from .._options import checked_options


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def check_images_labels(images, labels, *, image_shape=(1, 28, 28), num_classes: int = 10):
    """Validate a labelled image set; returns ``(images, labels)`` as numpy arrays (not copied).

    Images must be ``(N, *image_shape)`` float32 or float64 and finite; labels ``(N,)`` integers in
    ``0..num_classes-1``; ``N`` must be at least 1. Anything else is a :class:`~pyneuralode.SpecError`.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    image_shape = tuple(int(s) for s in image_shape)
    if images.ndim != 1 + len(image_shape) or images.shape[1:] != image_shape:
        raise SpecError(f"images have shape {images.shape}, expected (N, {', '.join(map(str, image_shape))}) "
                        "(NCHW; MNIST from pn.datasets.mnist() already has this layout).")
    if images.dtype not in (np.float32, np.float64):
        raise SpecError(f"images have dtype {images.dtype}, expected float32 or float64 "
                        "(scale uint8 pixels with images.astype('float32') / 255).")
    if images.shape[0] == 0:
        raise SpecError("The image set is empty (N = 0): there is nothing to batch.")
    if labels.shape != (images.shape[0],):
        raise SpecError(f"labels have shape {labels.shape}, expected ({images.shape[0]},) to match the "
                        "images.")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise SpecError(f"labels have dtype {labels.dtype}, expected integers in 0..{num_classes - 1}.")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise SpecError(f"labels must be in 0..{num_classes - 1}, found {bad}.")
    if not np.all(np.isfinite(images)):
        raise SpecError("images contain NaN or infinite values.")
    return images, labels


@checked_options
def batches(images, labels, batch_size: int, *, seed: int, shuffle: bool = True, augment: bool = False,
            drop_last: bool = False, pad: int = 4, image_shape=(1, 28, 28),
            num_classes: int = 10) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterate over one epoch of ``(images, labels)`` mini-batches.

    Every example appears exactly once per epoch (the last batch is smaller unless ``drop_last``). The order
    and the crops depend only on ``seed``: use ``seed=base_seed + epoch`` for a new order each epoch.

    **Arguments:**
    - ``images``: ``(N, 1, 28, 28)`` float32/float64 (``image_shape`` for other sizes); ``labels``: ``(N,)``
      integers in ``0..num_classes-1``. Checked before the first batch.
    - ``batch_size``: examples per batch.
    - ``seed``: integer seed of the shuffle and the augmentation.
    - ``shuffle``: permute the examples (``False`` keeps their order, e.g. for evaluation).
    - ``augment``: random crop after zero-padding by ``pad`` pixels (as torchdiffeq's
      ``RandomCrop(28, padding=4)``).
    - ``drop_last``: skip the final incomplete batch.

    **Yields:** ``(x, y)``: new arrays ``x`` of shape ``(B, *image_shape)`` in the images' dtype, ``y`` int64.
    """
    images, labels = check_images_labels(images, labels, image_shape=image_shape, num_classes=num_classes)
    batch_size = _check_positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}.")
    n = images.shape[0]
    if drop_last and batch_size > n:
        raise SpecError(f"batch_size={batch_size} is larger than the {n} examples and drop_last=True: "
                        "no batch would be produced.")
    return _iterate(images, labels, batch_size, np.random.default_rng(int(seed)), shuffle, augment, drop_last,
                    pad)


def _iterate(images, labels, batch_size, rng, shuffle, augment, drop_last, pad):
    n = images.shape[0]
    order = rng.permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = images[idx]
        if augment:
            x = random_crop(x, rng, pad=pad)
        yield x, labels[idx].astype(np.int64)
