"""Your own training loop in a run directory: exact resume, nothing lost to a crash or a full disk, one live run.

    python examples/resumable_run.py [--out runs/decay] [--iters 200]

``pn.train.RunDirectory`` is what ``pyneuralode spiral|mnist|cnf`` use. Inside ``with RunDirectory(...)`` the
directory is locked (a second run into it is refused), a fresh start refuses a directory that already holds a
run (``resume=True`` continues it, ``overwrite=True`` replaces it), and ``run.commit`` writes the checkpoint
together with the metric records, so an interrupted run continues with exactly the records and weights an
uninterrupted one would have. Here the model learns the rate of ``y' = -0.5 y`` from 20 samples; the script
trains half the iterations, stops as if interrupted, then resumes to the end.
"""

import argparse
import os

import numpy as np

import pyneuralode as pn
from pyneuralode.train import RunDirectory

SMOKE = os.environ.get("PYNEURALODE_EXAMPLE_SMOKE") == "1"   # make test runs every example tiny
LR = 5e-2

ts = np.linspace(0.0, 2.0, 20)
y0 = np.array([2.0])
ys = (2.0 * np.exp(-0.5 * ts))[:, None]                          # the data: y(t) = 2 exp(-t/2)
model = pn.ODEModel(pn.Linear(1, 1, bias=False), solver=pn.Dopri5(), control=pn.StepControl(rtol=1e-8, atol=1e-8),
                    backend="torch")


def train(out, iters, *, resume=False, overwrite=False):
    """Train to ``iters`` iterations in ``out``; returns the learned rate."""
    trainer = pn.Trainer(model, optimizer=pn.Adam(lr=LR), loss=pn.MSE)
    config = {"iters": iters, "lr": LR}                           # a resumed run must match (iters may grow)
    with RunDirectory(out, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite) as run:
        done, log, _ = run.start(trainer, init_params=model.init(0))
        for it in range(done + 1, iters + 1):
            info = trainer.step(y0, ts, ys)
            log.append(iteration=it, loss=info.loss, rate=float(trainer.params[0]))
            if it % 10 == 0 or it == iters:
                run.commit(trainer, log, it)                      # checkpoint + records, one atomic unit
        log.summary.update(final_rate=float(trainer.params[0]))
        run.write_metrics(log)                                    # metrics.json / metrics.csv
    print(f"{out}: iteration {iters}, learned rate {trainer.params[0]:+.4f} (true -0.5), "
          f"{len(log.records)} records")
    return trainer.params[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/decay")
    parser.add_argument("--iters", type=int, default=6 if SMOKE else 200)
    args = parser.parse_args()
    try:
        train(args.out, args.iters // 2, overwrite=True)          # stops half way, as if interrupted
        train(args.out, args.iters, resume=True)                  # continues from the checkpoint
    except pn.PyNeuralODEError as err:                            # in use, not writable, disk full, ...
        raise SystemExit(f"error: {err}")
