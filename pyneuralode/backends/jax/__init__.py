"""The JAX/Diffrax backend: specs compile to pure JAX functions solved by diffrax, jit-compiled."""

from ._xla_cpu import configure as _configure_xla_cpu

_configure_xla_cpu()  # before anything can start JAX's CPU client; see _xla_cpu.py

from . import _concat_squash  # noqa: F401  (registers the ConcatSquash layer)
from ._backend import JaxBackend
from ._network import NativeNetwork
from ._program import NativeODE, backward_counts
from . import _image_layers  # noqa: F401  (registers Conv2d, GroupNorm, ... with the field compiler)
from . import _graph  # noqa: F401  (registers pn.Dynamics, the traced user field, with the field compiler)

__all__ = ["JaxBackend", "NativeNetwork", "NativeODE", "backward_counts"]
