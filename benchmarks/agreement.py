"""Agreement: per benchmark problem, the cross-backend relative difference of the loss gradient (``max |a - b| /
max |b|`` over the canonical parameter vector) and the NFE on each backend, at three tolerances (MNIST: 1e-3, 1e-5, 1e-7), float64,
``DirectAdjoint`` on both (the exact gradient of each backend's discrete solve), identical weights and inputs.
The spiral goes through ``pn.compare``; MNIST (a small ODE-Net) and the CNF through their own ``value_and_grad``."""

from __future__ import annotations

import itertools

import numpy as np

import pyneuralode as pn
from pyneuralode._compare import relative_difference

from ._common import available, spiral_inputs, spiral_model

TOLS = (1e-3, 1e-6, 1e-10)
MNIST_TOLS = (1e-3, 1e-5, 1e-7)  # 1e-10 costs ~8000 NFE per solve on the ODE-Net: minutes on a small CPU


def _pairs(problem, tol, results, log):
    rows = []
    for (a, ra), (b, rb) in itertools.combinations(results.items(), 2):
        row = {"problem": problem, "tol": tol, "a": a, "b": b,
               "grad_rel_diff": relative_difference(ra["grad"], rb["grad"]),
               "value_rel_diff": abs(ra["value"] - rb["value"]) / max(abs(rb["value"]), 1e-300),
               "nfe": {a: ra["nfe"], b: rb["nfe"]}}
        log(f"  {problem:<28} tol {tol:<6g} {a} vs {b}: grad rel diff {row['grad_rel_diff']:.2e}, "
            f"NFE {a} {ra['nfe']} {b} {rb['nfe']}")
        rows.append(row)
    return rows


def _spiral(backends, log):
    rows = []
    y0, ts, target = spiral_inputs(20, dtype="float64")
    for tol in TOLS:
        model = spiral_model(backends[0], "direct", dtype="float64", rtol=tol, atol=tol, max_steps=100_000)
        cmp = pn.compare(model, backends=backends, params=model.init(0), y0=y0, ts=ts, loss=pn.L1(target),
                         repeats=1)
        results = {r.backend: {"grad": r.grad_params, "value": r.value, "nfe": [r.nfe_forward, r.nfe_backward]}
                   for r in cmp.results}
        rows += _pairs("spiral (20x10)", tol, results, log)
    return rows


def _mnist(backends, log, channels=4, batch=4, tols=MNIST_TOLS):
    rows = []
    try:
        data = pn.datasets.mnist("train")
        x, y = np.asarray(data.images[:batch], dtype=np.float64), np.asarray(data.labels[:batch])
    except pn.DataError:
        rng = np.random.default_rng(0)
        x, y = rng.random((batch, 1, 28, 28)), rng.integers(0, 10, batch)
    for tol in tols:
        spec = pn.problems.mnist_model("odenet", channels=channels, tol=tol, adjoint=pn.DirectAdjoint())
        results = {}
        params = pn.init_params(spec, 0, "float64")
        for b in backends:
            net = pn.Network(spec, input_shape=(1, 28, 28), backend=b, dtype="float64")
            res = net.value_and_grad(params, x.reshape(batch, 1, 28, 28), y)
            results[b] = {"grad": res.grad_params, "value": res.value,
                          "nfe": [res.stats.nfe_forward, res.stats.nfe_backward]}
        rows += _pairs(f"mnist odenet ({channels} ch, batch {batch})", tol, results, log)
    return rows


def _cnf(backends, log, batch=64, tols=TOLS):
    rows = []
    x = pn.datasets.toy_2d("moons", batch, 0, dtype="float64")
    for tol in tols:
        results = {}
        for b in backends:
            flow = pn.CNF(pn.MLP([2, 64, 64, 2], time_input=True), trace="exact", solver=pn.Dopri5(),
                          control=pn.StepControl(rtol=tol, atol=tol, max_steps=100_000),
                          adjoint=pn.DirectAdjoint(), backend=b, dtype="float64")
            res = flow.value_and_grad(flow.init(0), x)
            results[b] = {"grad": res.grad_params, "value": res.value,
                          "nfe": [res.stats.nfe_forward, res.stats.nfe_backward]}
        rows += _pairs(f"cnf moons (exact, batch {batch})", tol, results, log)
    return rows


def run(settings, log=print) -> dict:
    skipped = {b: r for b in ("jax", "torch", "julia") if (r := available(b, settings.model_device))}
    backends = tuple(b for b in ("jax", "torch", "julia") if b not in skipped)
    rows, notes = [], {}
    if len(backends) < 2:
        return {"skipped": f"fewer than two backends run here ({skipped})"}
    mnist = _mnist if not settings.quick else (lambda b, log: _mnist(b, log, tols=(1e-3,)))
    cnf = _cnf if not settings.quick else (lambda b, log: _cnf(b, log, tols=(1e-3,)))
    for name, fn in (("spiral", _spiral), ("mnist", mnist), ("cnf", cnf)):
        try:
            rows += fn(backends, log)
        except Exception as err:  # noqa: BLE001 - report and keep the suite going
            notes[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log(f"  {name}: failed — {notes[name]}")
    return {"settings": {"dtype": "float64", "adjoint": "DirectAdjoint", "rtol = atol": list(TOLS),
                         "rtol = atol (mnist)": list(MNIST_TOLS) if not settings.quick else [1e-3]},
            "rows": rows, "skipped_backends": skipped, "notes": notes}
