"""Run one model on every backend with identical weights and print how far they agree; write the figures to JSON.

    python examples/compare_backends.py [--out comparison.json]

For each setting (tolerance × gradient method) ``pn.compare`` runs the same model, weights, batch and loss on
each backend and reports, per backend, the loss, the forward/backward evaluation counts (NFE), the accepted and
rejected steps, the time per call and the *round-off floor* (how far that backend's own gradient moves when the
weights are nudged by 1e-15), and per pair of backends the largest relative differences of the outputs and of
both gradients. A backend that is not installed (Julia, here) is listed as skipped, with the install command.
"""

import argparse
import json
import os

import numpy as np

import pyneuralode as pn
from pyneuralode.problems.spiral import sample_batch, spiral_data, spiral_field

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="comparison.json", help="where to write the figures (JSON)")
args = parser.parse_args()

ts, ys = spiral_data()                                    # the paper's spiral
y0, t, target = sample_batch(np.random.default_rng(0), ts, ys)   # 20 windows x 10 points
loss = pn.L1(target)

settings = [(1e-6, pn.DirectAdjoint())] if SMOKE else [
    (1e-3, pn.BacksolveAdjoint()), (1e-6, pn.DirectAdjoint()), (1e-10, pn.DirectAdjoint()),
    (1e-10, pn.BacksolveAdjoint())]
report = []
for rtol, adjoint in settings:
    model = pn.ODEModel(spiral_field(), solver=pn.Dopri5(), control=pn.StepControl(rtol=rtol, atol=rtol),
                        adjoint=adjoint, backend="jax", dtype="float64")
    comparison = pn.compare(model, backends=("jax", "torch", "julia"), params=model.init(seed=0), y0=y0, ts=t,
                            loss=loss, repeats=1 if SMOKE else 5)
    print(comparison, end="\n\n")
    report.append(comparison.to_dict())

with open(args.out, "w") as f:
    json.dump(report, f, indent=2)
print(f"wrote {args.out}")
