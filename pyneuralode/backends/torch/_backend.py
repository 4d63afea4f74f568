"""The torch backend object: version/device facts and the compile step (which picks the device)."""

from __future__ import annotations

import torch

from ..._errors import BackendUnavailable
from .._base import AbstractBackend


def select_device(requested: str | None) -> torch.device:
    """``"cuda"`` needs a visible GPU; ``None`` uses the GPU when there is one, else the CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable("device='cuda' was asked for but torch sees no GPU: install a CUDA build of torch "
                                 "(https://pytorch.org/get-started/locally/), or use device=None.")
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(requested)


class TorchBackend(AbstractBackend):
    """Compiles specs to ``torch.nn.Module`` vector fields solved by torchdiffeq
    (``pip install "pyneuralode[torch]"``)."""

    name = "torch"

    def compile(self, model):
        """A :class:`~pyneuralode.backends.torch._program.TorchProgram` for ``model``."""
        from ._program import TorchProgram
        return TorchProgram(model, select_device(model.device))

    def compile_network(self, network):
        """A :class:`~pyneuralode.backends.torch._network.TorchNetworkProgram` for a :class:`pyneuralode.Network`."""
        from ._network import TorchNetworkProgram
        return TorchNetworkProgram(network, select_device(network.device))

    def describe(self) -> dict:
        """Versions of torch and torchdiffeq, and the devices torch can use."""
        import torchdiffeq
        devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})"
                             for i in range(torch.cuda.device_count())]
        return {"versions": {"torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__},
                "devices": devices}
