"""The PyTorch/torchdiffeq backend: specs compile to ``torch.nn.Module`` vector fields solved by torchdiffeq.

``model.native()`` returns the module (``forward(t, y)``); :func:`load_flat` and :func:`flat_values` move
between it and the canonical flat parameter vector.
"""

from . import _concat_squash  # noqa: F401  (registers the ConcatSquash layer)
from ._backend import TorchBackend
from ._compile import VectorField, flat_values, load_flat
from . import _image_layers  # noqa: F401  (registers Conv2d, GroupNorm, ... with the spec compiler)
from . import _graph  # noqa: F401  (registers pn.Dynamics, the traced user field, with the spec compiler)

__all__ = ["TorchBackend", "VectorField", "flat_values", "load_flat"]
