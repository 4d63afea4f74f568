"""The JAX backend object: version/device facts and the compile step (float64 programs run in a scoped x64 context)."""

from __future__ import annotations

import jax

from .._base import AbstractBackend


def _check_device(device):
    if device == "cuda" and not any(d.platform == "gpu" for d in jax.devices()):
        from ..._errors import BackendUnavailable
        raise BackendUnavailable("device='cuda' was asked for but JAX sees no GPU: install a CUDA build "
                                 "with `pip install -U \"jax[cuda12]\"`, or use device=None.")


class JaxBackend(AbstractBackend):
    """Compiles specs to JAX functions solved by diffrax (`pip install "pyneuralode[jax]"`)."""

    name = "jax"

    def compile(self, model):
        _check_device(model.device)
        from ._program import JaxProgram
        return JaxProgram(model)

    def compile_network(self, network):
        """Compile a :class:`pyneuralode.Network` (layers and ODE blocks) to jit-compiled JAX functions."""
        _check_device(network.device)
        from ._network import JaxNetworkProgram
        return JaxNetworkProgram(network)

    def describe(self) -> dict:
        import diffrax
        import equinox
        return {"versions": {"jax": jax.__version__, "diffrax": diffrax.__version__,
                             "equinox": equinox.__version__},
                "devices": [str(d) for d in jax.devices()]}
