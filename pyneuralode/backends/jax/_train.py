"""Native JAX training: parameters and optax state stay on the device; one jit-compiled step per batch.

A step that fails changes nothing: the compiled step computes the update and a ``clean`` flag (solves
successful, loss and gradient finite) and keeps the old parameters and optimiser state, selected with
``jnp.where`` inside the same compiled function, unless the flag is set. The host raises exactly when the flag
is not set, so a raised error always leaves the trainer as it was before the step (and costs no extra transfer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..._errors import SpecError, non_finite_error
from ..._losses import cast_arrays
from ..._solution import Stats, counted
from ._counting import new_probe
from ._program import _FORWARD, _pack, backward_count, unbatch_like
from ._sharding import check_divisible, put_batch, put_replicated, resolve_mesh
from ._x64 import x64_scoped


def all_finite(tree) -> jax.Array:
    """Inside jit: whether every element of every leaf of ``tree`` is finite (a scalar bool)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


def solves_ok(stats, probe_grad) -> jax.Array:
    """Inside jit: the forward solve succeeded (its failure kind is OK) and so did the backward one (the probe's
    failure entry) — exactly when the host raises nothing for them."""
    return (stats["failed"] == 0) & ~stats["max_steps"] & (probe_grad[1] == 0)


def optax_step(tx, params, opt_state, grads, ok, **extra):
    """Inside jit: optax's update of ``(params, opt_state)``, committed only where ``ok`` (else the inputs)."""
    updates, new_state = tx.update(grads, opt_state, params, **extra)
    new = (optax.apply_updates(params, updates), new_state)
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, (params, opt_state))


class OptaxState:
    """Mixin: device-resident ``params_dev`` and optax ``opt_state``, read and restored as numpy arrays.

    With a device mesh (``devices=``) both are replicated on every device and each batch is split over the mesh
    (``shard``), so the one compiled step runs data-parallel (see :mod:`._sharding`).
    """

    mesh = None

    def _start(self, params) -> None:
        self.params_dev = put_replicated(self.mesh, jnp.asarray(params))
        # Strongly typed: optax initialises some leaves (L-BFGS's line-search info) as weak-typed scalars that its
        # update returns strongly typed, and a changed type would compile the step a second time.
        state = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=x.dtype), self.tx.init(self.params_dev))
        self.opt_state = put_replicated(self.mesh, state)

    def shard(self, array, axis: int = 0, what: str = "batch"):
        """``array`` split over the mesh along its batch ``axis`` (unchanged without a mesh)."""
        if self.mesh is not None:
            check_divisible(np.shape(array)[axis], self.mesh, what)
        return put_batch(self.mesh, array, axis)

    def params(self) -> np.ndarray:
        return np.array(self.params_dev)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves(self.opt_state)
        return {f"opt_{i}": np.array(leaf) for i, leaf in enumerate(leaves)}  # copies: buffers are donated

    def load_optimizer_arrays(self, arrays) -> None:
        treedef = jax.tree_util.tree_structure(self.opt_state)
        # optax's state is a fixed pytree: more arrays than its leaves are another optimiser's state (a JAX L-BFGS
        # state loaded into Adam fitted its first leaves and left half the parameters NaN after the next step)
        extra = sorted(set(arrays) - {f"opt_{i}" for i in range(treedef.num_leaves)}, key=lambda k: (len(k), k))
        if extra:
            raise SpecError(f"The state holds {', '.join(extra)}, which this trainer does not have: it was saved by "
                            "a trainer with another optimiser (or another model); load it into a trainer built "
                            "like the one that saved it.")
        leaves = [jnp.asarray(arrays[f"opt_{i}"]) for i in range(treedef.num_leaves)]
        self.opt_state = put_replicated(self.mesh, jax.tree_util.tree_unflatten(treedef, leaves))


@x64_scoped
class JaxTrainer(OptaxState):
    """Runs :class:`pyneuralode.train.Trainer` steps for a :class:`JaxProgram`.

    ``loss_type`` is the loss family (a loss type such as ``pn.MSE``, or a :func:`pyneuralode.loss` function);
    its ``evaluate`` is compiled into the step and each step's arrays (``loss.data()``) are its inputs. A
    line-search optimiser (``pn.LBFGS``) also gets the loss as a function of the parameters on the same batch;
    each of its trials is one more solve and gradient inside the same compiled step."""

    def __init__(self, program, optimizer, loss_type, *, devices=None):
        self.program = program
        self.tx = optimizer.to_optax()
        self.mesh = resolve_mesh(devices)
        # The compiled step depends only on the program, the optimiser spec and the loss family: trainers that share
        # them (a resumed run, Adam-then-L-BFGS restarts, tests) share one compilation.
        cache = program.__dict__.setdefault("_compiled_train_steps", {})
        key = (optimizer, loss_type, self.mesh)
        if key not in cache:
            cache[key] = _compile_step(program, optimizer, self.tx, loss_type.evaluate)
        self._step = cache[key]
        self.params_dev = self.opt_state = None

    def init(self, params: np.ndarray) -> None:
        self._start(params)

    def step(self, y0, ts, loss):
        # numpy goes straight into the compiled step: jit's dispatch transfers it faster than jnp.asarray.
        batched = y0.ndim == len(self.program.model.field.in_shape or (y0.shape[-1],)) + 1
        grid = self.program.grid(ts)
        data = cast_arrays(loss.data(), self.program.dtype)
        if batched:  # arrays shaped like the solution are split over the devices along their batch axis
            data = {k: self.shard(v, axis=1) if v.shape == data["target"].shape else v for k, v in data.items()}
        self.params_dev, self.opt_state, report = self._step(
            self.params_dev, self.opt_state, self.shard(y0 if batched else y0[None]), ts, grid, data)
        value, nfe_f, accepted, rejected, _, failed, nfe_b, back_failed, back_acc, back_rej, trials, finite = (
            np.asarray(report).tolist())
        self.program.raise_failure(failed)
        self.program.raise_failure(back_failed, where="backward (adjoint) solve")
        if not finite:
            raise non_finite_error("loss or its gradient")
        return value, Stats(nfe_forward=counted(nfe_f), nfe_backward=backward_count(self.program.model, nfe_b),
                            steps_accepted=int(accepted),
                            steps_rejected=int(rejected), backward_steps_accepted=int(round(back_acc)),
                            backward_steps_rejected=int(round(back_rej))), 1 + int(trials)


def _compile_step(program, optimizer, tx, kernel):
    """The jit-compiled training step ``(params, opt_state, y0, ts, grid, data) -> (params, opt_state, report)``."""
    line_search = optimizer.needs_value_fn

    def step(params, opt_state, y0, ts, grid, data):
        value, (g_params, _, probe), (_, stats) = program.value_and_grad_fn(params, y0, ts, grid, data, kernel)
        extra, trials = {}, 0
        if line_search:
            def value_fn(p):
                ys, _ = program.predict_fn(p, y0, ts, grid, new_probe(program.dtype))
                return kernel(jnp, unbatch_like(ys, data), data)
            extra = {"value": value, "grad": g_params, "value_fn": value_fn}
        # A failed step changes nothing: the update is committed only when the host will raise nothing.
        finite = jnp.isfinite(value) & all_finite(g_params)
        params, opt_state = optax_step(tx, params, opt_state, g_params, finite & solves_ok(stats, probe), **extra)
        if line_search:
            trials = optax.tree_utils.tree_get(opt_state, "num_linesearch_steps")
        # Everything the host reads, packed into one array: one device-to-host transfer per step.
        return params, opt_state, _pack([value, *(stats[k] for k in _FORWARD), *probe, trials, finite])

    # optax's L-BFGS state holds one array in two leaves (the line search's value/gradient), which XLA may not
    # donate twice: its state is not donated.
    return jax.jit(step, donate_argnums=(0,) if line_search else (0, 1))
