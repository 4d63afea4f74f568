"""Per-sample observation times: one solve at the union of the times vs a vectorised solve per sample (JAX).

A batch of ``--batch`` 2-D series, each observed at ``--points`` of its own random times on [0, 5], under the
field ``MLP 2 -> 32 -> 2`` (tanh), Dopri5 at rtol = atol = 1e-6, float64, MSE against a target; the loss and
its gradient, two ways, timed interleaved in one process (median after warm-up):

- ``union``: ``model.value_and_grad(params, y0, ts)`` with ``ts`` of shape ``(batch, T)`` — the public API. One
  adaptive solve of the whole batch, saved at the union of the times (``batch * T`` save times), the loss moved
  onto the union with weight 0 wherever a sample has no observation. The steps are shared: the controller's RMS
  error norm spans the batch.
- ``vmap``: ``jax.vmap`` over samples of ``model.native()``'s solve at each sample's own ``T`` times, inside one
  ``jax.jit(jax.value_and_grad(...))`` — each sample its own steps, but a vectorised while loop runs until its
  slowest lane finishes (the route ``native()`` offers).

Reported: median milliseconds, the forward NFE of each route (union: the batch solve's; vmap: the slowest lane's
and the mean lane's), and the largest difference of the two losses (equal to the solver tolerance).
Run: ``python -m benchmarks.per_sample_times [--batch 64] [--points 20] [--rounds 30]`` ->
``benchmarks/results/per_sample_times.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

import pyneuralode as pn

from ._harness import interleaved, write_results

RTOL = ATOL = 1e-6


def _problem(batch: int, points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    model = pn.ODEModel(pn.MLP([2, 32, 2], activation="tanh"), solver=pn.Dopri5(),
                        control=pn.StepControl(rtol=RTOL, atol=ATOL), backend="jax", dtype="float64")
    params = model.init(0)
    y0 = rng.normal(size=(batch, 2))
    later = np.sort(rng.uniform(0.0, 5.0, size=(batch, points - 1)), axis=1)
    ts = np.concatenate([np.zeros((batch, 1)), later], axis=1)
    target = rng.normal(size=(points, batch, 2))
    return model, params, y0, ts, target


def union_route(model, params, y0, ts, target):
    """The public API: one solve at the union of every sample's times."""
    loss = pn.MSE(target)
    return lambda: model.value_and_grad(params, y0, ts, loss=loss)


def vmap_route(model, params, y0, ts, target):
    """``jax.vmap`` of ``native()`` per sample, one jitted value-and-gradient; returns ``(run, lane_nfe)``."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # a float64 native() runs in the caller's JAX
    ode = model.native(params)
    y0_j, ts_j, target_j = (jnp.asarray(a) for a in (y0, ts, np.moveaxis(target, 1, 0)))

    def per_sample(p, y, t, tgt):
        ys, stats = ode.with_params(p).solve(y[None], t)
        return jnp.mean((ys[:, 0] - tgt) ** 2), stats["nfe_forward"]

    @jax.jit
    def value_and_grad(p):
        def loss(p):
            values, nfe = jax.vmap(per_sample, in_axes=(None, 0, 0, 0))(p, y0_j, ts_j, target_j)
            return jnp.mean(values), nfe
        (value, nfe), grad = jax.value_and_grad(loss, has_aux=True)(p)
        return value, grad, nfe

    p = jnp.asarray(params)

    def run():
        value, grad, nfe = value_and_grad(p)
        return float(value), np.asarray(grad), np.asarray(nfe)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--points", type=int, default=20, help="observation times per sample, t = 0 included")
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per route (after warm-up)")
    args = parser.parse_args(argv)
    model, params, y0, ts, target = _problem(args.batch, args.points)
    cases = {"union": union_route(model, params, y0, ts, target), "vmap": vmap_route(model, params, y0, ts, target)}
    union, (vmap_value, vmap_grad, lane_nfe) = cases["union"](), cases["vmap"]()
    timing = interleaved(cases, rounds=args.rounds, warmup=3)
    med = {k: v["median_s"] for k, v in timing.items()}
    payload = {
        "settings": {"field": "MLP 2-32-2 tanh", "solver": "Dopri5", "rtol": RTOL, "atol": ATOL, "dtype": "float64",
                     "batch": args.batch, "points_per_sample": args.points,
                     "union_times": int(np.unique(ts).size), "rounds": args.rounds,
                     "note": "2-core CPU machine; ratios come from interleaved rounds in one process"},
        "timing": timing,
        "nfe_forward": {"union": union.stats.nfe_forward, "vmap_slowest_lane": int(lane_nfe.max()),
                        "vmap_mean_lane": float(lane_nfe.mean())},
        "loss": {"union": union.value, "vmap": vmap_value,
                 "relative_difference": abs(union.value - vmap_value) / abs(vmap_value),
                 "gradient_relative_difference": float(np.max(np.abs(union.grad_params - vmap_grad))
                                                       / np.max(np.abs(vmap_grad)))},
        "ratio_union_over_vmap": med["union"] / med["vmap"],
    }
    print(f"value_and_grad with per-sample times: batch {args.batch} x {args.points} points "
          f"({payload['settings']['union_times']} union times), median of {args.rounds} interleaved calls")
    for name, t in timing.items():
        print(f"  {name:<6} {1e3 * t['median_s']:9.2f} ms  (p10 {1e3 * t['p10_s']:.2f}, p90 {1e3 * t['p90_s']:.2f})")
    print(f"  forward NFE: union {union.stats.nfe_forward}; vmap slowest lane {lane_nfe.max()}, mean lane "
          f"{lane_nfe.mean():.1f}")
    print(f"  union / vmap time {payload['ratio_union_over_vmap']:.2f}; loss differs by "
          f"{payload['loss']['relative_difference']:.1e} relative, gradient by "
          f"{payload['loss']['gradient_relative_difference']:.1e}")
    print(f"\nwrote {write_results('per_sample_times', payload)}")


if __name__ == "__main__":
    main()
