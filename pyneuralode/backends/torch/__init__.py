"""The PyTorch/torchdiffeq backend: specs compile to ``torch.nn.Module`` vector fields solved by torchdiffeq.

``model.native()`` returns a :class:`NativeODE` (``forward(y0, ts)``, its ``vector_field`` the compiled
``f(t, y)``), ``network.native()`` a :class:`NetworkModule`; both load and read the canonical flat parameter vector
with ``load_params``/``params``.
"""

from ._backend import TorchBackend
from ._compile import VectorField, flat_values, load_flat
from ._network import NetworkModule
from ._program import NativeODE

__all__ = ["NativeODE", "NetworkModule", "TorchBackend", "VectorField", "flat_values", "load_flat"]
