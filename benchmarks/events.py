"""Terminating events: ``model.solve_event`` vs the same event written against raw diffrax and raw torchdiffeq.

Problem: a body falling with quadratic drag, ``x' = v``, ``v' = -g - c v |v|`` (``c = 0.02``), dropped from 40 m
at rest; the event is the height crossing zero (t* ≈ 3.246 s); Dopri5 at rtol = atol = 1e-9, float64, ``t1 = 60``.
Contenders, timed interleaved in one process (median after warm-up; the JAX ones and the torch ones in separate
blocks, torch on one thread as in the benchmark suite):

- ``pn-jax`` / ``raw-diffrax``: the event time and state; raw is ``diffrax.diffeqsolve`` with
  ``diffrax.Event(cond_fn, optx.Newton(...))`` and ``SaveAt(t1=True)``, one ``jax.jit``;
- ``pn-jax sens`` / ``raw-diffrax sens``: also the derivatives of (t*, y*) with respect to ``log c`` and
  ``y0`` (pyneuralode: ``sensitivities=True``; raw: ``jax.jacrev`` of the same jitted solve);
- ``pn-torch`` / ``raw-torchdiffeq``: ``torchdiffeq.odeint_event`` with the same field as an ``nn.Module``
  (raw torchdiffeq has no end time and no step clipping; pyneuralode adds both, see the torch backend);
- ``pn-jax ensemble`` / ``raw-diffrax vmap``: 256 drops from heights in [1, 200] m at once,
  ``model.solve_event_ensemble`` vs ``jax.jit(jax.vmap(...))`` of the raw event solve, both from the first step
  0.01 (raw diffrax's effective default), so they take the same steps.

Run: ``python -m benchmarks.events [--rounds 30]`` → ``benchmarks/results/events.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

import pyneuralode as pn

from ._harness import interleaved, median_ratios, print_ratios, timing_row, write_results

G, DRAG, HEIGHT, T1, TOL = 9.81, 0.02, 40.0, 60.0, 1e-9


@pn.dynamics(state=2, params={"drag": DRAG}, constants={"g": G}, positive=("drag",))
def falling(t, u, p):
    return np.stack([u[1], -p.g - p.drag * u[1] * np.abs(u[1])])


GROUND = pn.Event(lambda t, u, p: u[0])


def _raw_diffrax(y0):
    import diffrax
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    jax.config.update("jax_enable_x64", True)

    def field(t, u, log_drag):
        return jnp.stack([u[1], -G - jnp.exp(log_drag) * u[1] * jnp.abs(u[1])])

    def solve(log_drag, y):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Dopri5(), 0.0, T1, None, y, args=log_drag,
            stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL), saveat=diffrax.SaveAt(t1=True),
            event=diffrax.Event(lambda t, y, args, **_: y[0], optx.Newton(rtol=1e-12, atol=1e-12)), max_steps=4096)
        return sol.ts[-1], sol.ys[-1]

    plain = jax.jit(solve)
    sens = jax.jit(jax.jacrev(lambda p, y: jnp.concatenate([solve(p, y)[0][None], solve(p, y)[1]]),
                              argnums=(0, 1)))
    p0, y = jnp.asarray(np.log(DRAG)), jnp.asarray(y0)
    many = jax.jit(jax.vmap(solve, in_axes=(None, 0)))
    drops = jnp.asarray(_drops())
    return ((lambda: jax.block_until_ready(plain(p0, y))), (lambda: jax.block_until_ready(sens(p0, y))),
            plain(p0, y), (lambda: jax.block_until_ready(many(p0, drops))), many(p0, drops))


def _drops(members: int = 256) -> np.ndarray:
    return np.stack([np.linspace(1.0, 200.0, members), np.zeros(members)], axis=1)


def _raw_torchdiffeq(y0):
    import torch
    from torchdiffeq import odeint_event

    class Falling(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.log_drag = torch.nn.Parameter(torch.tensor(np.log(DRAG), dtype=torch.float64))

        def forward(self, t, u):
            return torch.stack([u[1], -G - torch.exp(self.log_drag) * u[1] * torch.abs(u[1])])

    field = Falling()
    y = torch.as_tensor(y0)
    t0 = torch.tensor(0.0, dtype=torch.float64)

    def call():
        with torch.no_grad():
            return odeint_event(field, y, t0, event_fn=lambda t, u: u[0], rtol=TOL, atol=TOL, method="dopri5")
    return call, call()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1, help="as the benchmark suite (see _common.py)")
    args = parser.parse_args(argv)
    from ._common import setup_torch
    setup_torch(args.torch_threads)

    y0 = np.array([HEIGHT, 0.0])
    control = pn.StepControl(rtol=TOL, atol=TOL)
    jax_model = pn.ODEModel(falling, solver=pn.Dopri5(), control=control, backend="jax")
    torch_model = jax_model.replace(backend="torch")
    params = jax_model.init(0)
    raw_solve, raw_sens, (raw_t, raw_y), raw_many, (raw_many_t, _) = _raw_diffrax(y0)
    raw_torch, (torch_t, _) = _raw_torchdiffeq(y0)

    def event(model, sens=False):
        return lambda: model.solve_event(params, y0, event=GROUND, t0=0.0, t1=T1, sensitivities=sens)

    hits = {"jax": event(jax_model)(), "torch": event(torch_model)()}
    agreement = {
        "t_event": {"pn-jax": hits["jax"].t, "raw-diffrax": float(raw_t), "pn-torch": hits["torch"].t,
                    "raw-torchdiffeq": float(torch_t)},
        "nfe_forward": {"pn-jax": hits["jax"].stats.nfe_forward, "pn-torch": hits["torch"].stats.nfe_forward},
        "steps": {"pn-jax": hits["jax"].stats.steps, "pn-torch": hits["torch"].stats.steps},
    }
    # Two blocks: JAX's sub-millisecond calls would otherwise follow ~20 ms of torch work each round (torch's
    # threads, still spinning, measured 1.7 ms for a 0.2 ms call).
    # raw diffeqsolve with dt0=None starts every member at 0.01 (diffrax 0.7.2's rule does not run inside
    # diffeqsolve); the pyneuralode ensemble is given the same first step, so both take the same steps
    same_start = jax_model.replace(control=pn.StepControl(rtol=TOL, atol=TOL, dt0=0.01))
    drops = _drops()

    def ensemble():
        return same_start.solve_event_ensemble(params, drops, event=GROUND, t0=0.0, t1=T1)

    many = ensemble()
    agreement["ensemble_max_t_diff_vs_raw_vmap"] = float(np.max(np.abs(many.t - np.asarray(raw_many_t))))
    timing = interleaved({"pn-jax": event(jax_model), "raw-diffrax": raw_solve,
                          "pn-jax sens": event(jax_model, True), "raw-diffrax sens": raw_sens},
                         rounds=args.rounds, warmup=args.warmup)
    timing.update(interleaved({"pn-jax ensemble": ensemble, "raw-diffrax vmap": raw_many},
                              rounds=args.rounds, warmup=args.warmup))
    timing.update(interleaved({"pn-torch": event(torch_model), "raw-torchdiffeq": raw_torch},
                              rounds=args.rounds, warmup=args.warmup))
    ratios = median_ratios(timing, (("pn-jax", "raw-diffrax"), ("pn-jax sens", "raw-diffrax sens"),
                                    ("pn-jax ensemble", "raw-diffrax vmap"), ("pn-torch", "raw-torchdiffeq")))
    print("terminating event, falling body with drag (Dopri5, 1e-9, float64):")
    for name, t in timing.items():
        print(timing_row(name, t))
    print_ratios(ratios)
    print("event times:", agreement["t_event"], "NFE:", agreement["nfe_forward"],
          "ensemble vs raw vmap:", agreement["ensemble_max_t_diff_vs_raw_vmap"])
    path = write_results("events", {"problem": "falling body with quadratic drag, event x = 0", "rtol": TOL,
                                    "atol": TOL, "rounds": args.rounds, "timings": timing, "ratios": ratios,
                                    "agreement": agreement})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
