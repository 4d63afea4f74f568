"""Side-by-side timing: interleaved rounds, medians after warm-up, spread, and a results JSON with machine facts.

Timing the contenders in alternation (A, B, C, A, B, C, ...) makes a noisy machine slow them all alike, so the
*ratio* stays stable even when absolute times drift.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def interleaved(cases: dict, *, rounds: int, warmup: int = 5) -> dict:
    """Run each zero-argument callable in ``cases`` ``warmup`` times, then ``rounds`` times interleaved.

    Returns per case: median, p10 and p90 seconds per call, and the raw samples count.
    """
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: {"median_s": float(np.median(s)), "p10_s": float(np.percentile(s, 10)),
                   "p90_s": float(np.percentile(s, 90)), "n": len(s)} for name, s in samples.items()}



STEP_RATIOS = (("pn-jax", "raw-diffrax"), ("pn-jax (dt0=0.01)", "raw-diffrax"), ("pn-torch", "raw-torchdiffeq"),
               ("pn-torch", "pn-jax"))
"""The ratios a step benchmark reports: pyneuralode over the raw library on each backend, and torch over JAX."""


def median_ratios(timing: dict, pairs) -> dict:
    """``"a / b"`` → the median time of case ``a`` over that of case ``b``, for each ``(a, b)`` of ``pairs``
    (``timing`` as :func:`interleaved` returns it)."""
    return {f"{a} / {b}": timing[a]["median_s"] / timing[b]["median_s"] for a, b in pairs}


def timing_row(name: str, timing: dict) -> str:
    """One case's line of a step benchmark's table: median, p10 and p90 milliseconds per step."""
    return (f"  {name:<20} {1e3 * timing['median_s']:8.3f} ms   (p10 {1e3 * timing['p10_s']:.3f}, "
            f"p90 {1e3 * timing['p90_s']:.3f})")


def print_ratios(ratios: dict) -> None:
    """Print each ratio of :func:`median_ratios` on its own line."""
    for name, r in ratios.items():
        print(f"  {name:<34} {r:6.3f}")

def machine_info() -> dict:
    """Machine, Python and library versions recorded beside every result."""
    versions = {}
    for dist in ("pyneuralode", "numpy", "jax", "jaxlib", "diffrax", "equinox", "optax", "torch", "torchdiffeq"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_results(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` with machine info attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **payload}, indent=2))
    return path


def training_step_benchmark(title: str, name: str, cases: dict, settings: dict, *, steps: int) -> Path:
    """The training-step comparison of ``benchmarks.ude_step`` and ``benchmarks.hnn_step``: ``cases`` maps the
    contenders of :data:`STEP_RATIOS` to step functions; each is called once (the first losses must agree: same
    weights, same data), then all are timed interleaved, then the JAX contenders again alternating among
    themselves only — between two sub-millisecond JAX steps the full block runs ~100 ms of torch work, which
    leaves each JAX step starting cold, while a training loop runs its steps back to back. Prints the tables and
    writes ``benchmarks/results/<name>.json``."""
    def loss_of(value):
        return value.loss if hasattr(value, "loss") else value

    first = {case: fn() for case, fn in cases.items()}
    timing = interleaved(cases, rounds=steps, warmup=5)
    ratios = median_ratios(timing, STEP_RATIOS)
    print(f"{title} (median ms, {steps} interleaved steps after warm-up); first losses:")
    for case, t in timing.items():
        print(f"{timing_row(case, t)}   first loss {loss_of(first[case]):.12g}")
    print_ratios(ratios)
    jax_names = [case for case in cases if "jax" in case or "diffrax" in case]
    jax_timing = interleaved({case: cases[case] for case in jax_names}, rounds=4 * steps, warmup=20)
    jax_ratios = median_ratios(jax_timing, [pair for pair in STEP_RATIOS if pair[0] in jax_names
                                            and pair[1] in jax_names])
    print(f"JAX contenders alone ({4 * steps} interleaved steps):")
    for case, t in jax_timing.items():
        print(timing_row(case, t))
    print_ratios(jax_ratios)
    path = write_results(name, {
        "settings": {**settings, "steps": steps,
                     "note": "2-core machine shared with other jobs: absolute times are noisy; ratios come from "
                             "interleaved rounds in one process"},
        "first_loss": {case: loss_of(v) for case, v in first.items()},
        "timing": timing, "ratios": ratios, "jax_alone": {"timing": jax_timing, "ratios": jax_ratios}})
    print(f"\nwrote {path}")
    return path


def raw_diffrax_trainer(field, params, ts, y0, target, *, rtol: float, atol: float, lr: float):
    """A hand-written JAX training step for the step benchmarks: ``field(t, y, params)`` solved by
    ``diffrax.diffeqsolve`` (Dopri5, ``PIDController``, ``RecursiveCheckpointAdjoint``, ``dt0=None``) at ``ts``,
    MSE against ``target``, ``optax.adam`` — one ``jax.jit`` step. Returns ``run() -> loss``."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import optax

    ts = jnp.asarray(ts)

    def loss(p, y0, target):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri5(), ts[0], ts[-1], None, y0, args=p,
                                  saveat=diffrax.SaveAt(ts=ts), adjoint=diffrax.RecursiveCheckpointAdjoint(),
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
        return jnp.mean((sol.ys - target) ** 2)

    opt = optax.adam(lr)

    @jax.jit
    def step(p, s, y0, target):
        value, grads = jax.value_and_grad(loss)(p, y0, target)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    state = {"p": params, "s": opt.init(params)}

    def run():
        state["p"], state["s"], value = step(state["p"], state["s"], y0, target)
        return float(value)
    return run


def torch_linears(layers):
    """``torch.nn.Linear`` modules (float64) holding ``layers``' ``(weight, bias)`` pairs, in a ``ModuleList``."""
    import torch
    linears = torch.nn.ModuleList(torch.nn.Linear(w.shape[1], w.shape[0]).double() for w, _ in layers)
    with torch.no_grad():
        for lin, (w, b) in zip(linears, layers):
            lin.weight.copy_(torch.as_tensor(w))
            lin.bias.copy_(torch.as_tensor(b))
    return linears


def raw_torchdiffeq_trainer(func, ts, y0, target, *, rtol: float, atol: float, lr: float):
    """A hand-written torch training step for the step benchmarks: ``torchdiffeq.odeint(func, ...)`` with dopri5
    at ``ts``, MSE against ``target``, ``torch.optim.Adam``. Returns ``run() -> loss``."""
    import torch
    from torchdiffeq import odeint

    opt = torch.optim.Adam(func.parameters(), lr=lr)
    y0_t, target_t, ts_t = (torch.as_tensor(np.array(a)) for a in (y0, target, ts))

    def run():
        opt.zero_grad()
        loss = torch.mean((odeint(func, y0_t, ts_t, rtol=rtol, atol=atol, method="dopri5") - target_t) ** 2)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return run


def pn_trainer(field, flat, ts, y0, target, *, backend: str, rtol: float, atol: float, lr: float, dt0=None):
    """pyneuralode's side of a step benchmark: ``pn.Trainer`` (Adam, MSE) on ``field`` with Dopri5 at
    ``rtol``/``atol`` in float64 — ``CheckpointAdjoint`` on JAX (diffrax's default), backprop through ``odeint``
    on torch. Returns ``run() -> step info``."""
    import pyneuralode as pn
    adjoint = pn.CheckpointAdjoint() if backend == "jax" else pn.DirectAdjoint()
    model = pn.ODEModel(field, solver=pn.Dopri5(), control=pn.StepControl(rtol=rtol, atol=atol, dt0=dt0),
                        adjoint=adjoint, backend=backend, dtype="float64")
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=lr), loss=pn.MSE)
    trainer.init(flat)
    return lambda: trainer.step(y0, ts, target)


def linear_layers(flat, sizes) -> list:
    """``[(weight, bias), ...]`` of an MLP with layer widths ``sizes`` from its canonical flat vector (per Linear
    layer: weight ``(out, in)`` row-major, then bias)."""
    layers, offset = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers.append((flat[offset:offset + n_in * n_out].reshape(n_out, n_in),
                       flat[offset + n_in * n_out:offset + n_in * n_out + n_out]))
        offset += n_in * n_out + n_out
    assert offset == flat.size
    return layers


def pn_contenders(field, flat, ts, y0, target, **settings) -> dict:
    """pyneuralode's three contenders of a step benchmark: JAX (Hairer's first step), JAX with diffrax 0.7.2's
    effective first step ``dt0=0.01`` (so its steps equal raw diffrax's), and torch."""
    return {"pn-jax": pn_trainer(field, flat, ts, y0, target, backend="jax", **settings),
            "pn-jax (dt0=0.01)": pn_trainer(field, flat, ts, y0, target, backend="jax", dt0=0.01, **settings),
            "pn-torch": pn_trainer(field, flat, ts, y0, target, backend="torch", **settings)}

