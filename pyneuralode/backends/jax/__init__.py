"""The JAX/Diffrax backend: specs compile to pure JAX functions solved by diffrax, jit-compiled."""

from ._backend import JaxBackend

__all__ = ["JaxBackend"]
