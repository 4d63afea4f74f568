"""One of two processes of a multi-host JAX run on localhost (``jax.distributed.initialize``, CPU collectives):
``python tests/_multiprocess.py PORT PROCESS_ID``. Both train 3 steps data-parallel over the 2 processes' devices;
process 0 prints a JSON object with the losses, NFE and final parameters for tests/test_scaling.py."""

import json
import sys

import jax

port, pid = int(sys.argv[1]), int(sys.argv[2])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402

import pyneuralode as pn  # noqa: E402

model = pn.ODEModel(pn.MLP([2, 16, 2], activation="tanh"), control=pn.StepControl(rtol=1e-7, atol=1e-9),
                    backend="jax")
rng = np.random.default_rng(0)
y0 = rng.standard_normal((8, 2))
ts = np.linspace(0.0, 1.0, 6)
target = np.asarray(model.solve(model.init(1), y0, ts).ys)
trainer = pn.Trainer(model, optimizer=pn.Adam(lr=1e-2), loss=pn.MSE, devices=len(jax.devices()))
trainer.init(model.init(0))
infos = [trainer.step(y0, ts, target) for _ in range(3)]
if pid == 0:
    print("RESULT", json.dumps({"devices": len(jax.devices()), "loss": [i.loss for i in infos],
               "nfe": [i.stats.nfe_forward for i in infos], "params": trainer.params.tolist()}))
jax.distributed.shutdown()
