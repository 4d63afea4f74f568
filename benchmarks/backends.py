"""Backends against each other: the same model, weights and batch on JAX, torch (and Julia where it runs),
timed interleaved. Spiral: ``model.value_and_grad`` (loss + gradients) in float32 and float64, per adjoint.
MNIST ODE-Net and CNF: one training step through each backend's native loop, reusing the other benchmark
modules' set-ups (``benchmarks/mnist_step.py``, ``benchmarks/cnf_bench.py``) when they are present."""

from __future__ import annotations

import importlib

import numpy as np

import pyneuralode as pn

from ._common import BACKEND_ADJOINTS, BACKENDS, available, fmt_timing, spiral_batches, spiral_model
from ._harness import interleaved
from .spiral_step import _cycle

# Discretise-then-optimise on each backend is CheckpointAdjoint on JAX (diffrax's fast path) and DirectAdjoint on
# torch (backprop through odeint); both are also run as "direct" on JAX for a like-for-like pair.


def _spiral(settings, skipped, log):
    rows = []
    backends = [b for b in BACKENDS if b not in skipped]
    for dtype in settings.pick(("float32", "float64"), ("float32",)):
        batches = spiral_batches(32, dtype=dtype)
        for adjoint in ("direct", "backsolve", "checkpoint"):
            cases, nfe = {}, {}
            for b in backends:
                if adjoint not in BACKEND_ADJOINTS[b]:
                    continue
                model = spiral_model(b, adjoint, dtype=dtype, rtol=1e-3, atol=1e-4, device=settings.model_device)
                params = model.init(0)
                nxt = _cycle(batches)

                def call(model=model, params=params, nxt=nxt, b=b):
                    y0, t, target = nxt()
                    res = model.value_and_grad(params, y0, t, loss=pn.L1(target))
                    nfe[b] = (res.stats.nfe_forward, res.stats.nfe_backward)
                    return res
                cases[b] = call
            timing = interleaved(cases, rounds=settings.pick(40, 8), warmup=settings.pick(3, 2))
            for b, t in timing.items():
                log(f"  spiral {dtype} {adjoint:<10} {b:<6} {fmt_timing(t)}  NFE {nfe[b]}")
                rows.append({"problem": "spiral", "what": "value_and_grad", "dtype": dtype, "adjoint": adjoint,
                             "backend": b, "timing": t, "nfe_forward": nfe[b][0], "nfe_backward": nfe[b][1]})
    return rows


def _mnist(settings, log):
    try:
        mnist_step = importlib.import_module("benchmarks.mnist_step")
    except Exception as err:  # noqa: BLE001 - a module being written by someone else may not import yet
        return [], f"benchmarks/mnist_step.py not importable ({type(err).__name__}: {err})"
    channels, batch = settings.pick(32, 8), settings.pick(64, 16)
    try:
        data = pn.datasets.mnist("train")
        x, y = np.asarray(data.images[:batch]), np.asarray(data.labels[:batch])
        source = "MNIST train[:batch]"
    except pn.DataError as err:
        rng = np.random.default_rng(0)
        x, y = rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)
        source = f"random images (MNIST unavailable: {str(err).splitlines()[0]})"
    params0 = pn.init_params(pn.problems.mnist_model("odenet", channels=channels), 0, "float32")
    rows = []
    for adjoint, (jax_adj, torch_adj) in list(mnist_step.ADJOINTS.items())[:settings.pick(None, 1)]:
        trainers, nfe = {}, {}
        for b, adj in (("jax", jax_adj), ("torch", torch_adj)):
            trainer = mnist_step.make_trainer(b, adj, channels=channels, params0=params0)

            def call(trainer=trainer, b=b):
                dt, loss, stats = mnist_step.timed_step(trainer, params0, x, y)
                nfe[b] = (stats.nfe_forward, stats.nfe_backward)
            trainers[b] = call
        timing = interleaved(trainers, rounds=settings.pick(5, 2), warmup=1)
        for b, t in timing.items():
            adj_name = (jax_adj if b == "jax" else torch_adj).name
            log(f"  mnist {adjoint:<10} {b:<6} {fmt_timing(t)}  NFE {nfe[b]}")
            rows.append({"problem": f"mnist odenet ({channels} ch, batch {batch})", "what": "train step (SGD)",
                         "dtype": "float32", "adjoint": adjoint, "adjoint_used": adj_name, "backend": b,
                         "timing": t, "nfe_forward": nfe[b][0], "nfe_backward": nfe[b][1], "data": source})
    return rows, None


def _cnf(settings, log):
    try:
        cnf_bench = importlib.import_module("benchmarks.cnf_bench")
    except Exception as err:  # noqa: BLE001
        return [], f"benchmarks/cnf_bench.py not importable ({type(err).__name__}: {err})"
    batch = settings.pick(512, 128)
    rows = []
    for dtype in settings.pick(("float32", "float64"), ("float32",)):
        for adjoint in settings.pick(("dto", "backsolve"), ("dto",)):
            cases, nfe, names = {}, {}, {}
            for b in ("jax", "torch"):
                cfg = cnf_bench.CNFConfig(backend=b, trace="exact", batch=batch, dtype=dtype,
                                          adjoint="auto" if adjoint == "dto" else "BacksolveAdjoint")
                flow = cnf_bench.cnf_model(cfg)
                trainer = pn.FlowTrainer(flow, optimizer=pn.Adam(lr=cfg.lr), loss=pn.NLL())
                trainer.init(flow.init(0))
                names[b] = flow.adjoint.name
                state = {"i": 0}

                def call(trainer=trainer, state=state, b=b):
                    state["i"] += 1
                    info = trainer.step(cnf_bench.toy_2d("moons", batch, state["i"], dtype=dtype))
                    nfe[b] = (info.stats.nfe_forward, info.stats.nfe_backward)
                cases[b] = call
            timing = interleaved(cases, rounds=settings.pick(10, 3), warmup=settings.pick(2, 1))
            for b, t in timing.items():
                log(f"  cnf {dtype} {adjoint:<10} {b:<6} {fmt_timing(t)}  NFE {nfe[b]}")
                rows.append({"problem": f"cnf moons (exact trace, batch {batch})", "what": "train step (Adam)",
                             "dtype": dtype, "adjoint": adjoint, "adjoint_used": names[b], "backend": b,
                             "timing": t, "nfe_forward": nfe[b][0], "nfe_backward": nfe[b][1]})
    return rows, None


def run(settings, log=print) -> dict:
    skipped = {b: r for b in BACKENDS if (r := available(b, settings.model_device))}
    notes = {}
    rows = _spiral(settings, skipped, log)
    if settings.device == "cpu":
        for name, fn in (("mnist", _mnist), ("cnf", _cnf)):
            extra, note = fn(settings, log)
            rows += extra
            if note:
                notes[name] = note
                log(f"  {name}: skipped — {note}")
    else:
        notes["mnist/cnf"] = "GPU runs of the MNIST and CNF steps are not wired in this suite yet"
    # ratios torch/jax per (problem, dtype, adjoint); JAX's discretise-then-optimise counterpart of torch
    # "direct" is reported both as JAX direct and as JAX checkpoint.
    ratios = []
    by = {(r["problem"], r["dtype"], r["adjoint"], r["backend"]): r["timing"]["median_s"] for r in rows}
    for (problem, dtype, adjoint, b), med in by.items():
        if b == "jax":
            continue
        for jax_adj in ((adjoint, "checkpoint") if adjoint == "direct" else (adjoint,)):
            if (problem, dtype, jax_adj, "jax") in by:
                ratios.append({"problem": problem, "dtype": dtype, "adjoint": adjoint, "backend": b,
                               "vs": f"jax {jax_adj}", "ratio": med / by[(problem, dtype, jax_adj, "jax")]})
    for r in ratios:
        log(f"  {r['problem']:<40} {r['dtype']} {r['backend']} {r['adjoint']} / {r['vs']}: {r['ratio']:.2f}×")
    return {"settings": {"spiral": "batch 20x10, Dopri5, rtol 1e-3, atol 1e-4, value_and_grad (L1)"},
            "rows": rows, "ratios": ratios, "skipped_backends": skipped, "notes": notes}
