"""A :class:`pyneuralode.LatentODE` compiled for JAX: the parts through the graph compiler, the latent solve through
the :class:`._program.JaxProgram` of its ODE model (same diffrax solve, adjoints and exact NFE), the encoder as a
``lax.scan`` running backwards over the union of observation times."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..._errors import non_finite_error
from ..._latent import LatentValueAndGrad, gaussian_log_likelihood, normal_kl
from ..._params import num_params
from ..._solution import Stats
from ._counting import new_probe
from ._field import compile_field
from ._program import JaxProgram, backward_count
from ._x64 import x64_scoped


@x64_scoped
class JaxLatentProgram:
    """The JAX program of one latent ODE; numpy in and out, pure jit-compiled functions inside."""

    def __init__(self, model):
        self.model = model
        self.ode = JaxProgram(model.ode_model())
        self.dtype = jnp.dtype(model.dtype)
        slices, offset = {}, 0
        for name, part in zip(model.parts.NAMES, model.parts.parts):
            slices[name] = (offset, offset + num_params(part), compile_field(part))
            offset += num_params(part)
        self.parts = slices
        self._vg_jit = jax.jit(self.value_and_grad_fn)
        self._encode_jit = jax.jit(self.encode_fn)
        self._predict_jit = jax.jit(self.predict_fn)

    def _apply(self, name, params, y):
        start, stop, fn = self.parts[name]
        return fn(params[start:stop], jnp.zeros((), y.dtype), y)

    # ------------------------------------------------------------------ pure functions
    def encode_fn(self, params, ts, x, mask):
        """``(mean, log_var)`` of q(z(t0)): the RNN cell backwards over the union of times, updating each series
        only at its own observations, with the time since the observation read before (0 for the first)."""
        batch = x.shape[0]

        def step(carry, inputs):
            h, seen, t_prev = carry
            t, xk, mk = inputs
            dt = jnp.where(seen, t_prev - t, 0.0).astype(x.dtype)
            h_new = self._apply("encoder", params, jnp.concatenate([xk, dt[:, None], h], axis=-1))
            h = jnp.where(mk[:, None], h_new, h)
            return (h, seen | mk, jnp.where(mk, t, t_prev)), None

        init = (jnp.zeros((batch, self.model.rnn_hidden), x.dtype), jnp.zeros(batch, bool),
                jnp.zeros(batch, x.dtype))
        (h, _, _), _ = jax.lax.scan(step, init, (ts, jnp.swapaxes(x, 0, 1), mask.T), reverse=True)
        q = self._apply("head", params, h)
        return q[:, :self.model.latent_dim], q[:, self.model.latent_dim:]

    def _decode(self, params, zs):
        """``(B, T, obs)`` from latent states ``(T, B, latent)``."""
        steps, batch, latent = zs.shape
        out = self._apply("decoder", params, zs.reshape(steps * batch, latent))
        return jnp.swapaxes(out.reshape(steps, batch, -1), 0, 1)

    def _field_params(self, params):
        start, stop, _ = self.parts["field"]
        return params[start:stop]

    def predict_fn(self, params, ts, x, mask, pred_ts, eps, grid):
        mean, log_var = self.encode_fn(params, ts, x, mask)
        z0 = mean + jnp.exp(0.5 * log_var) * eps
        zs, stats = self.ode.solve_fn(self._field_params(params), z0, pred_ts, grid)
        return self._decode(params, zs), stats

    def loss_fn(self, params, ts, x, mask, eps, probe, grid):
        """``(-mean ELBO, (log-likelihood, KL, stats))``; ``d/d probe`` carries the backward counts."""
        mean, log_var = self.encode_fn(params, ts, x, mask)
        z0 = mean + jnp.exp(0.5 * log_var) * eps
        zs, stats = self.ode.predict_fn(self._field_params(params), z0, ts, grid, probe)
        ll = gaussian_log_likelihood(jnp, x, self._decode(params, zs), mask.astype(x.dtype), self.model.noise_std)
        kl = normal_kl(jnp, mean, log_var)
        return -jnp.mean(ll - kl), (ll, kl, stats)

    def value_and_grad_fn(self, params, ts, x, mask, eps, grid):
        return jax.value_and_grad(self.loss_fn, argnums=(0, 5), has_aux=True)(
            params, ts, x, mask, eps, new_probe(self.dtype), grid)

    # ------------------------------------------------------------------ numpy API
    def stats(self, stats, probe_grad=None) -> Stats:
        forward = self.ode._forward_stats(jax.device_get(stats))
        if probe_grad is None:
            return Stats(**forward)
        self.ode.raise_failure(probe_grad[1], where="backward (adjoint) solve")
        return Stats(**forward, nfe_backward=backward_count(self.model, probe_grad[0]),
                     backward_steps_accepted=int(round(probe_grad[2])),
                     backward_steps_rejected=int(round(probe_grad[3])))

    def encode(self, params, ts, x, mask):
        return jax.device_get(self._encode_jit(params, ts, x, mask))

    def predict(self, params, ts, x, mask, pred_ts, eps):
        out, stats = self._predict_jit(params, ts, x, mask, pred_ts, eps, jnp.asarray(self.ode.grid(pred_ts)))
        self.stats(stats)
        out = np.asarray(out)
        if not np.all(np.isfinite(out)):
            raise non_finite_error("prediction")
        return out

    def value_and_grad(self, params, ts, x, mask, eps) -> LatentValueAndGrad:
        (value, (ll, kl, stats)), (grad, gprobe) = jax.block_until_ready(
            self._vg_jit(params, ts, x, mask, eps, jnp.asarray(self.ode.grid(ts))))
        out = LatentValueAndGrad(float(value), np.asarray(grad), np.asarray(ll), np.asarray(kl),
                                 self.stats(stats, np.asarray(gprobe)))
        if not (np.isfinite(out.value) and np.all(np.isfinite(out.grad_params))):
            raise non_finite_error("loss or its gradient")
        return out
