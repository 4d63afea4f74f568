"""The RNN baseline of the latent-ODE spirals (Table 2's "RNN" row), built from the same spec layers (JAX).

An Elman :class:`pyneuralode.RNNCell` runs forwards over the 100-point grid with the time difference ``Δt`` as an
input and an observed/unobserved flag: at each time it first predicts ``ŷ_k = out(cell([0, 0, Δt_k, h]))`` (what it
expects before reading the point), then, where the series is observed, reads it: ``h = cell([x_k, 1, Δt_k, h])``
(otherwise ``h`` is the prediction's state). Trained on the squared error of ``ŷ`` at the observed points; evaluated
like the latent ODE, ``ŷ`` at all 100 times against the noise-free spiral.
"""

from __future__ import annotations

import numpy as np

from .._latent import RNNCell
from .._layers import Linear, Sequential
from .._params import init_params, num_params
from ..train._host import host_update


class RNNBaseline:
    """The baseline's spec (``Sequential(cell, out)`` as the parameter container) and its jit-compiled JAX step."""

    def __init__(self, *, obs_dim: int = 2, hidden: int = 25, dtype: str = "float32"):
        import jax
        import jax.numpy as jnp

        from ..backends.jax._field import compile_field

        self.spec = Sequential(RNNCell(obs_dim + 1, hidden), Linear(hidden, obs_dim))
        self.dtype, self.hidden = dtype, hidden
        n_cell = num_params(self.spec.layers[0])
        cell, out = compile_field(self.spec.layers[0]), compile_field(self.spec.layers[1])
        zero = jnp.zeros(())

        def predict(params, ts, x, mask):
            pc, po = params[:n_cell], params[n_cell:]
            batch = x.shape[0]
            dts = jnp.concatenate([jnp.zeros(1, ts.dtype), jnp.diff(ts)])

            def step(h, inputs):
                dt, xk, mk = inputs
                dtb = jnp.full((batch, 1), dt, x.dtype)
                h_pred = cell(pc, zero, jnp.concatenate([jnp.zeros_like(xk), jnp.zeros((batch, 1), x.dtype), dtb, h], -1))
                h_obs = cell(pc, zero, jnp.concatenate([xk, jnp.ones((batch, 1), x.dtype), dtb, h], -1))
                return jnp.where(mk[:, None], h_obs, h_pred), out(po, zero, h_pred)

            _, ys = jax.lax.scan(step, jnp.zeros((batch, hidden), x.dtype), (dts, jnp.swapaxes(x, 0, 1), mask.T))
            return jnp.swapaxes(ys, 0, 1)

        def loss(params, ts, x, mask):
            err = ((predict(params, ts, x, mask) - x) ** 2).sum(-1)
            return jnp.sum(err * mask) / jnp.sum(mask)

        self._predict = jax.jit(predict)
        self._value_and_grad = jax.jit(jax.value_and_grad(loss))

    @property
    def num_params(self) -> int:
        return num_params(self.spec)

    def init(self, seed: int = 0) -> np.ndarray:
        return init_params(self.spec, seed, self.dtype)

    def predict(self, params, ts, x, mask) -> np.ndarray:
        """``ŷ`` at every time of the grid ``ts``: ``(batch, len(ts), obs_dim)``."""
        from ..backends.jax._x64 import x64_scope  # float64 without flipping the process-wide flag
        with x64_scope(self.dtype):
            return np.asarray(self._predict(params, ts, np.where(mask[..., None], x, 0.0).astype(self.dtype), mask))

    def value_and_grad(self, params, ts, x, mask):
        from ..backends.jax._x64 import x64_scope
        with x64_scope(self.dtype):
            value, grad = self._value_and_grad(params, ts, np.where(mask[..., None], x, 0.0).astype(self.dtype), mask)
            return float(value), np.asarray(grad)


def train_rnn(model: RNNBaseline, data, *, iters: int, batch_size: int, lr: float, seed: int):
    """Adam (host rule) on random training batches; returns ``(params, losses)``."""
    from .._optim import Adam
    params, state, rng, losses = model.init(seed), {}, np.random.default_rng(seed + 2), []
    optimizer = Adam(lr=lr)
    for step in range(iters):
        batch = rng.choice(data.train, min(batch_size, len(data.train)), replace=False)
        value, grad = model.value_and_grad(params, data.ts, data.observed[batch], data.mask[batch])
        params, state = host_update(optimizer, params, grad, state, step)
        params = params.astype(model.dtype)
        losses.append(value)
    return params, losses


def rnn_test_rmse(model: RNNBaseline, params, data) -> float:
    pred = model.predict(params, data.ts, data.observed[data.test], data.mask[data.test])
    return float(np.sqrt(np.mean((pred - data.truth[data.test]) ** 2)))
