"""CNF training benchmark (issue 6): moons, batch 512, JAX vs torch, exact vs Hutchinson, with/without RNODE,
beside the same training written directly against the raw libraries.

Per configuration: median ms per training iteration (compile excluded), mean NFE-F / NFE-B / solver steps over the
run and NFE-F over its last 50 iterations, the training NLL at the end (mean of the last 20 batches) and the
held-out NLL (2000 points, exact trace, evaluated by pyneuralode for every configuration). Model:
``MLP([2, 64, 64, 2], time_input=True)``, tanh, ``t ∈ [0, 1]``, Dopri5 at rtol = atol = 1e-5, float32, Adam
lr 1e-3; JAX trains with CheckpointAdjoint, torch with DirectAdjoint (backprop). Regularised runs use RNODE's
weights ``NLL(kinetic=0.01, jacobian=0.01)``.

Anchors (exact trace, same weights at the start, same batches, tolerances and optimiser):
``raw-diffrax-exact`` (:func:`raw_diffrax_exact`: ``diffeqsolve`` + ``RecursiveCheckpointAdjoint`` + optax, the
trace as diffrax's CNF example) and ``raw-torchdiffeq-exact`` (:func:`raw_torchdiffeq_exact`: ``odeint`` backprop +
``torch.optim``, the trace as torchdiffeq's ``examples/cnf.py``). They answer "are we as fast as the libraries we
wrap" within one run; the issue's own anchors (diffrax checkpoint 62.5 ms/step, torchdiffeq backprop 133 ms/step
at 1000 steps) were measured at another time.

Every configuration takes one step in turn (interleaved), so a busy machine slows them alike: compare ms/iter
within one run only.

    python benchmarks/cnf_bench.py [--iters 1000] [--only jax-exact,raw-diffrax-exact] [--torch-threads 1]

Writes ``benchmarks/results/cnf.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import write_results

import pyneuralode as pn
from pyneuralode.datasets import toy_2d
from pyneuralode.problems.cnf import TEST_SEED, CNFConfig, cnf_field, cnf_model

CONFIGS = {f"{backend}-{trace}{'-reg' if reg else ''}": (backend, trace, reg, None)
           for backend in ("jax", "torch") for reg in (False, True) for trace in ("exact", "hutchinson")}
CONFIGS |= {"raw-diffrax-exact": ("raw-diffrax", "exact", False, None),
            "raw-torchdiffeq-exact": ("raw-torchdiffeq", "exact", False, None)}
DEFAULT_CONFIGS = tuple(CONFIGS)
CONFIGS |= {f"{backend}-exact-backsolve": (backend, "exact", False, pn.BacksolveAdjoint()) for backend in ("jax", "torch")}
"""Configurations: ``(backend, trace, regularised, adjoint)``; adjoint ``None`` is the CLI's ``auto``
(CheckpointAdjoint on JAX, DirectAdjoint on torch). The backsolve pair (the issue's adjoint anchors) runs only
when named with ``--only``."""
EVAL_BACKEND = {"raw-diffrax": "jax", "raw-torchdiffeq": "torch"}
"""Where a raw anchor's trained weights are evaluated (the same held-out NLL code as ours)."""


def ours(cfg: CNFConfig, backend: str, trace: str, regularised: bool, adjoint, params0):
    """``(step, params, adjoint)`` of a pyneuralode configuration: ``step(x, it) -> (nll, nfe_f, nfe_b, steps)``."""
    flow = cnf_model(cfg, backend=backend, trace=trace, **({"adjoint": adjoint} if adjoint else {}))
    loss = pn.NLL(kinetic=0.01, jacobian=0.01) if regularised else pn.NLL()
    trainer = pn.FlowTrainer(flow, optimizer=pn.Adam(lr=cfg.lr), loss=loss)
    trainer.init(params0)

    def step(x, it):
        info = trainer.step(x, noise=flow.draw_noise(len(x), seed=it) if trace == "hutchinson" else None)
        s = info.stats
        return info.nll, s.nfe_forward, s.nfe_backward, s.steps_accepted + s.steps_rejected
    return step, lambda: trainer.params, flow.adjoint.name


def raw_diffrax_exact(cfg: CNFConfig, params0):
    """The anchor written against diffrax + optax only: one jitted step, ``diffeqsolve`` of the batch as one
    ``(N, 3)`` state (the RMS step norm ours uses) from ``t1`` to ``t0``, Dopri5 + ``PIDController``,
    ``RecursiveCheckpointAdjoint``; the exact trace as diffrax's CNF example (``exact_logp_wrapper``): per sample,
    ``jax.vjp`` of the field and ``vmap`` of its VJP over the identity, ``trace`` of that Jacobian."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import optax

    flow = cnf_model(cfg)
    weights = [jnp.asarray(w) for w in pn.unflatten(cnf_field(cfg), params0)]

    def field(t, z, w):  # one sample z (2,): MLP 2(+t)-64-64-2, tanh, t the last input of the first layer
        h = jnp.tanh(w[0] @ jnp.append(z, t) + w[1])
        h = jnp.tanh(w[2] @ h + w[3])
        return w[4] @ h + w[5]

    def augmented(t, state, w):
        def one(z):
            f, vjp = jax.vjp(lambda y: field(t, y, w), z)
            (jac,) = jax.vmap(vjp)(jnp.eye(z.shape[0], dtype=z.dtype))
            return jnp.append(f, jnp.trace(jac))
        return jax.vmap(one)(state[:, :2])

    def loss(w, x):
        state0 = jnp.concatenate([x, jnp.zeros((x.shape[0], 1), x.dtype)], axis=-1)
        sol = diffrax.diffeqsolve(diffrax.ODETerm(augmented), diffrax.Dopri5(), flow.t1, flow.t0, None, state0, w,
                                  stepsize_controller=diffrax.PIDController(rtol=cfg.rtol, atol=cfg.atol),
                                  adjoint=diffrax.RecursiveCheckpointAdjoint())
        z, delta = sol.ys[-1, :, :2], sol.ys[-1, :, 2]
        return -jnp.mean(-0.5 * jnp.sum(z * z, axis=-1) - jnp.log(2 * jnp.pi) + delta), sol.stats["num_steps"]

    opt = optax.adam(cfg.lr)

    @jax.jit
    def train_step(w, opt_state, x):
        (nll, steps), grads = jax.value_and_grad(loss, has_aux=True)(w, x)
        updates, opt_state = opt.update(grads, opt_state, w)
        return optax.apply_updates(w, updates), opt_state, nll, steps

    state = [weights, opt.init(weights)]

    def step(x, it):
        state[0], state[1], nll, steps = train_step(state[0], state[1], jnp.asarray(x))
        return float(nll), None, None, int(steps)
    return step, lambda: np.concatenate([np.asarray(w).ravel() for w in state[0]]), "RecursiveCheckpointAdjoint"


def raw_torchdiffeq_exact(cfg: CNFConfig, params0):
    """The anchor written against torchdiffeq + torch only: ``odeint`` (dopri5, backprop through the solver) of the
    batch as one ``(N, 3)`` tensor (a tuple state would switch torchdiffeq to its max-of-RMS norm) from ``t1`` to
    ``t0``; the exact trace as torchdiffeq's ``examples/cnf.py`` (``trace_df_dz``: ``autograd.grad`` of
    ``f[:, i].sum()`` per dimension, ``create_graph=True``); ``torch.optim.Adam``."""
    import torch
    from torchdiffeq import odeint

    flow = cnf_model(cfg)
    w = [torch.tensor(a, requires_grad=True) for a in pn.unflatten(cnf_field(cfg), params0)]
    ts = torch.tensor([flow.t1, flow.t0], dtype=w[0].dtype)
    nfe = [0]

    def augmented(t, state):
        nfe[0] += 1
        with torch.enable_grad():
            z = state[:, :2]
            z = z if z.requires_grad else z.detach().requires_grad_(True)
            h = torch.tanh(torch.nn.functional.linear(torch.cat([z, t.expand(len(z), 1)], -1), w[0], w[1]))
            h = torch.tanh(torch.nn.functional.linear(h, w[2], w[3]))
            f = torch.nn.functional.linear(h, w[4], w[5])
            trace = sum(torch.autograd.grad(f[:, i].sum(), z, create_graph=True)[0][:, i] for i in range(2))
        return torch.cat([f, trace[:, None]], -1)

    opt = torch.optim.Adam(w, lr=cfg.lr)

    def step(x, it):
        nfe[0] = 0
        x = torch.as_tensor(x)
        state = odeint(augmented, torch.cat([x, torch.zeros(len(x), 1, dtype=x.dtype)], -1), ts,
                       rtol=cfg.rtol, atol=cfg.atol, method="dopri5")[-1]
        z, delta = state[:, :2], state[:, 2]
        nll = -(-0.5 * (z * z).sum(-1) - math.log(2 * math.pi) + delta).mean()
        opt.zero_grad()
        nll.backward()
        opt.step()
        return float(nll.detach()), nfe[0], None, None
    return step, lambda: np.concatenate([a.detach().numpy().ravel() for a in w]), "backprop"


def run_configs(names, *, iters: int, batch: int) -> list[dict]:
    """Train every named configuration from the same initial weights on the same batches, one step of each in
    turn (interleaved, so a busy machine slows them alike), and summarise each run."""
    cfg = CNFConfig(batch=batch, iters=iters)
    params0 = cnf_model(cfg).init(cfg.seed)
    runners = {}
    for name in names:
        backend, trace, reg, adjoint = CONFIGS[name]
        if backend == "raw-diffrax":
            runners[name] = raw_diffrax_exact(cfg, params0)
        elif backend == "raw-torchdiffeq":
            runners[name] = raw_torchdiffeq_exact(cfg, params0)
        else:
            runners[name] = ours(cfg, backend, trace, reg, adjoint, params0)
    log = {name: [] for name in names}  # per iteration: seconds, nll, nfe_f, nfe_b, steps
    t_run = time.perf_counter()
    for it in range(1, iters + 1):
        x = toy_2d("moons", batch, it, dtype=cfg.dtype)
        for name, (step, _, _) in runners.items():
            t0 = time.perf_counter()
            out = step(x, it)
            log[name].append((time.perf_counter() - t0, *out))
    wall = time.perf_counter() - t_run
    x_test = toy_2d("moons", cfg.test_size, TEST_SEED, dtype=cfg.dtype)
    rows = []
    for name, (_, params, adjoint) in runners.items():
        backend, trace, reg, _ = CONFIGS[name]
        exact = cnf_model(cfg, backend=EVAL_BACKEND.get(backend, backend), trace="exact")
        secs, nll, *counts = zip(*log[name])
        tail = slice(-min(50, iters), None)

        def mean(values, part=slice(None)):
            values = values[part]
            return None if values[0] is None else float(np.mean(values))
        rows.append({"config": name, "backend": backend, "trace": trace, "regularised": reg, "adjoint": adjoint,
                     "iterations": iters, "batch": batch,
                     "ms_per_iter_median": 1e3 * float(np.median(secs[1:])),
                     "ms_per_iter_mean": 1e3 * float(np.mean(secs[1:])), "first_iter_s": secs[0],
                     "nfe_forward_mean": mean(counts[0]), "nfe_backward_mean": mean(counts[1]),
                     "steps_mean": mean(counts[2]), "nfe_forward_last50": mean(counts[0], tail),
                     "train_nll_last20": float(np.mean(nll[-20:])),
                     "test_nll": float(-np.mean(exact.log_prob(params(), x_test))), "wall_s_all_configs": wall})
    return rows


def table(rows) -> str:
    """The results as a Markdown table (``–``: a count the raw library does not expose)."""
    def num(value, fmt):
        return "–" if value is None else format(value, fmt)
    head = ("config", "ms/iter", "NFE-F", "NFE-B", "steps", "NFE-F last50", "train NLL", "test NLL")
    body = [(f"{r['backend']} {r['trace']}{' +RNODE' if r['regularised'] else ''} ({r['adjoint']})",
             f"{r['ms_per_iter_median']:.1f}", num(r["nfe_forward_mean"], ".1f"), num(r["nfe_backward_mean"], ".1f"),
             num(r["steps_mean"], ".1f"), num(r["nfe_forward_last50"], ".1f"), f"{r['train_nll_last20']:.3f}",
             f"{r['test_nll']:.3f}")
            for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    return "\n".join([line.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line.format(*b) for b in body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--only", default=",".join(DEFAULT_CONFIGS),
                        help="comma-separated subset of " + ", ".join(CONFIGS))
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default). On a small shared machine 1 avoids "
                             "OpenMP threads spinning against other jobs.")
    parser.add_argument("--name", default="cnf", help="results file name (benchmarks/results/<name>.json)")
    args = parser.parse_args(argv)
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)
    rows = run_configs(args.only.split(","), iters=args.iters, batch=args.batch)
    write_results(args.name, {"command": " ".join(["python benchmarks/cnf_bench.py", *(argv or sys.argv[1:])]),
                              "torch_threads": args.torch_threads or "default", "results": rows})
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
