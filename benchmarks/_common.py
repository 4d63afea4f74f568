"""Shared pieces of the benchmark suite: run settings, spiral inputs, model builders, skip records."""

from __future__ import annotations

import dataclasses

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.spiral import sample_batch, spiral_data, spiral_field

BACKENDS = ("jax", "torch", "julia")
ADJOINTS = {"direct": pn.DirectAdjoint, "backsolve": pn.BacksolveAdjoint, "checkpoint": pn.CheckpointAdjoint}
#: Adjoints each backend runs (the registry's list, in the suite's order).
BACKEND_ADJOINTS = {"jax": ("direct", "backsolve", "checkpoint"), "torch": ("direct", "backsolve"),
                    "julia": ("direct", "backsolve")}


@dataclasses.dataclass
class Settings:
    """How one suite run is done; ``scale(full, quick)`` picks repetition counts."""

    quick: bool = False
    device: str = "cpu"
    torch_threads: int = 1

    def pick(self, full, quick):
        return quick if self.quick else full

    @property
    def suffix(self) -> str:
        """Results of a GPU run live in their own files (``<case>.cuda.json``)."""
        return "" if self.device == "cpu" else f".{self.device}"

    @property
    def model_device(self):
        return None if self.device == "cpu" else self.device


def setup_torch(threads: int) -> None:
    """Pin torch's intra-op threads: on a small, shared CPU the default (one per core) makes tiny ops spin and
    can slow the spiral step 30×; one thread is what small neural ODEs want. Recorded in every results file."""
    import torch
    torch.set_num_threads(threads)


def torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


_SPIRAL = {}


def spiral_truth():
    if "data" not in _SPIRAL:
        _SPIRAL["data"] = spiral_data()
    return _SPIRAL["data"]


def spiral_batches(n: int, *, dtype="float32", batch_size=20, seed=0):
    """``n`` training batches ``(y0, t, target)`` of the paper's demo (20 windows of 10 points)."""
    ts, ys = spiral_truth()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y0, t, target = sample_batch(rng, ts, ys, batch_size=batch_size)
        out.append((y0.astype(dtype), t.astype(dtype), target.astype(dtype)))
    return out


def spiral_inputs(batch: int, *, dtype="float64", seed=0, n_times=10):
    """One batch of any size: ``batch`` window starts drawn with replacement from the true spiral."""
    ts, ys = spiral_truth()
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ts) - n_times, size=batch)
    target = np.stack([ys[starts + i] for i in range(n_times)], axis=0).astype(dtype)
    return ys[starts].astype(dtype), ts[:n_times].astype(dtype), target


def spiral_model(backend, adjoint="direct", *, dtype="float32", rtol=1e-3, atol=1e-4, dt0=None, width=50,
                 max_steps=4096, device=None):
    field = spiral_field() if width == 50 else pn.MLP([2, width, 2], activation="tanh", input_transform="cube")
    adj = ADJOINTS[adjoint]() if isinstance(adjoint, str) else adjoint
    return pn.ODEModel(field, solver=pn.Dopri5(), control=pn.StepControl(rtol=rtol, atol=atol, dt0=dt0,
                                                                         max_steps=max_steps),
                       adjoint=adj, backend=backend, dtype=dtype, device=device)


def available(backend: str, device=None) -> str | None:
    """``None`` if ``backend`` can run here, else the reason it cannot (the library's own message)."""
    try:
        m = spiral_model(backend, "direct", dtype="float64", device=device)
        m.solve(m.init(0), np.array([2.0, 0.0]), np.array([0.0, 0.1]))
    except pn.PyNeuralODEError as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0]}"
    return None


def cuda_reason(backend: str) -> str | None:
    """``None`` when ``backend`` sees a CUDA device, else why not."""
    if backend == "torch":
        import torch
        return None if torch.cuda.is_available() else "torch.cuda.is_available() is False"
    if backend == "jax":
        import jax
        try:
            return None if jax.devices("gpu") else "jax.devices('gpu') is empty"
        except RuntimeError as err:
            return f"JAX has no GPU backend ({str(err).splitlines()[0][:120]})"
    return f"no CUDA path for {backend} in this suite"


def device_name(backend: str, device: str) -> str:
    if device == "cpu":
        return "cpu"
    if backend == "torch":
        import torch
        return torch.cuda.get_device_name(0)
    if backend == "jax":
        import jax
        return str(jax.devices("gpu")[0].device_kind)
    return device


def fmt_timing(timing: dict) -> str:
    return (f"{1e3 * timing['median_s']:9.3f} ms (p10 {1e3 * timing['p10_s']:.3f}, "
            f"p90 {1e3 * timing['p90_s']:.3f}, n={timing['n']})")
