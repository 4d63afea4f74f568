"""Robertson's stiff kinetics: pyneuralode vs raw diffrax (same solver, same steps) and vs SciPy's solve_ivp.

Problem: ``pyneuralode.problems.robertson`` — scaled species, 40 log-spaced saves on [1e-5, 1e5], float64,
rtol 1e-6, atol 1e-7 (scaled state), initial step 1e-6 given to every contender (so pyneuralode and diffrax take identical steps;
asserted). Contenders, timed interleaved in one process (median after warm-up):

- ``pn solve`` / ``raw diffrax solve``: forward solve with the stiff solver (pyneuralode counts every evaluation
  exactly in-graph; raw diffrax counts nothing);
- ``pn grad`` / ``raw diffrax grad``: loss and gradient w.r.t. ``log k`` (MSE on the scaled species), pyneuralode's
  ``DirectAdjoint`` vs ``jax.value_and_grad`` through diffrax's ``RecursiveCheckpointAdjoint``;
- ``scipy BDF`` / ``scipy Radau`` (forward only, same tolerances): what a Python user has without pyneuralode,
  with and without the analytic Jacobian.
- ``pn solve, PI controller`` / ``pn grad, PI controller``: the pyneuralode model again with
  ``StepControl(pcoeff=0.2, icoeff=0.3)`` (JAX only), its steps and NFE recorded beside the integral controller's.
- ``pn solve, uncounted`` / ``pn grad, uncounted``: the model with ``Kvaerno5(count_evaluations=False)`` (the same
  steps and values, ``nfe_forward`` not taken): what the exact in-graph count costs.

Run: ``python -m benchmarks.stiff_bench [--rounds 20] [--solver Kvaerno5]`` →
``benchmarks/results/stiff_bench.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

import pyneuralode as pn
from pyneuralode.problems import robertson as rob

from ._harness import interleaved, write_results

RTOL, ATOL, DT0, MAX_STEPS = 1e-6, 1e-7, 1e-6, 20_000
PI = (0.2, 0.3)  # pcoeff, icoeff of the PI-controller rows


def _raw_diffrax(solver_name, ts, y0, target):
    """The same problem written directly against diffrax (a jnp field on the unbatched scaled state)."""
    import diffrax
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    from pyneuralode.backends.jax._diffrax import make_solver

    jax.config.update("jax_enable_x64", True)  # the raw contender computes in float64 like the model
    scale = jnp.asarray(rob.SCALE)

    def field(t, u, log_k):
        k1, k2, k3 = jnp.exp(log_k)
        a, b, c = u * scale
        r1, r2, r3 = k1 * a, k2 * b * b, k3 * b * c
        return jnp.stack([r3 - r1, r1 - r2 - r3, r2]) / scale

    solver = make_solver(getattr(pn, solver_name)())  # diffrax's class (KenCarp: its implicit tableau)

    def solve(log_k):
        controller = diffrax.PIDController(rtol=RTOL, atol=ATOL, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, safety=0.9,
                                           factormin=0.2, factormax=10.0, norm=optx.rms_norm)
        return diffrax.diffeqsolve(diffrax.ODETerm(field), solver, ts[0], ts[-1], DT0, y0, args=log_k,
                                   saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller,
                                   max_steps=MAX_STEPS, adjoint=diffrax.RecursiveCheckpointAdjoint())

    def loss(log_k):
        sol = solve(log_k)
        return jnp.mean((sol.ys - target) ** 2), sol.stats["num_steps"]

    solve_jit = jax.jit(lambda k: (lambda s: (s.ys, s.stats["num_steps"]))(solve(k)))
    grad_jit = jax.jit(jax.value_and_grad(loss, has_aux=True))
    return solve_jit, grad_jit


def _scipy(method, ts, y0, *, jac: bool):
    from scipy.integrate import solve_ivp

    k1, k2, k3 = rob.RATES
    s = rob.SCALE

    def f(t, u):
        a, b, c = u * s
        r1, r2, r3 = k1 * a, k2 * b * b, k3 * b * c
        return np.array([r3 - r1, r1 - r2 - r3, r2]) / s

    def jacobian(t, u):
        a, b, c = u * s
        j = np.array([[-k1, k3 * c, k3 * b], [k1, -2 * k2 * b - k3 * c, -k3 * b], [0.0, 2 * k2 * b, 0.0]])
        return j * s[None, :] / s[:, None]

    def run():
        sol = solve_ivp(f, (ts[0], ts[-1]), y0, method=method, t_eval=ts, rtol=RTOL, atol=ATOL, first_step=DT0,
                        jac=jacobian if jac else None)
        assert sol.success, sol.message
        return sol
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--solver", default="Kvaerno5")
    args = parser.parse_args(argv)

    ts = rob.robertson_times(40)
    y0 = rob.initial_state()
    params = rob.log_rates()
    reference = rob.reference_solution(ts)
    target = reference * 1.01
    model = pn.ODEModel(rob.robertson_dynamics(), solver=getattr(pn, args.solver)(),
                        control=pn.StepControl(rtol=RTOL, atol=ATOL, dt0=DT0, max_steps=MAX_STEPS),
                        adjoint=pn.DirectAdjoint(), backend="jax", dtype="float64")
    loss = pn.MSE(target)
    raw_solve, raw_grad = _raw_diffrax(args.solver, ts, y0, target)
    # The same model with a PI step-size controller (JAX only): its steps and time beside the integral one's
    pi_model = model.replace(control=pn.StepControl(rtol=RTOL, atol=ATOL, dt0=DT0, max_steps=MAX_STEPS,
                                                    pcoeff=PI[0], icoeff=PI[1]))

    import jax
    pn_sol = model.solve(params, y0, ts)
    raw_ys, raw_steps = jax.device_get(raw_solve(params))
    pn_res = model.value_and_grad(params, y0, ts, loss=loss)
    (raw_value, raw_grad_steps), raw_g = jax.device_get(raw_grad(params))
    assert pn_sol.stats.steps == int(raw_steps) == int(raw_grad_steps), (pn_sol.stats, raw_steps)
    agreement = {
        "steps": pn_sol.stats.steps, "steps_accepted": pn_sol.stats.steps_accepted,
        "steps_rejected": pn_sol.stats.steps_rejected, "nfe_forward": pn_sol.stats.nfe_forward,
        "max_abs_ys_diff_vs_raw": float(np.max(np.abs(pn_sol.ys - raw_ys))),
        "grad_rel_diff_vs_raw": float(np.max(np.abs(pn_res.grad_params - raw_g)) / np.max(np.abs(raw_g))),
        "max_abs_err_vs_radau_1e-12": float(np.max(np.abs(pn_sol.ys - reference))),
    }
    uncounted = model.replace(solver=getattr(pn, args.solver)(count_evaluations=False))
    un_sol = uncounted.solve(params, y0, ts)
    assert un_sol.stats.steps == pn_sol.stats.steps and np.array_equal(un_sol.ys, pn_sol.ys)
    pi_sol = pi_model.solve(params, y0, ts)
    agreement["pi_controller"] = {
        "pcoeff": PI[0], "icoeff": PI[1], "steps_accepted": pi_sol.stats.steps_accepted,
        "steps_rejected": pi_sol.stats.steps_rejected, "nfe_forward": pi_sol.stats.nfe_forward,
        "max_abs_err_vs_radau_1e-12": float(np.max(np.abs(pi_sol.ys - reference)))}
    cases = {
        "pn solve": lambda: model.solve(params, y0, ts),
        "raw diffrax solve": lambda: jax.block_until_ready(raw_solve(params)),
        "pn grad": lambda: model.value_and_grad(params, y0, ts, loss=loss),
        "raw diffrax grad": lambda: jax.block_until_ready(raw_grad(params)),
        "pn solve, uncounted": lambda: uncounted.solve(params, y0, ts),
        "pn grad, uncounted": lambda: uncounted.value_and_grad(params, y0, ts, loss=loss),
        "pn solve, PI controller": lambda: pi_model.solve(params, y0, ts),
        "pn grad, PI controller": lambda: pi_model.value_and_grad(params, y0, ts, loss=loss),
        "scipy BDF": _scipy("BDF", ts, y0, jac=False),
        "scipy BDF (analytic jac)": _scipy("BDF", ts, y0, jac=True),
        "scipy Radau": _scipy("Radau", ts, y0, jac=False),
        "scipy Radau (analytic jac)": _scipy("Radau", ts, y0, jac=True),
    }
    timings = interleaved(cases, rounds=args.rounds, warmup=args.warmup)
    med = {name: t["median_s"] for name, t in timings.items()}
    ratios = {
        "pn/raw solve": med["pn solve"] / med["raw diffrax solve"],
        "pn/raw grad": med["pn grad"] / med["raw diffrax grad"],
        "pn uncounted/raw solve": med["pn solve, uncounted"] / med["raw diffrax solve"],
        "pn uncounted/raw grad": med["pn grad, uncounted"] / med["raw diffrax grad"],
        **{f"pn solve / {name}": med["pn solve"] / med[name] for name in cases if name.startswith("scipy")},
        "pn solve PI / integral": med["pn solve, PI controller"] / med["pn solve"],
        "pn grad PI / integral": med["pn grad, PI controller"] / med["pn grad"],
    }
    for name, t in timings.items():
        print(f"{name:28s} {1e3 * t['median_s']:9.2f} ms  (p10 {1e3 * t['p10_s']:.2f}, p90 {1e3 * t['p90_s']:.2f})")
    for name, r in ratios.items():
        print(f"{name:40s} {r:6.3f}")
    print(agreement)
    path = write_results("stiff_bench", {
        "problem": "Robertson, scaled species, 40 log-spaced saves on [1e-5, 1e5], float64",
        "solver": args.solver, "rtol": RTOL, "atol": ATOL, "dt0": DT0, "rounds": args.rounds,
        "note": "2-core machine shared with other jobs: absolute times are noisy, interleaved ratios less so.",
        "timings": timings, "ratios": ratios, "agreement": agreement})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
