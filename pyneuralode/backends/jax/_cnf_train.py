"""Native JAX training of a CNF: parameters and optax state stay on the device, one jit-compiled step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..._errors import non_finite_error
from ..._flow_trainer import FlowStepInfo
from ..._solution import Stats
from ._sharding import resolve_mesh
from ._train import OptaxState, all_finite, optax_step, solves_ok
from ._x64 import x64_scoped


@x64_scoped
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
            finite = jnp.isfinite(value) & all_finite(g_params)
            params, opt_state = optax_step(self.tx, params, opt_state, g_params, finite & solves_ok(stats, probe))
            return params, opt_state, jnp.stack([value, nll, kin, jac]), stats, probe, finite

        self._step = jax.jit(step, donate_argnums=(0, 1))
        self.params_dev = self.opt_state = None

    def init(self, params: np.ndarray) -> None:
        self._start(params)

    def step(self, x, eps) -> FlowStepInfo:
        # The compiled step keeps the old state unless it is clean; the host raises exactly when it is not.
        self.params_dev, self.opt_state, values, stats, probe, finite = self._step(
            self.params_dev, self.opt_state, self.shard(jnp.asarray(x)),
            None if eps is None else self.shard(jnp.asarray(eps)))
        values, stats, probe, finite = jax.device_get((values, stats, probe, finite))
        forward = self.program.forward_stats(stats)
        backward = self.program.backward_stats(probe)
        if not finite:
            raise non_finite_error("loss or its gradient")
        value, nll, kin, jac = (float(v) for v in values)
        return FlowStepInfo(value, nll, kin, jac, Stats(**forward, **backward))

