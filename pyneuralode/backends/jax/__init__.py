"""The JAX/Diffrax backend: specs compile to pure JAX functions solved by diffrax, jit-compiled."""

from ._xla_cpu import configure as _configure_xla_cpu

_configure_xla_cpu()  # before anything can start JAX's CPU client; see _xla_cpu.py

from ._backend import JaxBackend
from ._network import NativeNetwork
from ._program import NativeODE, backward_counts
from . import _field  # noqa: F401  (registers the graph ops for losses, pn.loss, on jax.numpy)

__all__ = ["JaxBackend", "NativeNetwork", "NativeODE", "backward_counts"]
