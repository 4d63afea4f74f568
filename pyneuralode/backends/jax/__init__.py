"""The JAX/Diffrax backend: specs compile to pure JAX functions solved by diffrax, jit-compiled."""

from . import _concat_squash  # noqa: F401  (registers the ConcatSquash layer)
from ._backend import JaxBackend

__all__ = ["JaxBackend"]
