"""XLA:CPU options the JAX backend sets before JAX starts its CPU client (``XLA_FLAGS`` is read only then).

jaxlib 0.10 hands convolutions to YNNPACK ("ynn_fusion" thunks), and there each convolution runs on one thread;
XLA's Eigen convolution uses the whole intra-op thread pool. Measured on the 2-core development machine (torch 2
threads, 64-channel MNIST ODE-Net, batch 128, float32, one interleaved run, load ~1.5): a single 3x3 64-channel
convolution 4.0 ms -> 2.1 ms wall (the same CPU time), and the CheckpointAdjoint training step 1.95 s -> 1.12 s
(torch 0.82 s). So convolutions are taken out of YNNPACK's fusion types (``-individual_convolution``; dots,
reductions and elementwise fusions keep jaxlib's defaults).

The flag is added only when all of these hold, so a user's own choice always wins and nothing can break:

- ``PYNEURALODE_XLA_CPU_CONV`` is unset or ``eigen`` (``ynn`` keeps jaxlib's default);
- ``XLA_FLAGS`` does not already name ``--xla_cpu_experimental_ynn_fusion_type``;
- jaxlib is a version where the flag was checked to exist (an unknown flag aborts the process);
- JAX's backends are not initialised yet (afterwards the flag would be ignored).

:func:`conv_flag_applied` says whether it took effect in this process.
"""

from __future__ import annotations

import os

FLAG_NAME = "--xla_cpu_experimental_ynn_fusion_type"
FLAG = f"{FLAG_NAME}=-individual_convolution"
_KNOWN_JAXLIB = ((0, 10), (0, 11))  # [low, high): versions checked to accept the flag
_applied = False


def _jaxlib_version() -> tuple[int, ...] | None:
    try:
        import jaxlib
        return tuple(int(p) for p in jaxlib.__version__.split(".")[:2])
    except (ImportError, AttributeError, ValueError):  # pragma: no cover - unusual installs
        return None


def _backends_initialised() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):  # pragma: no cover - private API moved: be safe, do nothing
        return True


def configure() -> bool:
    """Add :data:`FLAG` to ``XLA_FLAGS`` where it is safe and useful (see the module docstring)."""
    global _applied
    if os.environ.get("PYNEURALODE_XLA_CPU_CONV", "eigen") != "eigen":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG_NAME in flags:
        _applied = FLAG in flags
        return _applied
    version = _jaxlib_version()
    if version is None or not (_KNOWN_JAXLIB[0] <= version < _KNOWN_JAXLIB[1]) or _backends_initialised():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    _applied = True
    return True


def conv_flag_applied() -> bool:
    """Whether XLA:CPU convolutions run on the multi-threaded Eigen path in this process."""
    return _applied
