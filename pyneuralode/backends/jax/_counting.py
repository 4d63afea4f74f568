"""Exact, jit-friendly counters of vector-field evaluations (exact on every backend).

Backward pass of discretise-then-optimise adjoints: the field is wrapped in a ``custom_vjp`` that also takes a
scalar-like *probe*. Its backward rule returns the field's true VJP and ``[1, 0, 0, 0]`` as the probe's cotangent,
so the gradient with respect to the probe is exactly the number of VJP evaluations executed — no host callback,
no slowdown. (Forward-mode autodiff cannot pass a ``custom_vjp``, so implicit solvers, which take Jacobians by
JVP, use the plain field.)

Implicit solvers carry their forward count through the solve (``_implicit``). :class:`HostCounter` (a
``jax.debug.callback`` per evaluation: exact, but a host round trip each, ~1 ms on CPU) is the independent counter
the tests check both against.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp

PROBE_SIZE = 4
"""Probe layout: [nfe_backward, backward failure flag, backward steps accepted, backward steps rejected]."""


def new_probe(dtype) -> jax.Array:
    return jnp.zeros(PROBE_SIZE, dtype=dtype)


def vjp_counted(field):
    """``counted(params, t, y, probe)``: ``field(params, t, y)`` whose every VJP adds 1 to ``d/d probe[0]``."""

    @jax.custom_vjp
    def counted(params, t, y, probe):
        return field(params, t, y)

    def fwd(params, t, y, probe):
        out, vjp = jax.vjp(field, params, t, y)
        return out, (vjp, probe)

    def bwd(res, cotangent):
        vjp, probe = res
        g_params, g_t, g_y = vjp(cotangent)
        return g_params, g_t, g_y, jnp.zeros_like(probe).at[0].set(1)

    counted.defvjp(fwd, bwd)
    return counted


class HostCounter:
    """A thread-safe Python counter incremented from compiled code through ``jax.debug.callback``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def reset(self) -> None:
        with self._lock:
            self.count = 0

    def _tick(self, *_):
        with self._lock:
            self.count += 1

    def wrap(self, field):
        """``field`` that ticks this counter once per execution."""
        def counted(params, t, y):
            jax.debug.callback(self._tick, t)
            return field(params, t, y)
        return counted
