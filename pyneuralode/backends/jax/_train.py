"""Native JAX training: parameters and optax state stay on the device; one jit-compiled step per batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..._errors import non_finite_error
from ..._solution import Stats
from ._program import _FORWARD, _pack
from ._sharding import check_divisible, put_batch, put_replicated, resolve_mesh


class OptaxState:
    """Mixin: device-resident ``params_dev`` and optax ``opt_state``, read and restored as numpy arrays.

    With a device mesh (``devices=``) both are replicated on every device and each batch is split over the mesh
    (``shard``), so the one compiled step runs data-parallel (see :mod:`._sharding`).
    """

    mesh = None

    def _start(self, params) -> None:
        self.params_dev = put_replicated(self.mesh, jnp.asarray(params))
        self.opt_state = put_replicated(self.mesh, self.tx.init(self.params_dev))

    def shard(self, array, axis: int = 0, what: str = "batch"):
        """``array`` split over the mesh along its batch ``axis`` (unchanged without a mesh)."""
        if self.mesh is not None:
            check_divisible(np.shape(array)[axis], self.mesh, what)
        return put_batch(self.mesh, array, axis)

    def params(self) -> np.ndarray:
        return np.array(self.params_dev)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        return {f"opt_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}

    def load_optimizer_arrays(self, arrays) -> None:
        treedef = jax.tree_util.tree_structure(self.opt_state)
        leaves = [jnp.asarray(arrays[f"opt_{i}"]) for i in range(treedef.num_leaves)]
        self.opt_state = put_replicated(self.mesh, jax.tree_util.tree_unflatten(treedef, leaves))


class JaxTrainer(OptaxState):
    """Runs :class:`pyneuralode.train.Trainer` steps for a :class:`JaxProgram`."""

    def __init__(self, program, optimizer, loss_type, *, devices=None):
        self.program = program
        self.tx = optimizer.to_optax()
        self.mesh = resolve_mesh(devices)
        reduce = loss_type.reduce

        def step(params, opt_state, y0, ts, grid, target):
            value, (g_params, _, probe), (_, stats) = program.value_and_grad_fn(params, y0, ts, grid, target,
                                                                                 reduce)
            updates, opt_state = self.tx.update(g_params, opt_state, params)
            # Everything the host reads, packed into one array: one device-to-host transfer per step.
            return optax.apply_updates(params, updates), opt_state, _pack([value, *(stats[k] for k in _FORWARD),
                                                                           *probe])

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.params_dev = self.opt_state = None

    def init(self, params: np.ndarray) -> None:
        self._start(params)

    def step(self, y0, ts, target):
        # numpy goes straight into the compiled step: jit's dispatch transfers it faster than jnp.asarray.
        batched = y0.ndim == len(self.program.model.field.in_shape or (y0.shape[-1],)) + 1
        grid = self.program.grid(ts)
        self.params_dev, self.opt_state, report = self._step(
            self.params_dev, self.opt_state, self.shard(y0 if batched else y0[None]), ts, grid,
            self.shard(target if batched else target[:, None], axis=1))
        value, nfe_f, accepted, rejected, _, failed, nfe_b, back_failed, back_acc, back_rej = (
            np.asarray(report).tolist())
        self.program.raise_failure(failed)
        self.program.raise_failure(back_failed, where="backward (adjoint) solve")
        if not np.isfinite(value):
            raise non_finite_error("loss")
        return value, Stats(nfe_forward=int(nfe_f), nfe_backward=int(round(nfe_b)), steps_accepted=int(accepted),
                            steps_rejected=int(rejected), backward_steps_accepted=int(round(back_acc)),
                            backward_steps_rejected=int(round(back_rej)))

