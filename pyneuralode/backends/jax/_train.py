"""Native JAX training: parameters and optax state stay on the device; one jit-compiled step per batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..._errors import max_steps_error, non_finite_error
from ..._solution import Stats


class JaxTrainer:
    """Runs :class:`pyneuralode.train.Trainer` steps for a :class:`JaxProgram`."""

    def __init__(self, program, optimizer, loss_type):
        self.program = program
        self.tx = optimizer.to_optax()
        reduce = loss_type.reduce

        def step(params, opt_state, y0, ts, grid, target):
            value, (g_params, _, probe), (_, stats) = program.value_and_grad_fn(params, y0, ts, grid, target,
                                                                                 reduce)
            updates, opt_state = self.tx.update(g_params, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value, stats, probe

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.params_dev = self.opt_state = None

    def init(self, params: np.ndarray) -> None:
        self.params_dev = jnp.asarray(params)
        self.opt_state = self.tx.init(self.params_dev)

    def step(self, y0, ts, target):
        batched, _, y, t, grid = self.program._arrays(self.params_dev, y0, ts)
        target = jnp.asarray(target if batched else target[:, None])
        self.params_dev, self.opt_state, value, stats, probe = self._step(
            self.params_dev, self.opt_state, y, t, grid, target)
        value, stats, probe = jax.device_get((value, stats, probe))
        if stats["max_steps"] or probe[1]:
            raise max_steps_error(self.program.model.control.max_steps,
                                  where="forward solve" if stats["max_steps"] else "backward (adjoint) solve")
        if not np.isfinite(value):
            raise non_finite_error("loss")
        return float(value), Stats(nfe_forward=int(stats["nfe_forward"]), nfe_backward=int(round(probe[0])),
                                   steps_accepted=int(stats["steps_accepted"]),
                                   steps_rejected=int(stats["steps_rejected"]),
                                   backward_steps_accepted=int(round(probe[2])),
                                   backward_steps_rejected=int(round(probe[3])))

    def params(self) -> np.ndarray:
        return np.array(self.params_dev)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        return {f"opt_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}

    def load_optimizer_arrays(self, arrays) -> None:
        treedef = jax.tree_util.tree_structure(self.opt_state)
        leaves = [jnp.asarray(arrays[f"opt_{i}"]) for i in range(treedef.num_leaves)]
        self.opt_state = jax.tree_util.tree_unflatten(treedef, leaves)
