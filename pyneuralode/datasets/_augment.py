"""Random-crop augmentation in numpy: zero-pad by ``pad`` pixels, then crop back to the original size at a
random offset — torchvision's ``RandomCrop(28, padding=4)`` as used by torchdiffeq's
``examples/odenet_mnist.py``."""

from __future__ import annotations

import numpy as np

from .._errors import SpecError


def random_crop(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Pad each ``(C, H, W)`` image with ``pad`` zeros on every side and crop an ``H x W`` window at an offset
    drawn uniformly from ``{0, ..., 2*pad}`` in each direction, independently per image.

    **Arguments:**
    - ``images``: ``(N, C, H, W)`` array (not modified).
    - ``rng``: a ``numpy.random.Generator`` (``np.random.default_rng(seed)``).
    - ``pad``: padding in pixels (``0`` returns a copy).

    **Returns:** a new array of the same shape and dtype; content shifted by up to ``pad`` pixels, with zeros
    moved in at the edges.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise SpecError(f"random_crop expects images of shape (N, C, H, W), got {images.shape}.")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise SpecError(f"pad must be a non-negative integer, got {pad!r}.")
    n, c, h, w = images.shape
    if pad == 0 or n == 0:
        return images.copy()
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    rows = (dy[:, None] + np.arange(h))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + np.arange(w))[:, None, None, :]  # (N, 1, 1, W)
    return padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]
