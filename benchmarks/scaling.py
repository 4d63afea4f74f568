"""Scaling: loss + gradient time vs batch size and hidden width (float32, rtol 1e-3, atol 1e-4, 10 output times),
and time + NFE vs tolerance (float64, rtol = atol from 1e-3 to 1e-9, 100 output times on [0, 2.5]) — spiral
network ``2 -> W -> 2``, Dopri5, each backend's discretise-then-optimise adjoint (JAX ``CheckpointAdjoint``,
torch ``DirectAdjoint``); backends interleaved at every point."""

from __future__ import annotations

import pyneuralode as pn

from ._common import available, fmt_timing, spiral_inputs, spiral_model
from ._harness import interleaved

DTO = {"jax": "checkpoint", "torch": "direct", "julia": "direct"}


def _point(settings, backends, log, label, *, batch=20, width=50, tol=None, dtype="float32", n_times=10):
    y0, ts, target = spiral_inputs(batch, dtype=dtype, n_times=n_times)
    rtol, atol = (tol, tol) if tol else (1e-3, 1e-4)
    cases, nfe = {}, {}
    for b in backends:
        model = spiral_model(b, DTO[b], dtype=dtype, rtol=rtol, atol=atol, width=width, max_steps=100_000,
                             device=settings.model_device)
        params = model.init(0)

        def call(model=model, params=params, b=b):
            res = model.value_and_grad(params, y0, ts, loss=pn.L1(target))
            nfe[b] = (res.stats.nfe_forward, res.stats.nfe_backward)
        cases[b] = call
    timing = interleaved(cases, rounds=settings.pick(10, 3), warmup=1)
    rows = []
    for b, t in timing.items():
        log(f"  {label:<16} {b:<6} {fmt_timing(t)}  NFE {nfe[b]}")
        rows.append({"batch": batch, "width": width, "tol": tol, "dtype": dtype, "backend": b,
                     "adjoint": DTO[b], "timing": t, "nfe_forward": nfe[b][0], "nfe_backward": nfe[b][1]})
    return rows


def run(settings, log=print) -> dict:
    skipped = {b: r for b in ("jax", "torch", "julia") if (r := available(b, settings.model_device))}
    backends = [b for b in ("jax", "torch", "julia") if b not in skipped]
    batches = settings.pick([1, 4, 16, 64, 256, 1024, 4096], [1, 4096])
    widths = settings.pick([50, 100, 200, 400, 800], [50, 800])
    tols = settings.pick([1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9], [1e-3, 1e-9])
    out = {"batch": [], "width": [], "tol": []}
    for n in batches:
        out["batch"] += _point(settings, backends, log, f"batch {n}", batch=n)
    for w in widths:
        out["width"] += _point(settings, backends, log, f"width {w}", width=w)
    for tol in tols:
        out["tol"] += _point(settings, backends, log, f"tol {tol:g}", tol=tol, dtype="float64", n_times=100)
    return {"settings": {"batch/width": "float32, rtol 1e-3, atol 1e-4, 10 times on [0, 0.225]",
                         "tol": "float64, batch 20, rtol = atol, 100 times on [0, 2.5]",
                         "adjoints": DTO},
            "series": out, "skipped_backends": skipped}
