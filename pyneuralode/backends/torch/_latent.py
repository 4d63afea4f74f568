"""A :class:`pyneuralode.LatentODE` compiled for torch: the parts as spec-compiled modules, the latent solve as an
:class:`._network.ODEBlockModule` (the same torchdiffeq calls, counters and failure translation as an ODE model),
the encoder as a loop running backwards over the union of observation times."""

from __future__ import annotations

import numpy as np
import torch

from ..._blocks import ODEBlock
from ..._errors import non_finite_error
from ..._latent import LatentValueAndGrad, gaussian_log_likelihood, normal_kl
from ..._params import param_layout
from ._compile import VectorField, flat_grad, load_flat
from ._failures import BACKWARD, torchdiffeq_failures
from ._network import _DTYPES, ODEBlockModule


class LatentModule(torch.nn.Module):
    """The compiled latent ODE; parameters registered in canonical order (``load_flat``/``flat_grad`` work)."""

    def __init__(self, model, *, dtype, device):
        super().__init__()
        self.model = model
        encoder, head, field, decoder = model.parts.parts
        self.encoder = VectorField(encoder, dtype=dtype, device=device)
        self.head = VectorField(head, dtype=dtype, device=device)
        self.ode = ODEBlockModule(ODEBlock(field, solver=model.solver, control=model.control,
                                           adjoint=model.adjoint), dtype=dtype, device=device)
        self.decoder = VectorField(decoder, dtype=dtype, device=device)
        self._slots = param_layout(model.parts)
        self._slot_params = [p for part in (self.encoder, self.head, self.ode.field, self.decoder)
                             for p in part.flat_parameters()]

    def flat_parameters(self):
        return list(self._slot_params)

    def _call(self, part, y):
        return part(torch.zeros((), dtype=y.dtype, device=y.device), y)

    def encode(self, ts, x, mask):
        """``(mean, log_var)``: the cell backwards over the union of times (see the JAX program)."""
        batch = x.shape[0]
        h = x.new_zeros((batch, self.model.rnn_hidden))
        seen = torch.zeros(batch, dtype=torch.bool, device=x.device)
        t_prev = x.new_zeros(batch)
        for k in range(ts.shape[0] - 1, -1, -1):
            mk = mask[:, k]
            dt = torch.where(seen, t_prev - ts[k], torch.zeros_like(t_prev))
            h_new = self._call(self.encoder, torch.cat([x[:, k], dt[:, None], h], dim=-1))
            h = torch.where(mk[:, None], h_new, h)
            seen = seen | mk
            t_prev = torch.where(mk, ts[k].expand(batch), t_prev)
        q = self._call(self.head, h)
        latent = self.model.latent_dim
        return q[:, :latent], q[:, latent:]

    def decode(self, zs):
        steps, batch, latent = zs.shape
        return self._call(self.decoder, zs.reshape(steps * batch, latent)).reshape(steps, batch, -1).transpose(0, 1)

    def latent_path(self, ts, x, mask, eps, solve_ts):
        mean, log_var = self.encode(ts, x, mask)
        z0 = mean + torch.exp(0.5 * log_var) * eps
        return mean, log_var, self.ode.solve(z0, solve_ts)


class TorchLatentProgram:
    """The torch program of one latent ODE; numpy in and out."""

    def __init__(self, model):
        self.model = model
        self.dtype = _DTYPES[model.dtype]
        self.device = torch.device(model.device or "cpu")
        self.module = LatentModule(model, dtype=self.dtype, device=self.device)

    def _t(self, array, dtype=None):
        return torch.as_tensor(np.array(array), dtype=dtype or self.dtype, device=self.device)

    def _inputs(self, ts, x, mask):
        return self._t(ts), self._t(x), self._t(mask, torch.bool)

    def encode(self, params, ts, x, mask):
        load_flat(self.module, params)
        with torch.no_grad():
            mean, log_var = self.module.encode(*self._inputs(ts, x, mask))
        return mean.cpu().numpy(), log_var.cpu().numpy()

    def predict(self, params, ts, x, mask, pred_ts, eps):
        load_flat(self.module, params)
        self.module.ode.counter.reset(count_vjps=False)
        with torch.no_grad():
            _, _, zs = self.module.latent_path(*self._inputs(ts, x, mask), self._t(eps), self._t(pred_ts))
            out = self.module.decode(zs).cpu().numpy()
        if not np.all(np.isfinite(out)):
            raise non_finite_error("prediction")
        return out

    def loss_and_grads(self, ts, x, mask, eps):
        """``(loss, grads, ll, kl, stats)`` with the module's current weights, as tensors (for training loops)."""
        module, ode = self.module, self.module.ode
        ode.counter.reset(count_vjps=not ode.backsolve)
        mean, log_var, zs = module.latent_path(ts, x, mask, eps, ts)
        ll = gaussian_log_likelihood(torch, x, module.decode(zs), mask.to(x.dtype), self.model.noise_std)
        kl = normal_kl(torch, mean, log_var)
        loss = -torch.mean(ll - kl)
        ode.counter.phase = "backward"
        with torchdiffeq_failures(ode.counter, max_steps=self.model.control.max_steps, where=BACKWARD):
            grads = torch.autograd.grad(loss, module.flat_parameters(), allow_unused=True)
        ode.counter.last_output = None
        return loss, grads, ll, kl, ode.stats(backward=True)

    def value_and_grad(self, params, ts, x, mask, eps) -> LatentValueAndGrad:
        load_flat(self.module, params)
        loss, grads, ll, kl, stats = self.loss_and_grads(*self._inputs(ts, x, mask), self._t(eps))
        out = LatentValueAndGrad(float(loss.detach()), flat_grad(self.module, grads), ll.detach().cpu().numpy(),
                                 kl.detach().cpu().numpy(), stats)
        if not (np.isfinite(out.value) and np.all(np.isfinite(out.grad_params))):
            raise non_finite_error("loss or its gradient")
        return out
