"""Data parallelism on JAX's own engine: a one-axis ``Mesh`` and ``NamedSharding`` — no hand-written collectives.

``devices=`` anywhere in pyneuralode (trainers, ensembles, the CLI's ``--devices N``) means one of:

- ``None``: no sharding; everything runs on JAX's default device;
- an ``int`` N: the first N of ``jax.devices()``;
- a sequence of ``jax.Device``;
- a ``jax.sharding.Mesh`` with one axis (its devices, in its order).

The batch (or ensemble-member) axis is split over the mesh's one axis, ``"data"``; parameters and optimiser state
are replicated. ``jax.jit`` then compiles one SPMD program: XLA inserts the all-reduces (the solver's error norm
over the batch, the mean of the loss, the gradient sum) itself. Because the adaptive step size is chosen from the
norm over the *whole* batch, a sharded solve takes exactly the steps of the single-device solve; results differ
only by the order of floating-point reductions.

Multi-host: call ``jax.distributed.initialize()`` in every process before anything else touches JAX;
``jax.devices()`` then lists every host's devices, and ``devices=len(jax.devices())`` shards over all of them.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..._errors import SpecError

AXIS = "data"


def resolve_mesh(devices) -> Mesh | None:
    """The one-axis mesh ``devices=`` names (see the module docstring), or ``None`` for no sharding."""
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1:
            raise SpecError(f"devices= takes a one-axis jax.sharding.Mesh (the data axis), got axes "
                            f"{devices.axis_names}.")
        return Mesh(devices.devices.reshape(-1), (AXIS,))
    available = jax.devices()
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = int(devices)
        if n < 1:
            raise SpecError(f"devices must be at least 1, got {n}.")
        if n > len(available):
            hint = (" On a CPU, start the process with XLA_FLAGS=--xla_force_host_platform_device_count="
                    f"{n} to split the host into {n} devices." if available[0].platform == "cpu" else "")
            raise SpecError(f"devices={n} but JAX sees {len(available)} device(s): "
                            f"{', '.join(str(d) for d in available)}.{hint}")
        return Mesh(np.array(available[:n]), (AXIS,))
    try:
        devs = list(devices)
    except TypeError:
        raise SpecError(f"devices must be None, a number of devices, a list of jax.Device or a "
                        f"jax.sharding.Mesh, got {devices!r}.") from None
    if not devs or not all(isinstance(d, jax.Device) for d in devs):
        raise SpecError(f"devices must be a non-empty list of jax.Device (from jax.devices()), got {devices!r}.")
    return Mesh(np.array(devs), (AXIS,))


def batch_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """Split axis ``axis`` of an ``ndim``-dimensional array over the mesh; replicate the other axes."""
    spec = [None] * ndim
    spec[axis] = AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimiser state, times)."""
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(batch: int, mesh: Mesh, what: str = "batch") -> None:
    """A data-parallel step splits the batch evenly: refuse sizes the device count does not divide."""
    n = mesh.devices.size
    if batch % n:
        raise SpecError(f"the {what} of {batch} samples cannot be split evenly over {n} devices: use a {what} "
                        f"size that is a multiple of {n} (e.g. {batch - batch % n or n}), or fewer devices.")


def _place(array, sharding: NamedSharding):
    # One process: a plain device_put. Several (jax.distributed): every process holds the whole host array, and
    # each builds the global array from the slices its own devices hold.
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    host = np.asarray(array)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put_batch(mesh: Mesh | None, array, axis: int = 0):
    """``array`` split along ``axis`` over the mesh (or unchanged without one)."""
    if mesh is None:
        return array
    return _place(array, batch_sharding(mesh, np.ndim(array), axis))


def put_replicated(mesh: Mesh | None, tree):
    """``tree`` replicated on every device of the mesh (or unchanged without one)."""
    if mesh is None:
        return tree
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda leaf: _place(leaf, sharding), tree)
