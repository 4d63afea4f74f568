"""Backends: a registry of names resolved lazily; importing this package imports no framework."""

from ._registry import BACKEND_NAMES, backend_info, get_backend, require_support

__all__ = ["BACKEND_NAMES", "backend_info", "get_backend", "require_support"]
