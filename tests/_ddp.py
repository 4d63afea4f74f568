"""One rank of a torch DistributedDataParallel run on localhost (gloo): ``python tests/_ddp.py RANK WORLD PORT
SOLVER``. Each rank solves its half of a batch through ``model.native()`` wrapped in DDP and backpropagates the mean
loss of its half; DDP averages the gradients. Rank 0 prints them (``RESULT <json>``), with the single-process
gradient of the whole batch's mean loss, for tests/test_scaling.py."""

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

import pyneuralode as pn

rank, world, port, solver = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
dist.init_process_group("gloo", rank=rank, world_size=world)
torch.set_num_threads(1)

if solver == "RK4":
    model = pn.ODEModel(pn.MLP([2, 16, 2]), solver=pn.RK4(), control=pn.StepControl(dt=0.05), backend="torch")
else:
    model = pn.ODEModel(pn.MLP([2, 16, 2]), solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-9, atol=1e-9),
                        adjoint=pn.BacksolveAdjoint(), backend="torch")
rng = np.random.default_rng(0)
y0 = torch.as_tensor(rng.standard_normal((8, 2)))
ts = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
target = torch.as_tensor(rng.standard_normal((5, 8, 2)))
params = model.init(0)


def grads(module):
    return torch.cat([p.grad.reshape(-1) for p in module.parameters()]).tolist()


ode = torch.nn.parallel.DistributedDataParallel(model.native(params))
half = slice(rank * 8 // world, (rank + 1) * 8 // world)
loss = torch.mean((ode(y0[half], ts) - target[:, half]) ** 2)
loss.backward()
if rank == 0:
    single = model.native(params)
    whole = torch.mean((single(y0, ts) - target) ** 2)
    whole.backward()
    print("RESULT", json.dumps({"ddp": grads(ode.module), "single": grads(single)}))
dist.destroy_process_group()
