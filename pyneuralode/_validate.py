"""Input checks shared by every backend, so bad input fails the same way, with the same words, everywhere."""

from __future__ import annotations

import numpy as np

from ._errors import SpecError

DTYPES = ("float32", "float64")


def check_dtype(dtype) -> str:
    """Normalise ``"float32"``/``"float64"`` (or numpy dtypes); anything else is a SpecError."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise SpecError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    return name


def as_real_array(value, what: str, dtype: str) -> np.ndarray:
    """``value`` as a numpy array of ``dtype``; non-real dtypes and non-finite values are SpecErrors, checked after
    the cast too, so a float64 value beyond float32's range is refused rather than turned into ``inf``."""
    if getattr(value, "requires_grad", False) and type(value).__module__.startswith("torch"):
        raise SpecError(f"{what} is a torch tensor that requires grad: pyneuralode's model methods take and return "
                        "NumPy arrays, so autograd cannot follow them. Differentiate with model.value_and_grad(...), "
                        "or embed model.native(params) (a torch.nn.Module) in your torch code; pass "
                        "tensor.detach() here to solve without gradients.")
    if "Tracer" in type(value).__name__ and type(value).__module__.startswith("jax"):
        raise SpecError(f"{what} is a JAX tracer (a model method called inside jax.jit, jax.grad or jax.vmap): "
                        "pyneuralode's model methods take and return NumPy arrays. Inside JAX transformations use "
                        "model.native(params), an equinox module that jax.grad and jax.jit go through.")
    try:
        arr = np.asarray(value)
    except Exception as err:  # ragged lists and other oddities
        raise SpecError(f"{what} must be a numeric array: {err}") from None
    if arr.dtype.kind not in "fiu":  # object, bool, complex, strings, ...
        raise SpecError(f"{what} must be a real floating-point array, got dtype {arr.dtype}.")
    if not np.isfinite(arr).all():
        raise SpecError(f"{what} contains NaN or infinite values.")
    # Always a fresh array that pyneuralode owns: the caller may change theirs later, and JAX (0.10.2) can hand
    # back the device buffer it made for a NumPy object while x64 was off — float32 — when the same object is
    # later passed to a float64 program, which then fails on the type mismatch and crashes the process.
    if arr.dtype.kind == "f" and arr.dtype.itemsize > np.dtype(dtype).itemsize:  # only a narrowing cast overflows
        with np.errstate(over="ignore"):
            cast = np.array(arr, dtype=dtype, order="C", copy=True)
        if not np.isfinite(cast).all():  # finite in the caller's dtype, overflowing the model's
            raise SpecError(f"{what} has values out of {dtype} range (largest magnitude {np.finfo(dtype).max:.4g}): "
                            f"rescale them, or use dtype='float64'.")
        return cast
    return np.array(arr, dtype=dtype, order="C", copy=True)


def check_params(params, n_expected: int, dtype: str) -> np.ndarray:
    """The flat parameter vector: 1-D, the spec's length, real and finite."""
    arr = as_real_array(params, "params", dtype)
    if arr.ndim != 1:
        raise SpecError(f"params must be the flat 1-D parameter vector from model.init(), got shape {arr.shape}.")
    if arr.shape[0] != n_expected:
        raise SpecError(f"params has length {arr.shape[0]} but this spec has {n_expected} parameters: "
                        "use model.init(seed) to get a correctly laid-out vector.")
    return arr


def check_state(y0, sample_shape: tuple[int, ...] | None, dtype: str) -> np.ndarray:
    """``y0`` of shape ``sample_shape`` or ``(batch, *sample_shape)``."""
    arr = as_real_array(y0, "y0", dtype)
    if sample_shape is None:
        if arr.ndim == 0:
            raise SpecError("y0 must have at least one dimension.")
        return arr
    n = len(sample_shape)
    if arr.shape[-n:] != tuple(sample_shape) or arr.ndim not in (n, n + 1) or arr.size == 0:
        raise SpecError(f"y0 has shape {arr.shape} but the vector field expects {tuple(sample_shape)} or "
                        f"(batch, {', '.join(map(str, sample_shape))}).")
    return arr


def check_times(ts, dtype: str) -> np.ndarray:
    """Save times: 1-D, at least one point, finite, strictly increasing or strictly decreasing."""
    arr = as_real_array(ts, "ts", dtype)
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise SpecError(f"ts must be a 1-D array with at least one time, got shape {arr.shape}.")
    if arr.shape[0] > 1:
        d = arr[1:] - arr[:-1]
        if not ((d > 0).all() or (d < 0).all()):
            raise SpecError("ts must be strictly monotonic (all increasing or all decreasing) with no repeated "
                            "times.")
    return arr
