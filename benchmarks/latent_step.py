"""Latent-ODE training step: pyneuralode-JAX vs pyneuralode-torch vs a raw torchdiffeq loop (issue 15 item 5).

Same sizes and data for all three (torchdiffeq ``examples/latent_ode.py``'s model: recognition RNN 25 with time
differences, latent 4, field 4-20-4 ELU, decoder 4-20-2 ReLU, σ = 0.3), a batch of ``--batch`` spirals on the
100-point grid with 30 observations each (masks), Dopri5 at rtol 1e-3 / atol 1e-4, float32, backprop through the
solver (DirectAdjoint; ``odeint`` for the raw loop). Each configuration computes the -ELBO and its gradient on the
same weights and ε; calls are interleaved, medians after one warm-up call. The raw loop is written directly against
torch + torchdiffeq (the example's modules with the mask and Δt added), so the difference to pyneuralode-torch is
our overhead (counting, spec compilation, numpy at the edges). Writes ``benchmarks/results/latent_step.json``::

    python benchmarks/latent_step.py [--repeats 20] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def raw_torchdiffeq(model, params, ts, x, mask, eps):
    """``step()`` computing the -ELBO and gradients with hand-written torch modules and torchdiffeq's odeint."""
    import torch
    from torchdiffeq import odeint

    from pyneuralode import unflatten

    tensors = [torch.tensor(t, dtype=torch.float32, requires_grad=True) for t in unflatten(model.parts, params)]
    w_in, b_in, w_head, b_head, f1, fb1, f2, fb2, d1, db1, d2, db2 = tensors
    ts_t, x_t = torch.tensor(ts, dtype=torch.float32), torch.tensor(x, dtype=torch.float32)
    m_t, eps_t = torch.tensor(mask), torch.tensor(eps, dtype=torch.float32)
    latent = model.latent_dim

    def field(t, z):
        return torch.nn.functional.linear(torch.nn.functional.elu(torch.nn.functional.linear(z, f1, fb1)), f2, fb2)

    def step():
        batch = x_t.shape[0]
        h = torch.zeros(batch, model.rnn_hidden)
        seen, t_prev = torch.zeros(batch, dtype=torch.bool), torch.zeros(batch)
        for k in range(len(ts) - 1, -1, -1):
            mk = m_t[:, k]
            dt = torch.where(seen, t_prev - ts_t[k], torch.zeros(batch))
            h_new = torch.tanh(torch.nn.functional.linear(torch.cat([x_t[:, k], dt[:, None], h], -1), w_in, b_in))
            h = torch.where(mk[:, None], h_new, h)
            seen, t_prev = seen | mk, torch.where(mk, ts_t[k].expand(batch), t_prev)
        q = torch.nn.functional.linear(h, w_head, b_head)
        mean, log_var = q[:, :latent], q[:, latent:]
        zs = odeint(field, mean + torch.exp(0.5 * log_var) * eps_t, ts_t, rtol=model.control.rtol,
                    atol=model.control.atol, method="dopri5")
        xs = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(zs, d1, db1)), d2, db2).transpose(0, 1)
        sigma = model.noise_std
        ll = ((-0.5 * ((x_t - xs) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum(-1) * m_t).sum(-1)
        kl = 0.5 * (mean ** 2 + torch.exp(log_var) - log_var - 1).sum(-1)
        loss = -torch.mean(ll - kl)
        grads = torch.autograd.grad(loss, tensors)
        return float(loss.detach()), grads
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from pyneuralode.problems.latent import LatentConfig, latent_model, spiral_data

    cfg = LatentConfig(obs=30, spirals=args.batch + 1, train_size=args.batch)
    data = spiral_data(cfg)
    x, mask = np.where(data.mask[:args.batch, :, None], data.observed[:args.batch], 0.0), data.mask[:args.batch]
    model = latent_model(cfg)
    params = model.init(0)
    eps = np.random.default_rng(0).standard_normal((args.batch, cfg.latent_size)).astype(np.float32)
    torch_model = model.replace(backend="torch")
    calls = {"pyneuralode-jax": lambda: model.value_and_grad(params, data.ts, x, mask, eps=eps).value}
    calls["pyneuralode-torch"] = lambda: torch_model.value_and_grad(params, data.ts, x, mask, eps=eps).value
    raw = raw_torchdiffeq(model, params, data.ts, x, mask, eps)
    calls["raw torchdiffeq"] = lambda: raw()[0]
    values = {name: fn() for name, fn in calls.items()}            # warm-up (JAX compiles here)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():                              # interleaved
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    rows = {name: {"median_ms": 1e3 * float(np.median(t)), "p10_ms": 1e3 * float(np.percentile(t, 10)),
                   "p90_ms": 1e3 * float(np.percentile(t, 90)), "loss": float(values[name])}
            for name, t in times.items()}
    out = {"config": {**vars(args), "obs": 30, "times": 100, "dtype": "float32", "rtol": cfg.rtol, "atol": cfg.atol,
                      "torch_threads": 1, "note": "shared, heavily loaded 2-core machine: timings noisy; "
                                                  "ratios from these interleaved calls are the figures to read"},
           "results": rows}
    Path(args.results).mkdir(parents=True, exist_ok=True)
    (Path(args.results) / "latent_step.json").write_text(json.dumps(out, indent=2))
    for name, r in rows.items():
        print(f"{name:20s} {r['median_ms']:8.1f} ms  (p10 {r['p10_ms']:.1f}, p90 {r['p90_ms']:.1f})  "
              f"-ELBO {r['loss']:.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
