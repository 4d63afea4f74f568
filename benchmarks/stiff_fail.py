"""Time to error of an explicit solver on a stiff problem (issue 11 item 17): how long a user waits for the
``MaxStepsError`` that tells them to use a stiff solver.

``y' = A y``, ``A = diag(-1, -1e4)``, ``y0 = (1, 1)``, ``ts = [0, 100]``, Dopri5 at rtol=1e-6, atol=1e-8,
``StepControl(max_steps=100000)``: Dopri5's stability limit holds the step near 3.3e-4, so the solve would need
~3e5 steps. Each backend runs in a fresh process; the JAX time is split into the first call (compilation
included) and a second call. ``--root`` times another checkout's ``pyneuralode`` (e.g. the code before the fix):

    python -m benchmarks.stiff_fail                       # this checkout -> benchmarks/results/stiff_fail.json
    python -m benchmarks.stiff_fail --root /path/to/old --out /tmp/before.json --max-steps 10000 --calls 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import numpy as np
import pyneuralode as pn
backend, max_steps, calls = sys.argv[1], int(sys.argv[2]), ("first", "second")[:int(sys.argv[3])]
if backend == "torch":
    import torch
    torch.set_num_threads(1)
model = pn.ODEModel(pn.Linear(2, 2, bias=False), solver=pn.Dopri5(), backend=backend,
                    control=pn.StepControl(rtol=1e-6, atol=1e-8, max_steps=max_steps))
args = (np.array([-1.0, 0.0, 0.0, -1e4]), np.array([1.0, 1.0]), np.array([0.0, 100.0]))
out = {}
for call in calls:
    t = time.perf_counter()
    try:
        model.solve(*args)
        error = None
    except pn.PyNeuralODEError as err:
        error = f"{type(err).__name__}: {err}"
    out[call + "_s"] = time.perf_counter() - t
    out["error"] = error
print(json.dumps(out))
"""


def measure(backend: str, max_steps: int, root: Path, calls: int = 2) -> dict:
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", CHILD, backend, str(max_steps), str(calls)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        return {"failed": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stiff_fail", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose pyneuralode is timed")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--calls", type=int, choices=(1, 2), default=2,
                        help="2: also time a second call (JAX's first includes compilation)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stiff_fail.json")
    args = parser.parse_args(argv)
    results = {"problem": "y' = diag(-1, -1e4) y, ts=[0, 100], Dopri5 rtol=1e-6 atol=1e-8",
               "max_steps": args.max_steps, "root": str(args.root), "backends": {}}
    for backend in args.backends.split(","):
        results["backends"][backend] = r = measure(backend, args.max_steps, args.root.resolve(), args.calls)
        print(f"{backend}: {json.dumps(r)}", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
