"""One memory measurement in a fresh process (run by ``benchmarks/memory.py``; prints one JSON line).

    python -m benchmarks._memory_child BACKEND ADJOINT MULTIPLIER MAX_STEPS [THREADS]

Each point gets its own process: imports and a short warm-up solve first (and, on JAX, ahead-of-time compilation
of the gradient), then the kernel's peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``, which sets
``VmHWM`` to the current ``VmRSS``), the measured ``value_and_grad`` runs, and ``VmHWM - VmRSS(before)`` is the
memory that call added at its peak. On JAX the compiled executable's own accounting
(``memory_analysis()``: temporary buffers, arguments, outputs) is recorded too.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def reset_peak() -> int:
    """Reset the peak resident size (``VmHWM``, Linux ≥ 4.0: ``echo 5 > /proc/self/clear_refs``) and return the
    resident size now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def peak() -> int:
    """Peak resident size since the last :func:`reset_peak`."""
    return _status("VmHWM")


def measure(backend, adjoint, mult, max_steps, *, rss=True):
    """One point; with ``rss=False`` (JAX only, in-process) just the compiled memory analysis."""
    from benchmarks.memory import memory_problem
    import pyneuralode as pn

    model, params, y0, ts_of, target = memory_problem(backend, adjoint, max_steps)
    ts = ts_of(mult)
    loss = pn.L1(target)
    model.value_and_grad(params, y0, ts_of(0.1), loss=loss)  # warm-up: imports, kernels, short compile
    out = {"backend": backend, "adjoint": adjoint, "multiplier": mult, "max_steps": max_steps}
    if backend == "jax":
        import jax
        import jax.numpy as jnp
        prog = model.program
        _, p, y, t, grid = prog._arrays(params, y0, ts)
        tgt = {k: jnp.asarray(v) for k, v in loss.data().items()}
        compiled = prog._vg_jit.lower(p, y, t, grid, tgt, loss.kernel()).compile()
        ma = compiled.memory_analysis()
        out.update(temp_bytes=int(ma.temp_size_in_bytes), argument_bytes=int(ma.argument_size_in_bytes),
                   output_bytes=int(ma.output_size_in_bytes))
        base = reset_peak()
        if rss:
            jax.block_until_ready(compiled(p, y, t, grid, tgt))
        peak_ = peak()
        res = model.value_and_grad(params, y0, ts, loss=loss)  # same executable shape: stats for the record
    else:
        base = reset_peak()
        res = model.value_and_grad(params, y0, ts, loss=loss)
        peak_ = peak()
    out.update(rss_base_bytes=base, rss_peak_bytes=peak_, rss_delta_bytes=peak_ - base,
               steps=res.stats.steps_accepted + res.stats.steps_rejected, nfe_forward=res.stats.nfe_forward,
               nfe_backward=res.stats.nfe_backward, value=res.value,
               grad_norm=float(np.linalg.norm(res.grad_params)))
    if not rss:
        for key in ("rss_base_bytes", "rss_peak_bytes", "rss_delta_bytes"):
            out.pop(key)
    return out


def main(argv):
    backend, adjoint, mult, max_steps = argv[0], argv[1], float(argv[2]), int(argv[3])
    threads = int(argv[4]) if len(argv) > 4 else 1
    sys.path.insert(0, ".")
    if backend == "torch":
        import torch
        torch.set_num_threads(threads)
    print(json.dumps(measure(backend, adjoint, mult, max_steps)))


if __name__ == "__main__":
    main(sys.argv[1:])
