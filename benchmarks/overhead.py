"""Overhead: pyneuralode vs the hand-written raw code it wraps, on the paper's spiral (float32, Dopri5,
rtol 1e-3, atol 1e-4, batch 20 windows × 10 points), in three modes:

- ``solve``: forward solve only (``model.solve`` vs a jitted ``diffeqsolve`` / ``odeint`` under ``no_grad``),
  result returned as a numpy array;
- ``grad``: loss and gradients w.r.t. parameters and ``y0`` (``model.value_and_grad`` vs ``jax.value_and_grad``
  of a jitted loss / ``loss.backward()``), gradients returned as numpy arrays;
- ``step``: one training step with Adam (``pn.Trainer.step`` vs a raw optax / torch.optim loop — the contenders of
  ``benchmarks/spiral_step.py``).

Each for both gradient families: discretise-then-optimise (JAX ``CheckpointAdjoint`` vs diffrax
``RecursiveCheckpointAdjoint``; torch ``DirectAdjoint`` vs backprop through ``odeint``) and the adjoint method
(``BacksolveAdjoint`` vs diffrax ``BacksolveAdjoint`` / ``odeint_adjoint``).

Initial step: pyneuralode picks it with Hairer's rule (2 extra evaluations, as torchdiffeq does); raw diffrax 0.7.2
with ``dt0=None`` silently starts at 0.01. ``pn-jax (dt0=0.01)`` gives pyneuralode the same start, so that pair does
identical numerical work; ``pn-jax`` is the default user experience.
"""

from __future__ import annotations

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.spiral import spiral_field

from ._common import fmt_timing, spiral_batches, spiral_model
from ._harness import interleaved
from .spiral_step import _cycle, pn_step, raw_diffrax_step, raw_torch_func, raw_torchdiffeq_step

RTOL, ATOL = 1e-3, 1e-4
FAMILIES = {"discretise-then-optimise": ("checkpoint", "direct", "checkpoint"),
            "backsolve adjoint": ("backsolve", "backsolve", "backsolve")}


# ----------------------------------------------------------------------------- raw contenders
def _raw_jax_parts(adjoint_name):
    import diffrax
    import jax
    import jax.numpy as jnp

    flat = jnp.asarray(pn.init_params(spiral_field(), 0, "float32"))
    params = {"w1": flat[:100].reshape(50, 2), "b1": flat[100:150], "w2": flat[150:250].reshape(2, 50),
              "b2": flat[250:]}

    def field(t, y, p):
        return jnp.tanh(y**3 @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]

    adjoint = diffrax.BacksolveAdjoint() if adjoint_name == "backsolve" else diffrax.RecursiveCheckpointAdjoint()

    def solve(p, y0, t):
        return diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri5(), t[0], t[-1], None, y0, args=p,
                                   saveat=diffrax.SaveAt(ts=t), adjoint=adjoint,
                                   stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL)).ys
    return jax, params, solve


def raw_diffrax_solve(batches):
    jax, params, solve = _raw_jax_parts("checkpoint")
    fn = jax.jit(solve)
    nxt = _cycle(batches)

    def run():
        y0, t, _ = nxt()
        return np.asarray(fn(params, y0, t))
    return run


def raw_diffrax_grad(adjoint_name, batches):
    jax, params, solve = _raw_jax_parts(adjoint_name)
    import jax.numpy as jnp

    def loss(p, y0, t, target):
        return jnp.mean(jnp.abs(solve(p, y0, t) - target))
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    nxt = _cycle(batches)

    def run():
        y0, t, target = nxt()
        value, (gp, gy) = fn(params, y0, t, target)
        return float(value), jax.tree_util.tree_map(np.asarray, gp), np.asarray(gy)
    return run


def raw_torchdiffeq_solve(batches):
    from torchdiffeq import odeint
    torch, func = raw_torch_func()
    nxt = _cycle(batches)

    def run():
        y0, t, _ = nxt()
        with torch.no_grad():
            return odeint(func, torch.as_tensor(y0), torch.as_tensor(t), rtol=RTOL, atol=ATOL,
                          method="dopri5").numpy()
    return run


def raw_torchdiffeq_grad(adjoint_name, batches):
    from torchdiffeq import odeint, odeint_adjoint
    torch, func = raw_torch_func()
    solve = odeint_adjoint if adjoint_name == "backsolve" else odeint
    nxt = _cycle(batches)

    def run():
        y0, t, target = nxt()
        y0 = torch.tensor(y0, requires_grad=True)
        for p in func.parameters():
            p.grad = None
        loss = torch.mean(torch.abs(solve(func, y0, torch.as_tensor(t), rtol=RTOL, atol=ATOL, method="dopri5")
                                    - torch.as_tensor(target)))
        loss.backward()
        return loss.item(), [p.grad.numpy() for p in func.parameters()], y0.grad.numpy()
    return run


# ----------------------------------------------------------------------------- pyneuralode contenders
def pn_solve(backend, batches, dt0=None):
    model = spiral_model(backend, "direct", rtol=RTOL, atol=ATOL, dt0=dt0)
    params = model.init(0)
    nxt = _cycle(batches)

    def run():
        y0, t, _ = nxt()
        return model.solve(params, y0, t).ys
    return run


def pn_grad(backend, adjoint, batches, dt0=None):
    model = spiral_model(backend, adjoint, rtol=RTOL, atol=ATOL, dt0=dt0)
    params = model.init(0)
    nxt = _cycle(batches)

    def run():
        y0, t, target = nxt()
        return model.value_and_grad(params, y0, t, loss=pn.L1(target))
    return run


def _pn_adjoint(name):
    return {"checkpoint": pn.CheckpointAdjoint(), "direct": pn.DirectAdjoint(),
            "backsolve": pn.BacksolveAdjoint()}[name]


def _groups(mode, family, batches):
    """``{group: {contender: callable}}``: each group is timed interleaved on its own."""
    jax_adj, torch_adj, raw_adj = FAMILIES[family]
    if mode == "solve":
        jax = {"pn-jax": pn_solve("jax", batches), "pn-jax (dt0=0.01)": pn_solve("jax", batches, 0.01),
               "raw-diffrax": raw_diffrax_solve(batches)}
        torch = {"pn-torch": pn_solve("torch", batches), "raw-torchdiffeq": raw_torchdiffeq_solve(batches)}
    elif mode == "grad":
        jax = {"pn-jax": pn_grad("jax", jax_adj, batches), "pn-jax (dt0=0.01)": pn_grad("jax", jax_adj, batches,
                                                                                        0.01),
               "raw-diffrax": raw_diffrax_grad(raw_adj, batches)}
        torch = {"pn-torch": pn_grad("torch", torch_adj, batches),
                 "raw-torchdiffeq": raw_torchdiffeq_grad(raw_adj, batches)}
    else:
        jax = {"pn-jax": pn_step("jax", _pn_adjoint(jax_adj), batches),
               "pn-jax (dt0=0.01)": pn_step("jax", _pn_adjoint(jax_adj), batches, dt0=0.01),
               "raw-diffrax": raw_diffrax_step(raw_adj, batches)}
        torch = {"pn-torch": pn_step("torch", _pn_adjoint(torch_adj), batches),
                 "raw-torchdiffeq": raw_torchdiffeq_step(raw_adj, batches)}
    return {"jax": jax, "torch": torch}


def run(settings, log=print) -> dict:
    if settings.device != "cpu":
        return {"skipped": "the overhead case compares against raw CPU code; run it with --device cpu"}
    batches = spiral_batches(64)
    rounds = {"jax": settings.pick(200, 30), "torch": settings.pick(60, 10)}
    warmup = {"jax": settings.pick(10, 3), "torch": settings.pick(5, 2)}
    rows = []
    for mode in settings.pick(("solve", "grad", "step"), ("solve", "step")):
        for family in FAMILIES:
            if mode == "solve" and family != "discretise-then-optimise":
                continue  # a plain solve has no adjoint
            for group, cases in _groups(mode, family, batches).items():
                timing = interleaved(cases, rounds=rounds[group], warmup=warmup[group])
                raw = "raw-diffrax" if group == "jax" else "raw-torchdiffeq"
                log(f"  overhead {mode:<5} {family:<25} {group}")
                for name, t in timing.items():
                    log(f"    {name:<18} {fmt_timing(t)}")
                    if name != raw:
                        rows.append({"mode": mode, "family": "-" if mode == "solve" else family,
                                     "backend": group, "contender": name, "raw": raw, "timing": t,
                                     "raw_timing": timing[raw], "ratio": t["median_s"] / timing[raw]["median_s"]})
    for r in rows:
        log(f"  {r['mode']:<5} {r['family']:<25} {r['contender']:<18} / {r['raw']:<16} = {r['ratio']:.3f}")
    return {"settings": {"problem": "spiral", "batch": "20x10", "solver": "Dopri5", "rtol": RTOL, "atol": ATOL,
                         "dtype": "float32", "optimizer": "Adam(lr=1e-3)", "rounds": rounds, "warmup": warmup,
                         "goal": "pn/raw <= 1.05"},
            "rows": rows}
