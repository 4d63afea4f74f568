"""Run in a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``: sharded training steps and
ensembles against their single-device twins; prints one JSON object for tests/test_scaling.py to check."""

import json
import sys

import numpy as np

import pyneuralode as pn

out = {"device_count": None}
import jax  # noqa: E402

out["device_count"] = len(jax.devices())

# --- Trainer: 3 Adam steps on 1, 2 and 4 devices from the same weights and batches
model = pn.ODEModel(pn.MLP([2, 16, 2], activation="tanh"), control=pn.StepControl(rtol=1e-7, atol=1e-9),
                    backend="jax")
rng = np.random.default_rng(0)
y0 = rng.standard_normal((8, 2))
ts = np.linspace(0.0, 1.0, 6)
target = model.solve(model.init(1), y0, ts).ys
runs = {}
for n in (None, 2, 4):
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=pn.MSE, devices=n)
    trainer.init(model.init(0))
    infos = [trainer.step(y0, ts, target) for _ in range(3)]
    runs[str(n)] = {"loss": [i.loss for i in infos], "nfe": [i.stats.nfe_forward for i in infos],
                    "nfe_b": [i.stats.nfe_backward for i in infos], "params": trainer.params.tolist()}
out["trainer"] = runs
try:
    t = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=pn.MSE, devices=4)
    t.init(model.init(0))
    t.step(y0[:6], ts, target[:, :6])
    out["indivisible"] = None
except pn.SpecError as err:
    out["indivisible"] = str(err)

# --- FlowTrainer (CNF, Hutchinson with fixed noise) on 1 vs 4 devices
cnf = pn.CNF(pn.ConcatSquashMLP([2, 16, 2]), trace="exact", backend="jax",
             control=pn.StepControl(rtol=1e-6, atol=1e-8))
x = rng.standard_normal((8, 2))
flows = {}
for n in (None, 4):
    ft = pn.FlowTrainer(cnf, optimizer=pn.Adam(lr=1e-2), devices=n)
    ft.init(cnf.init(0))
    infos = [ft.step(x) for _ in range(2)]
    flows[str(n)] = {"loss": [i.loss for i in infos], "nfe": [i.stats.nfe_forward for i in infos],
                     "params": ft.params.tolist()}
out["flow"] = flows

# --- ensemble of 5 members over 4 devices (padded) against the unsharded ensemble
params = np.stack([model.init(s) for s in range(5)])
single = model.solve_ensemble(params, y0[:5], ts)
sharded = model.solve_ensemble(params, y0[:5], ts, devices=4)
out["ensemble"] = {"max_abs_diff": float(np.max(np.abs(single.ys - sharded.ys))),
                   "stats_equal": list(single.stats) == list(sharded.stats), "ok": sharded.ok.tolist()}
# --- the anode command's trainers (A1: both points every step) on 2 devices against one
import tempfile  # noqa: E402

from pyneuralode.problems._anode_run import train_anode  # noqa: E402
from pyneuralode.problems.anode import AnodeConfig  # noqa: E402

anode = {}
with tempfile.TemporaryDirectory() as tmp:
    for n in (None, 2):
        cfg = AnodeConfig(problem="a1", iters=3, eval_every=3, dtype="float64")
        summary = train_anode(cfg, f"{tmp}/run-{n}", show_progress=False, devices=n)
        anode[str(n)] = {k: summary[k]["final_train_loss"] for k in ("node", "anode")}
out["anode"] = anode
json.dump(out, sys.stdout)
