"""A :class:`pyneuralode.Network` compiled for JAX: pure functions of the flat parameters, jit-compiled.

The spec is compiled node by node: ``Sequential`` chains, ``Residual`` adds its input, every other layer goes
through the graph compiler (:func:`._field.compile_field`) on its own slice of the flat vector (a subtree's
parameters are contiguous in the depth-first layout), and each ``ODEBlock`` is solved by the
:class:`._program.JaxProgram` of its own :class:`pyneuralode.ODEModel` — the same diffrax solve, adjoints and
exact NFE counting (step formula forward; VJP probe or counted backsolve backward). Each block gets one row of a
``(blocks, 4)`` probe array, so ``d loss / d probes`` carries every block's backward counts.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..._blocks import ODEBlock, Residual
from ..._classify import CrossEntropy
from ..._errors import NotSupportedError, SpecError, non_finite_error, trainer_not_initialised
from ..._layers import Sequential
from ..._params import num_params
from ..._solution import Stats
from ._counting import PROBE_SIZE
from ._diffrax import fixed_grid
from ._field import compile_field
from ._program import JaxProgram, backward_count
from ._sharding import resolve_mesh
from ._train import OptaxState, all_finite, optax_step, solves_ok
from ._x64 import require_x64_for_native, x64_scoped


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy with integer labels (optax)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


_LOSSES = {CrossEntropy: cross_entropy}


def loss_fn(loss):
    """The JAX implementation of a classification loss object."""
    if type(loss) not in _LOSSES:
        raise NotSupportedError(f"{type(loss).__name__} is not available on backend 'jax'.")
    return _LOSSES[type(loss)]


class _Block:
    """One ODE block: its JaxProgram, static save times and step grid, and its probe row."""

    def __init__(self, block: ODEBlock, network, index: int):
        self.program = JaxProgram(block.as_model(backend="jax", dtype=network.dtype, device=network.device))
        ts = np.array([0.0, block.t1], dtype=network.dtype)
        grid = fixed_grid(block.control, ts) if not block.solver.adaptive else np.zeros(0, ts.dtype)
        self.ts, self.grid, self.index = ts, grid, index

    def __call__(self, params, y, probes):
        ys, stats = self.program.predict_fn(params, y, jnp.asarray(self.ts), jnp.asarray(self.grid),
                                            probes[self.index])
        return ys[-1], stats


@x64_scoped
class JaxNetworkProgram:
    """The JAX program of one :class:`pyneuralode.Network`; numpy in and out, pure functions inside."""

    def __init__(self, network):
        self.network = network
        self.blocks: list[_Block] = []
        self.forward = self._compile(network.spec, 0)
        self.dtype = jnp.dtype(network.dtype)
        self._apply_jit = jax.jit(self.apply_fn)
        self._vg_jit = jax.jit(self.value_and_grad_fn, static_argnums=(3,))

    # ------------------------------------------------------------------ compiling the spec
    def _compile(self, layer, offset: int):
        """``node(params, x, probes) -> (y, [block stats])`` for ``layer`` whose parameters start at ``offset``."""
        if isinstance(layer, Sequential):
            nodes, start = [], offset
            for child in layer.layers:
                nodes.append(self._compile(child, start))
                start += num_params(child)

            def sequential(params, x, probes):
                stats = []
                for node in nodes:
                    x, s = node(params, x, probes)
                    stats += s
                return x, stats
            return sequential
        stop = offset + num_params(layer)
        if isinstance(layer, Residual):
            inner = self._compile(layer.layer, offset)

            def residual(params, x, probes):
                y, stats = inner(params, x, probes)
                return x + y, stats
            return residual
        if isinstance(layer, ODEBlock):
            block = _Block(layer, self.network, len(self.blocks))
            self.blocks.append(block)
            return lambda params, x, probes: (lambda y, s: (y, [s]))(*block(params[offset:stop], x, probes))
        field = compile_field(layer)
        return lambda params, x, probes: (field(params[offset:stop], jnp.zeros((), x.dtype), x), [])

    # ------------------------------------------------------------------ pure functions
    def new_probes(self):
        return jnp.zeros((max(1, len(self.blocks)), PROBE_SIZE), self.dtype)

    def apply_fn(self, params, x):
        """``(logits, [block stats])`` — pure and jit-able."""
        return self.forward(params, x, self.new_probes())

    def value_and_grad_fn(self, params, x, labels, loss):
        """``((value, (logits, [block stats])), (grad_params, grad_probes))`` — pure and jit-able."""
        reduce = loss_fn(loss)

        def objective(params, probes):
            logits, stats = self.forward(params, x, probes)
            return reduce(logits, labels), (logits, stats)

        return jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(params, self.new_probes())

    # ------------------------------------------------------------------ numpy API
    def block_stats(self, stats, probe_grad=None) -> list[Stats]:
        """Per-block :class:`Stats` from the compiled stats (and probe gradients); raises on solver failure."""
        out = []
        for block, s in zip(self.blocks, jax.device_get(stats)):
            forward = block.program._forward_stats(s)
            if probe_grad is None:
                out.append(Stats(**forward))
                continue
            row = probe_grad[block.index]
            block.program.raise_failure(row[1], where="backward (adjoint) solve")
            out.append(Stats(**forward, nfe_backward=backward_count(block.program.model, row[0]),
                             backward_steps_accepted=int(round(row[2])),
                             backward_steps_rejected=int(round(row[3]))))
        return out

    def apply(self, params, x):
        logits, stats = jax.block_until_ready(self._apply_jit(jnp.asarray(params), jnp.asarray(x)))
        block_stats = self.block_stats(stats)
        logits = np.asarray(logits)
        if not np.all(np.isfinite(logits)):
            raise non_finite_error("network output")
        return logits, block_stats

    def value_and_grad(self, params, x, labels, loss):
        (value, (logits, stats)), (gp, gprobe) = jax.block_until_ready(
            self._vg_jit(jnp.asarray(params), jnp.asarray(x), jnp.asarray(labels), loss))
        block_stats = self.block_stats(stats, np.asarray(gprobe))
        value, gp = float(value), np.asarray(gp)
        if not (np.isfinite(value) and np.all(np.isfinite(gp))):
            raise non_finite_error("loss or its gradient")
        return value, gp, np.asarray(logits), block_stats

    def make_trainer(self, optimizer, loss, *, devices=None):
        """A native training loop (optimiser state kept in the backend's arrays; data-parallel over ``devices``)."""
        return JaxNetworkTrainer(self, optimizer, loss, devices=devices)

    def native(self, params):
        require_x64_for_native(self.dtype)
        return NativeNetwork(params=jnp.asarray(params, self.dtype), probes=self.new_probes(), program=self)


class NativeNetwork(eqx.Module):
    """The JAX-native face of a network: an equinox module ``net(x) -> logits`` (batched NCHW ``x``).

    Differentiable with ``jax.grad`` (through each block's adjoint) and jit-able. ``params`` is the canonical
    flat vector (``with_params(flat)`` replaces it); ``apply_with_stats(x)`` also returns each ODE block's
    forward counts (JAX scalars, with the failure flags ``max_steps``/``failed``); row ``k`` of the gradient of
    ``probes`` carries block ``k``'s backward counts (read it with ``backward_counts``).
    """

    params: jax.Array
    probes: jax.Array
    program: JaxNetworkProgram = eqx.field(static=True)

    def with_params(self, params) -> NativeNetwork:
        """A copy with the canonical flat vector ``params``."""
        return eqx.tree_at(lambda n: n.params, self, jnp.asarray(params, self.params.dtype))

    def apply_with_stats(self, x):
        """``(logits, [block stats])``."""
        return self.program.forward(self.params, x, self.probes)

    def __call__(self, x):
        return self.apply_with_stats(x)[0]


@x64_scoped
class JaxNetworkTrainer(OptaxState):
    """A native training loop for a network: one jit-compiled function does the forward pass, the gradient
    (through each block's adjoint) and the optax update; parameters and optimiser state stay JAX arrays
    (replicated over ``devices``, with each batch split over them, when given)."""

    def __init__(self, program: JaxNetworkProgram, optimizer, loss, *, devices=None):
        if optimizer.needs_value_fn:
            raise SpecError("A network trains on mini-batches: use pn.Adam, pn.RMSprop or pn.SGD (a line-search "
                            "optimiser such as pn.LBFGS needs a deterministic full-batch loss; see pn.Trainer).")
        self.program, self.loss = program, loss
        self.tx = optimizer.to_optax()
        self.mesh = resolve_mesh(devices)

        def step(params, opt_state, x, labels):
            (value, (logits, stats)), (grad, gprobe) = program.value_and_grad_fn(params, x, labels, loss)
            finite = jnp.isfinite(value) & all_finite(grad)
            ok = finite
            for s, probe_row in zip(stats, gprobe):
                ok = ok & solves_ok(s, probe_row)
            params, opt_state = optax_step(self.tx, params, opt_state, grad, ok)
            return params, opt_state, value, logits, stats, gprobe, finite

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.params_dev = self.opt_state = None

    def init(self, params) -> None:
        self._start(jnp.asarray(params, self.program.dtype))

    def step(self, x, labels):
        """One update on the batch; returns ``(loss, logits, [block stats])`` (numpy)."""
        if self.params_dev is None:
            raise trainer_not_initialised()
        # The compiled step keeps the old state unless it is clean; the host raises exactly when it is not.
        self.params_dev, self.opt_state, value, logits, stats, gprobe, finite = self._step(
            self.params_dev, self.opt_state, self.shard(jnp.asarray(x)), self.shard(jnp.asarray(labels)))
        block_stats = self.program.block_stats(stats, np.asarray(gprobe))
        if not finite:
            raise non_finite_error("loss or its gradient")
        return float(value), np.asarray(logits), block_stats

    def get_params(self) -> np.ndarray:
        return self.params()

    def state_arrays(self) -> dict:
        """Parameters and optimiser state as named numpy arrays (for :func:`pyneuralode.train.save_checkpoint`)."""
        return {"params": self.get_params(), **self.optimizer_arrays()}

    def load_state_arrays(self, arrays) -> None:
        """Restore what :meth:`state_arrays` returned."""
        self.init(arrays["params"])
        self.load_optimizer_arrays({k: v for k, v in arrays.items() if k != "params"})
