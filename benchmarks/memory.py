"""Memory vs integration length: the adjoint method's O(1) memory claim (Chen et al. 2018, §2).

Problem: a 2 -> 50 -> 2 tanh MLP whose weights make it a near-linear oscillator (``W2 = J pinv(W1)``, ``J`` the
90° rotation, small ``W1``), so the number of solver steps grows in proportion to the length: batch 16, float64,
Dopri5, rtol 1e-5, atol 1e-7, ``t ∈ [0, 10·k]`` for ``k = 1, 10, 100`` (≈ 27, 260, 2500 steps), the loss on 10
output times only (so saved outputs do not grow). For each backend and adjoint, each point runs in a **fresh
subprocess** (``benchmarks/_memory_child.py``):

- torch: the peak resident memory one ``value_and_grad`` adds (``VmHWM`` reset before the call, minus ``VmRSS``);
- JAX: the compiled gradient's temporary buffers (``jax.jit(...).lower(...).compile().memory_analysis()``), and
  the same peak-RSS growth when that executable runs. JAX buffers are static: their size follows ``max_steps``, not
  the steps taken, so each point sets ``max_steps`` to 1.25 × the steps the solve needs (+16), as a user sizing
  the solve would; the steps are measured first by a forward solve.

Reading the result: torch's ``DirectAdjoint`` (backprop through ``odeint``) keeps every step's graph, so its
memory grows linearly with length; ``BacksolveAdjoint`` stays flat on both backends. On JAX none of the three
grows much: diffrax's ``DirectAdjoint`` nests ``lax.scan``s under ``jax.checkpoint`` and
``RecursiveCheckpointAdjoint`` checkpoints recursively, so both trade recomputation for memory that grows only
slowly with ``max_steps``.

``--quick`` measures only ``k = 1, 10`` and JAX's compiled analysis in-process (no RSS). The slope is the
log-log slope of memory vs ``k`` from ``k = 1`` to ``k = 100`` (1 = linear, 0 = flat), and the
growth in bytes from the shortest to the longest run, per extra solver step.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import pyneuralode as pn

from ._common import BACKEND_ADJOINTS, available

ROOT = Path(__file__).resolve().parent.parent
BASE_T1, BATCH = 10.0, 16


def memory_problem(backend, adjoint, max_steps):
    """``(model, params, y0, ts_of(k), target)`` of the memory case."""
    from ._common import ADJOINTS
    field = pn.MLP([2, 50, 2], activation="tanh")
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(50, 2)) * 0.1
    w2 = np.array([[0.0, 1.0], [-1.0, 0.0]]) @ np.linalg.pinv(w1)
    params = np.concatenate([w1.ravel(), np.zeros(50), w2.ravel(), np.zeros(2)])
    model = pn.ODEModel(field, solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-5, atol=1e-7,
                                                                          max_steps=max_steps),
                        adjoint=ADJOINTS[adjoint](), backend=backend, dtype="float64")
    y0 = rng.normal(size=(BATCH, 2))
    target = np.zeros((10, BATCH, 2))
    return model, params, y0, (lambda k: np.linspace(0.0, BASE_T1 * k, 10)), target


def _steps(multipliers):
    """Forward steps (accepted + rejected) per multiplier, measured on JAX (torch takes the same within a few)."""
    model, params, y0, ts_of, _ = memory_problem("jax", "direct", 1_000_000)
    return {k: model.solve(params, y0, ts_of(k)).stats.steps for k in multipliers}


def _child(backend, adjoint, k, max_steps, threads, log):
    cmd = [sys.executable, "-m", "benchmarks._memory_child", backend, adjoint, str(k), str(max_steps), str(threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["?"])[-1]
        log(f"    {backend} {adjoint} k={k}: failed: {msg}")
        return {"backend": backend, "adjoint": adjoint, "multiplier": k, "error": msg}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slope(points, key):
    """Log-log slope of ``key`` vs multiplier between the smallest and largest multiplier."""
    pts = sorted((p["multiplier"], p.get(key)) for p in points if p.get(key))
    if len(pts) < 2 or pts[0][1] <= 0 or pts[-1][1] <= 0:
        return None
    (k0, m0), (k1, m1) = pts[0], pts[-1]
    return math.log(m1 / m0) / math.log(k1 / k0)


def run(settings, log=print) -> dict:
    if settings.device != "cpu":
        return {"skipped": "GPU memory needs the device allocator's counters (torch.cuda.max_memory_allocated, "
                           "JAX memory_stats); not wired yet"}
    multipliers = settings.pick([1, 10, 100], [1, 10])
    steps = _steps(multipliers)
    log(f"  steps per length multiplier: {steps}")
    skipped = {b: r for b in ("jax", "torch", "julia") if (r := available(b))}
    points = []
    for backend in ("jax", "torch"):
        if backend in skipped:
            continue
        for adjoint in BACKEND_ADJOINTS[backend]:
            for k in multipliers:
                max_steps = int(1.25 * steps[k]) + 16
                if backend == "jax" and settings.quick:  # compiled analysis only, in this process
                    from ._memory_child import measure
                    p = measure(backend, adjoint, k, max_steps, rss=False)
                else:
                    p = _child(backend, adjoint, k, max_steps, settings.torch_threads, log)
                points.append(p)
                if "error" not in p:
                    extra = f", compiled temp {p['temp_bytes'] / 2**20:8.2f} MiB" if "temp_bytes" in p else ""
                    rss = (f"peak RSS +{p['rss_delta_bytes'] / 2**20:8.2f} MiB" if "rss_delta_bytes" in p
                           else "peak RSS not measured (--quick)")
                    log(f"    {backend:<5} {adjoint:<10} k={k:<3} steps {p['steps']:5d}  {rss}{extra}")
    slopes = []
    for backend in ("jax", "torch"):
        for adjoint in BACKEND_ADJOINTS[backend]:
            pts = [p for p in points if p["backend"] == backend and p["adjoint"] == adjoint]
            if not pts:
                continue
            s = {"backend": backend, "adjoint": adjoint}
            for key in ("rss_delta_bytes", "temp_bytes"):
                ok = sorted((p["multiplier"], p["steps"], p[key]) for p in pts if key in p)
                if len(ok) >= 2:
                    s[key.split("_")[0] + "_slope"] = slope(pts, key)
                    growth = ok[-1][2] - ok[0][2]
                    s[key.split("_")[0] + "_growth_bytes"] = growth
                    s[key.split("_")[0] + "_bytes_per_step"] = growth / max(ok[-1][1] - ok[0][1], 1)
            slopes.append(s)
            log(f"  {backend:<5} {adjoint:<10} " + ", ".join(f"{k} {v:.3g}" for k, v in s.items()
                                                            if isinstance(v, (int, float)) and v is not None))
    return {"settings": {"problem": "near-linear oscillator MLP 2-50-2 tanh", "batch": BATCH, "dtype": "float64",
                         "rtol": 1e-5, "atol": 1e-7, "t1": f"{BASE_T1:g} × k", "multipliers": multipliers,
                         "steps": steps, "method": "\n\n".join(__doc__.split("\n\n")[1:]).strip()},
            "points": points, "slopes": slopes, "skipped_backends": skipped}
