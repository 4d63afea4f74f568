"""Scaling out: data-parallel training step vs device count, and ensemble throughput vs the alternatives.

    python benchmarks/scale_out.py [--devices 4] [--rounds 10] [--members 256] [--name scale_out]

1. **Data-parallel step** (``pn.Trainer(..., devices=n)``): the spiral field ``2 -> 50 -> 2`` (tanh on ``y**3``),
   batch 64, 10 save times, Dopri5 at rtol 1e-5 / atol 1e-6, float32, Adam; one device (no mesh) and meshes of
   1, 2, 4 devices, interleaved. On a CPU the devices are XLA's *forced host devices* — the host split into N
   devices that share its cores — so this measures the overhead of the sharded program, not a speed-up. On a
   GPU machine run it as is: ``jax.devices()`` then lists the GPUs.
2. **Ensemble throughput** (solves per second): ``M`` members of the field ``2 -> 32 -> 2`` (tanh), each with its own
   weights and initial state, Dopri5 at 1e-6, float64, 20 save times on [0, 2], the same first step ``dt0=0.05``
   everywhere so every contender takes the same steps:
   - ``model.solve_ensemble`` (one compiled ``vmap``, one device);
   - ``model.solve_ensemble(devices=N)`` (member axis sharded over N devices);
   - a Python loop over ``model.solve`` (what a user writes without ensembles);
   - raw ``jax.jit(jax.vmap(diffrax.diffeqsolve))`` with the same field written by hand (the target: >= 0.95x),
     its weights split once outside the solver loop as an equinox MLP's would be.
   These members take ~4 steps each, so this measures the fixed cost of a call as much as the solves.
3. **Parameter sweep**: 256 Lotka–Volterra members (a ``pn.dynamics`` field), each with its own four rates,
   ~100 steps each at 1e-8: ``solve_ensemble`` vs raw ``vmap(diffeqsolve)``, where the solves dominate.

Interleaved rounds, medians after warm-up (benchmarks/_harness.py); results in
``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4, help="the largest device count (forced on a CPU)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--loop-members", type=int, default=32, help="members timed in the Python-loop case")
    parser.add_argument("--name", default="scale_out")
    args = parser.parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_force_host_platform_device_count" not in flags:  # before JAX starts; ignored by GPUs
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    import pyneuralode as pn
    from benchmarks._harness import interleaved, write_results

    # ---------------------------------------------------------------- 1. data-parallel training step
    model = pn.ODEModel(pn.MLP([2, 50, 2], activation="tanh", input_transform="cube"), solver=pn.Dopri5(),
                        control=pn.StepControl(rtol=1e-5, atol=1e-6), backend="jax", dtype="float32")
    rng = np.random.default_rng(0)
    y0 = rng.uniform(-2, 2, (64, 2)).astype("float32")
    ts = np.linspace(0.0, 1.0, 10, dtype="float32")
    target = model.solve(model.init(1), y0, ts).ys
    counts = [None] + [n for n in (1, 2, 4, 8) if n <= min(args.devices, len(jax.devices()))]
    trainers, nfe = {}, {}
    for n in counts:
        trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-3), loss=pn.L1, devices=n)
        trainer.init(model.init(0))
        trainers["no mesh" if n is None else f"{n} device(s)"] = trainer

    def step_case(name, trainer):
        def call():
            nfe[name] = trainer.step(y0, ts, target).stats.nfe_forward
        return call

    step_timing = interleaved({k: step_case(k, t) for k, t in trainers.items()}, rounds=args.rounds, warmup=3)
    print("data-parallel training step (batch 64, float32):")
    for name, t in step_timing.items():
        print(f"  {name:<12} {1e3 * t['median_s']:8.2f} ms/step  {64 / t['median_s']:9.0f} samples/s  "
              f"NFE-F {nfe[name]}")

    # ---------------------------------------------------------------- 2. ensemble throughput
    jax.config.update("jax_enable_x64", True)  # the raw contender computes in float64 like the model
    m = args.members
    field = pn.MLP([2, 32, 2], activation="tanh")
    control = pn.StepControl(rtol=1e-6, atol=1e-6, dt0=0.05)
    ens_model = pn.ODEModel(field, solver=pn.Dopri5(), control=control, backend="jax")
    params = np.stack([ens_model.init(s) for s in range(m)])
    y0s = rng.uniform(-1, 1, (m, 2))
    ts_e = np.linspace(0.0, 2.0, 20)
    n_dev = min(args.devices, len(jax.devices()))
    m_loop = min(args.loop_members, m)

    def raw_field(t, y, weights):  # the same MLP by hand
        w1, b1, w2, b2 = weights
        return w2 @ jnp.tanh(w1 @ y + b1) + b2

    def raw_one(p, y):
        # The weights enter the solve as separate arrays (as an equinox MLP's leaves would), split from the
        # canonical layout W1 (32, 2), b1, W2 (2, 32), b2 once, outside the solver loop: slicing the flat vector
        # inside the field instead makes this contender ~1.5x slower (XLA does not hoist it out of the loop).
        weights = (p[:64].reshape(32, 2), p[64:96], p[96:160].reshape(2, 32), p[160:162])
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(raw_field), diffrax.Dopri5(), 0.0, 2.0, 0.05, y, args=weights,
            saveat=diffrax.SaveAt(ts=jnp.asarray(ts_e)),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6, pcoeff=0.0, icoeff=1.0, dcoeff=0.0),
            max_steps=4096, throw=False)
        return sol.ys, sol.stats["num_steps"]

    raw = jax.jit(jax.vmap(raw_one))
    steps = {}

    def ours():
        ens = ens_model.solve_ensemble(params, y0s, ts_e)
        # the arrays, not ens.stats: building 256 Stats objects costs ~0.6 ms, a third of this whole call
        steps["ours"] = int(ens.steps_accepted.sum() + ens.steps_rejected.sum())

    def ours_sharded():
        ens_model.solve_ensemble(params, y0s, ts_e, devices=n_dev)

    def loop():
        for k in range(m_loop):
            ens_model.solve(params[k], y0s[k], ts_e)

    def raw_vmap():
        ys, num = jax.device_get(raw(jnp.asarray(params), jnp.asarray(y0s)))
        steps["raw"] = int(num.sum())

    ens_timing = interleaved({"pn.solve_ensemble": ours, f"pn.solve_ensemble devices={n_dev}": ours_sharded,
                              f"loop over model.solve ({m_loop} members)": loop, "raw vmap(diffeqsolve)": raw_vmap},
                             rounds=args.rounds, warmup=2)
    # The target ratio is timed again with its two contenders alone, alternating A, B, A, B: in the four-way block
    # each case runs after a different neighbour (the 4-device sharded case leaves the caches and thread pools cold
    # for whatever follows it), which moved this ratio by ~10% between runs.
    pair_timing = interleaved({"pn.solve_ensemble": ours, "raw vmap(diffeqsolve)": raw_vmap},
                              rounds=2 * args.rounds, warmup=2)
    ours_ys = ens_model.solve_ensemble(params, y0s, ts_e).ys
    raw_ys = np.asarray(raw(jnp.asarray(params), jnp.asarray(y0s))[0])
    agreement = float(np.max(np.abs(ours_ys - raw_ys)))
    print(f"ensemble of {m} members (float64, Dopri5 1e-6, 20 save times); total steps ours {steps['ours']}, "
          f"raw {steps['raw']}; max |ours - raw| = {agreement:.1e}")
    throughput = {}
    for name, t in ens_timing.items():
        members = m_loop if name.startswith("loop") else m
        throughput[name] = members / t["median_s"]
        print(f"  {name:<40} {1e3 * t['median_s']:9.2f} ms  {throughput[name]:10.0f} solves/s")
    ratio_all = throughput["pn.solve_ensemble"] / throughput["raw vmap(diffeqsolve)"]
    ratio = pair_timing["raw vmap(diffeqsolve)"]["median_s"] / pair_timing["pn.solve_ensemble"]["median_s"]
    print(f"  pn.solve_ensemble / raw vmap throughput: {ratio:.3f} timed as a pair "
          f"({1e3 * pair_timing['pn.solve_ensemble']['median_s']:.2f} vs "
          f"{1e3 * pair_timing['raw vmap(diffeqsolve)']['median_s']:.2f} ms), {ratio_all:.3f} in the four-way block")
    # ---------------------------------------------------------------- 3. a parameter sweep with real work per member
    sweep = _parameter_sweep(args.members, rounds=2 * args.rounds)

    path = write_results(args.name, {
        "devices_available": [str(d) for d in jax.devices()],
        "note": ("forced host devices share the CPU's cores: the step timings measure the overhead of the sharded "
                 "program, not a speed-up" if jax.devices()[0].platform == "cpu" else "accelerator devices"),
        "step": {"batch": 64, "timing": step_timing, "nfe_forward": nfe},
        "parameter_sweep": sweep,
        "ensemble": {"members": m, "loop_members": m_loop, "timing": ens_timing, "solves_per_s": throughput,
                     "ratio_vs_raw_vmap": ratio, "pair_timing": pair_timing,
                     "ratio_vs_raw_vmap_in_four_way_block": ratio_all, "total_steps": steps, "max_abs_diff_vs_raw": agreement},
    })
    print(f"wrote {path}")
    return 0


def _parameter_sweep(members: int, *, rounds: int) -> dict:
    """Lotka–Volterra (a ``pn.dynamics`` field) with each member's four rates drawn within ±20% of (1.3, 0.9, 0.8,
    1.8), from [1, 1] over [0, 10] with 50 save times, Dopri5 at rtol = atol = 1e-8, ``dt0 = 0.01``: ~100 steps a
    member, so the solves, not the call's fixed costs, dominate. ``solve_ensemble`` vs raw ``vmap(diffeqsolve)``
    of the same field written in ``jax.numpy``, timed as an alternating pair."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np

    import pyneuralode as pn
    from benchmarks._harness import interleaved

    @pn.dynamics(state=2, params={"alpha": 1.3, "beta": 0.9, "gamma": 0.8, "delta": 1.8})
    def lotka_volterra(t, u, p):
        x, y = u[0], u[1]
        return np.stack([p.alpha * x - p.beta * x * y, p.gamma * x * y - p.delta * y])

    model = pn.ODEModel(lotka_volterra, solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-8, atol=1e-8, dt0=0.01),
                        backend="jax")
    rates = model.init(0) * np.random.default_rng(1).uniform(0.8, 1.2, (members, 4))
    y0, ts = np.ones(2), np.linspace(0.0, 10.0, 50)

    def raw_field(t, u, rates):
        alpha, beta, gamma, delta = rates
        x, y = u
        return jnp.stack([alpha * x - beta * x * y, gamma * x * y - delta * y])

    @jax.jit
    @jax.vmap
    def raw(rates):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(raw_field), diffrax.Dopri5(), 0.0, 10.0, 0.01, jnp.ones(2), args=rates,
            saveat=diffrax.SaveAt(ts=jnp.asarray(ts)),
            stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-8, pcoeff=0.0, icoeff=1.0, dcoeff=0.0),
            max_steps=4096, throw=False)
        return sol.ys, sol.stats["num_steps"]

    ours = model.solve_ensemble(rates, y0, ts)
    raw_ys, raw_steps = jax.device_get(raw(jnp.asarray(rates)))
    steps = np.array([s.steps for s in ours.stats])
    assert np.array_equal(steps, raw_steps), "the contenders must take the same steps"
    timing = interleaved({"pn.solve_ensemble": lambda: model.solve_ensemble(rates, y0, ts),
                          "raw vmap(diffeqsolve)": lambda: jax.device_get(raw(jnp.asarray(rates)))},
                         rounds=rounds, warmup=2)
    ratio = timing["raw vmap(diffeqsolve)"]["median_s"] / timing["pn.solve_ensemble"]["median_s"]
    diff = float(np.max(np.abs(ours.ys - raw_ys)))
    print(f"parameter sweep: {members} Lotka-Volterra members, {steps.mean():.0f} steps each on average "
          f"(max {steps.max()}); max |ours - raw| = {diff:.1e}")
    for name, t in timing.items():
        print(f"  {name:<40} {1e3 * t['median_s']:9.2f} ms  {members / t['median_s']:10.0f} solves/s")
    print(f"  pn.solve_ensemble / raw vmap throughput: {ratio:.3f}")
    return {"members": members, "mean_steps": float(steps.mean()), "max_steps_taken": int(steps.max()),
            "timing": timing, "ratio_vs_raw_vmap": ratio, "max_abs_diff_vs_raw": diff}


if __name__ == "__main__":
    sys.exit(main())
