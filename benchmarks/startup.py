"""Start-up: ``import pyneuralode`` (numpy only) in a fresh interpreter, and per backend, in a fresh process, the
time to import the backend's libraries and the first ``value_and_grad`` of the spiral (compilation included)
against the second call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

IMPORT = "import time; t = time.perf_counter(); import pyneuralode; print(time.perf_counter() - t)"

FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import pyneuralode as pn
from benchmarks._common import spiral_inputs, spiral_model
t_pn = time.perf_counter() - t0
backend, device, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
if backend == "jax":
    import jax, diffrax, equinox, optax  # noqa: F401
elif backend == "torch":
    import torch, torchdiffeq  # noqa: F401
    torch.set_num_threads(threads)
t_libs = time.perf_counter() - t
y0, ts, target = spiral_inputs(20, dtype="float32")
model = spiral_model(backend, "direct", dtype="float32", device=None if device == "cpu" else device)
params = model.init(0)
t = time.perf_counter(); model.value_and_grad(params, y0, ts, loss=pn.L1(target)); first = time.perf_counter() - t
t = time.perf_counter(); model.value_and_grad(params, y0, ts, loss=pn.L1(target)); second = time.perf_counter() - t
print(json.dumps({"import_pyneuralode_s": t_pn, "import_backend_libs_s": t_libs, "first_call_s": first,
                  "second_call_s": second}))
"""


def _py(args, log):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["?"])[-1]
    return proc.stdout.strip().splitlines()[-1], None


def run(settings, log=print) -> dict:
    from ._common import available
    reps = settings.pick(5, 1)
    imports = []
    for _ in range(reps):
        out, err = _py(["-c", IMPORT], log)
        if out:
            imports.append(float(out))
    log(f"  import pyneuralode: median {1e3 * np.median(imports):.1f} ms over {len(imports)} fresh interpreters")
    first, skipped = {}, {}
    for backend in ("jax", "torch", "julia"):
        reason = available(backend, settings.model_device)
        if reason:
            skipped[backend] = reason
            log(f"  {backend}: skipped — {reason}")
            continue
        runs = []
        for _ in range(settings.pick(3, 1)):
            out, err = _py(["-c", FIRST_CALL, backend, settings.device, str(settings.torch_threads)], log)
            if err:
                skipped[backend] = err
                break
            runs.append(json.loads(out))
        if runs:
            first[backend] = {k: float(np.median([r[k] for r in runs])) for k in runs[0]} | {"n": len(runs)}
            f = first[backend]
            log(f"  {backend}: import libs {f['import_backend_libs_s']:.2f} s, first call {f['first_call_s']:.2f} s,"
                f" second {1e3 * f['second_call_s']:.1f} ms")
    return {"import_pyneuralode_s": {"median": float(np.median(imports)), "min": float(np.min(imports)),
                                     "max": float(np.max(imports)), "n": len(imports)},
            "first_call": first, "skipped_backends": skipped,
            "settings": {"first_call": "spiral float32, DirectAdjoint, batch 20x10, rtol 1e-3, atol 1e-4, "
                                       "value_and_grad; each in a fresh process"}}
