"""float64 without touching the process: each float64 program runs inside JAX's ``jax.enable_x64(True)``.

JAX computes in float32 unless ``jax_enable_x64`` is on, and that flag is process-wide by default; turning it on
for one model would silently change the user's other JAX code (``jnp.arange(3.0)`` becomes float64). So a
float64 program enters JAX's thread-local ``jax.enable_x64(True)`` context around everything it does —
construction, tracing, compiling and running (the jit cache keys on the flag, so float32 and float64 traces of
one function never mix) — and leaves the flag as it found it. Everything crosses the boundary as numpy, so no
float64 JAX array leaks into code running without x64; trainers keep their float64 state on the device and touch
it only inside the scope.

What cannot be scoped is the user's own JAX code: a float64 model's ``native()`` object runs there, so it needs
x64 on in the caller (:func:`require_x64_for_native`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import jax
import jax.numpy as jnp

from ..._errors import SpecError


def x64_scope(dtype):
    """``jax.enable_x64(True)`` for float64, else a no-op (float32 programs cast their arrays explicitly). Also a
    no-op where x64 is already on (an outer call entered it, or the caller's flag), so nested calls enter it once."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _dtype_of(obj):
    dtype = getattr(obj, "dtype", None)
    return dtype if dtype is not None else obj.program.dtype


def x64_scoped(cls):
    """Class decorator: ``__init__`` and every public method run inside :func:`x64_scope` of the object's dtype
    (``self.dtype``, or ``self.program.dtype``; ``__init__`` reads its first argument's). ``native`` stays
    outside: it hands an object to the caller's JAX code."""
    def wrap(name, method):
        @functools.wraps(method)
        def scoped(self, *args, **kwargs):
            dtype = _dtype_of(args[0]) if name == "__init__" else _dtype_of(self)
            with x64_scope(dtype):
                return method(self, *args, **kwargs)
        return scoped

    names = {name for klass in cls.__mro__[:-1] for name in vars(klass)
             if (name == "__init__" or not name.startswith("_")) and name != "native"}
    for name in names:
        member = inspect.getattr_static(cls, name)
        if inspect.isfunction(member):
            setattr(cls, name, wrap(name, member))
    return cls


def require_x64_for_native(dtype) -> None:
    """Refuse a float64 ``native()`` object where the caller's JAX computes in float32."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise SpecError("A float64 model's native() object runs in your own JAX code, which computes in float32 "
                        "unless x64 is on: enable it yourself with jax.config.update('jax_enable_x64', True) "
                        "(or call native() and the object inside `with jax.enable_x64(True):`), or build the "
                        "model with dtype='float32'.")
