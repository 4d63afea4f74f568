"""One spiral training step (forward + gradient + Adam update), pyneuralode vs hand-written raw code.

Issue 2/3 settings: batch 20 windows × 10 steps, Dopri5, rtol 1e-3, atol 1e-4, float32, Adam. Contenders, timed
interleaved in one run (median of ``--steps`` calls after warm-up):

- ``pn-jax``: ``pn.Trainer`` on the JAX backend; ``raw-diffrax``: a plain diffrax + optax loop, jit-compiled.
- ``pn-torch``: ``pn.Trainer`` on the torch backend; ``raw-torchdiffeq``: a plain torchdiffeq + torch.optim loop.

for two gradient methods: discretise-then-optimise (pn ``CheckpointAdjoint`` vs diffrax
``RecursiveCheckpointAdjoint``; pn ``DirectAdjoint`` vs backprop through ``odeint``) and the adjoint method
(``BacksolveAdjoint`` vs diffrax ``BacksolveAdjoint`` / torchdiffeq ``odeint_adjoint``).

Initial step: pyneuralode picks it with Hairer's rule (2 evaluations, as torchdiffeq); raw diffrax 0.7.2 with
``dt0=None`` silently starts at 0.01 (see pyneuralode/backends/jax/_diffrax.py). Both are measured, and
``pn-jax (dt0=0.01)`` gives pyneuralode the same start so the two do identical numerical work.

Run: ``python -m benchmarks.spiral_step [--steps 200]`` → ``benchmarks/results/spiral_step.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.spiral import sample_batch, spiral_data, spiral_field

from ._harness import STEP_RATIOS, interleaved, median_ratios, print_ratios, timing_row, write_results

RTOL, ATOL, LR = 1e-3, 1e-4, 1e-3


def _batches(n, seed=0):
    ts, ys = spiral_data()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y0, t, target = sample_batch(rng, ts, ys)
        out.append((y0.astype(np.float32), t.astype(np.float32), target.astype(np.float32)))
    return out


def _cycle(batches):
    state = {"i": 0}

    def next_batch():
        state["i"] = (state["i"] + 1) % len(batches)
        return batches[state["i"]]
    return next_batch


def pn_step(backend, adjoint, batches, dt0=None):
    model = pn.ODEModel(spiral_field(), solver=pn.Dopri5(), control=pn.StepControl(rtol=RTOL, atol=ATOL, dt0=dt0),
                        adjoint=adjoint, backend=backend, dtype="float32")
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=LR), loss=pn.L1)
    trainer.init(model.init(0))
    next_batch = _cycle(batches)
    return lambda: trainer.step(*next_batch())


def raw_diffrax_step(adjoint_name, batches):
    import diffrax
    import jax
    import jax.numpy as jnp
    import optax

    flat = jnp.asarray(pn.init_params(spiral_field(), 0, "float32"))
    params = {"w1": flat[:100].reshape(50, 2), "b1": flat[100:150], "w2": flat[150:250].reshape(2, 50),
              "b2": flat[250:]}

    def field(t, y, p):
        return jnp.tanh(y**3 @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]

    adjoint = (diffrax.BacksolveAdjoint() if adjoint_name == "backsolve"
               else diffrax.RecursiveCheckpointAdjoint())

    def loss(p, y0, t, target):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri5(), t[0], t[-1], None, y0, args=p,
                                  saveat=diffrax.SaveAt(ts=t), adjoint=adjoint,
                                  stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL))
        return jnp.mean(jnp.abs(sol.ys - target))

    opt = optax.adam(LR)

    @jax.jit
    def step(p, s, y0, t, target):
        value, grads = jax.value_and_grad(loss)(p, y0, t, target)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    state = {"p": params, "s": opt.init(params)}
    next_batch = _cycle(batches)

    def run():
        y0, t, target = next_batch()
        state["p"], state["s"], value = step(state["p"], state["s"], y0, t, target)
        return float(value)
    return run


def raw_torch_func():
    """``(torch, func)``: the hand-written torchdiffeq spiral field of ode_demo.py with pyneuralode's seed-0 weights."""
    import torch

    class ODEFunc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2))

        def forward(self, t, y):
            return self.net(y**3)

    func = ODEFunc()
    flat = torch.as_tensor(pn.init_params(spiral_field(), 0, "float32"))
    with torch.no_grad():
        for p, (a, b) in zip(func.parameters(), [(0, 100), (100, 150), (150, 250), (250, 252)]):
            p.copy_(flat[a:b].reshape(p.shape))
    return torch, func


def raw_torchdiffeq_step(adjoint_name, batches):
    from torchdiffeq import odeint, odeint_adjoint

    torch, func = raw_torch_func()
    solve = odeint_adjoint if adjoint_name == "backsolve" else odeint
    opt = torch.optim.Adam(func.parameters(), lr=LR)
    next_batch = _cycle([tuple(torch.as_tensor(x) for x in b) for b in batches])

    def run():
        y0, t, target = next_batch()
        opt.zero_grad()
        loss = torch.mean(torch.abs(solve(func, y0, t, rtol=RTOL, atol=ATOL, method="dopri5") - target))
        loss.backward()
        opt.step()
        return float(loss)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per contender (after warm-up)")
    args = parser.parse_args(argv)
    batches = _batches(64)
    results = {}
    for label, pn_adjoint, raw in (("discretise-then-optimise", None, "checkpoint"),
                                   ("backsolve adjoint", pn.BacksolveAdjoint(), "backsolve")):
        jax_adjoint = pn_adjoint or pn.CheckpointAdjoint()
        torch_adjoint = pn_adjoint or pn.DirectAdjoint()
        cases = {
            "pn-jax": pn_step("jax", jax_adjoint, batches),
            "pn-jax (dt0=0.01)": pn_step("jax", jax_adjoint, batches, dt0=0.01),
            "raw-diffrax": raw_diffrax_step(raw, batches),
            "pn-torch": pn_step("torch", torch_adjoint, batches),
            "raw-torchdiffeq": raw_torchdiffeq_step(raw, batches),
        }
        timing = interleaved(cases, rounds=args.steps, warmup=10)
        ratios = median_ratios(timing, (*STEP_RATIOS, ("raw-torchdiffeq", "raw-diffrax")))
        results[label] = {"timing": timing, "ratios": ratios}
        print(f"\n{label} (median ms per step, {args.steps} interleaved steps after warm-up)")
        for name, t in timing.items():
            print(timing_row(name, t))
        print_ratios(ratios)
    path = write_results("spiral_step", {"settings": {"batch": "20x10", "solver": "Dopri5", "rtol": RTOL,
                                                      "atol": ATOL, "dtype": "float32", "optimizer": "Adam",
                                                      "steps": args.steps}, "results": results})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
