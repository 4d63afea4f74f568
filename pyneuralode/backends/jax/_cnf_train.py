"""Native JAX training of a CNF: parameters and optax state stay on the device, one jit-compiled step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..._errors import non_finite_error
from ..._flow_trainer import FlowStepInfo
from ..._solution import Stats
from ._sharding import resolve_mesh
from ._train import OptaxState


class JaxFlowTrainer(OptaxState):
    """Runs :class:`pyneuralode.FlowTrainer` steps for a :class:`._cnf.JaxCNFProgram`."""

    def __init__(self, program, optimizer, loss, *, devices=None):
        self.program = program
        self.tx = optimizer.to_optax()
        self.mesh = resolve_mesh(devices)
        weights = np.array([loss.kinetic, loss.jacobian])
        regularised = loss.regularised

        def step(params, opt_state, x, eps):
            value, (g_params, _, probe), (nll, kin, jac, stats) = program.value_and_grad_fn(
                params, x, eps, jnp.asarray(weights, params.dtype), regularised)
            updates, opt_state = self.tx.update(g_params, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, jnp.stack([value, nll, kin, jac]), stats, probe

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.params_dev = self.opt_state = None

    def init(self, params: np.ndarray) -> None:
        self._start(params)

    def step(self, x, eps) -> FlowStepInfo:
        self.params_dev, self.opt_state, values, stats, probe = self._step(
            self.params_dev, self.opt_state, self.shard(jnp.asarray(x)),
            None if eps is None else self.shard(jnp.asarray(eps)))
        values, stats, probe = jax.device_get((values, stats, probe))
        forward = self.program.forward_stats(stats)
        backward = self.program.backward_stats(probe)
        if not np.all(np.isfinite(values)):
            raise non_finite_error("loss")
        value, nll, kin, jac = (float(v) for v in values)
        return FlowStepInfo(value, nll, kin, jac, Stats(**forward, **backward))

