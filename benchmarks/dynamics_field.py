"""The torch compile of a ``pn.dynamics`` field against the same field written by hand, and against
``torch.func.vmap`` of its one-sample form (the alternative the compiler rejected).

The Lotka–Volterra UDE of issue 12 (MLP 2-32-32-2, tanh), float64, one torch thread, forward and
forward+backward of the field alone, per state: one sample ``(2,)`` and a batch ``(64, 2)``. The three variants
are interleaved in one process (rounds of each), so their ratios are meaningful on a shared machine even when the
absolute times are not. The hand-written field is the same maths in torch functions (``F.linear``, ``torch.tanh``)
on the same parameter tensors, so the ratio isolates the graph compiler.

    python -m benchmarks.dynamics_field [--rounds 5] [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)

    import torch

    import pyneuralode as pn
    from pyneuralode.backends.torch import VectorField, load_flat

    torch.set_num_threads(1)

    @pn.dynamics(state=2, params={"alpha": 1.3, "delta": 1.8},
                 nets={"U": pn.MLP([2, 32, 32, 2], activation="tanh")})
    def lotka_volterra_ude(t, u, p):
        m = p.U(u)
        return np.stack([p.alpha * u[0] + m[0], -p.delta * u[1] + m[1]])

    field = VectorField(lotka_volterra_ude, dtype=torch.float64, device=torch.device("cpu"))
    load_flat(field, pn.init_params(lotka_volterra_ude, 0))
    params = field.flat_parameters()
    alpha, delta, w0, b0, w1, b1, w2, b2 = params
    linear = torch.nn.functional.linear

    def by_hand(t, u):
        m = linear(torch.tanh(linear(torch.tanh(linear(u, w0, b0)), w1, b1)), w2, b2)
        return torch.stack([alpha * u[..., 0] + m[..., 0], -delta * u[..., 1] + m[..., 1]], dim=-1)

    def vmapped(t, u):
        return field(t, u) if u.dim() == 1 else torch.func.vmap(lambda y: field(t, y))(u)

    variants = {"graph": field, "by_hand": by_hand, "vmap": vmapped}
    t = torch.tensor(0.1, dtype=torch.float64)
    results = {}
    for shape in [(2,), (64, 2)]:
        u = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        best = {name: [float("inf"), float("inf")] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    fn(t, u)
                forward = (time.perf_counter() - start) / args.calls
                start = time.perf_counter()
                for _ in range(args.calls):
                    torch.autograd.grad(fn(t, u).sum(), [u, *params])
                both = (time.perf_counter() - start) / args.calls
                best[name] = [min(best[name][0], forward), min(best[name][1], both)]
        key = "x".join(map(str, shape))
        results[key] = {name: {"forward_us": 1e6 * f, "forward_backward_us": 1e6 * b} for name, (f, b) in
                        best.items()}
        for name in ("graph", "vmap"):
            results[key][name]["ratio_to_by_hand"] = [round(best[name][i] / best["by_hand"][i], 3) for i in (0, 1)]
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
