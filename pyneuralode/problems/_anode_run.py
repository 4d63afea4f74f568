"""Train a NODE and an ANODE side by side on A1 or A2: metrics JSON/CSV, progress and a PNG."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._augment import Augment
from .._blocks import ODEBlock
from .._classify import CrossEntropy
from .._control import StepControl
from .._layers import MLP, Linear, Sequential
from .._losses import MSE
from .._model import ODEModel
from .._network import Network, sum_stats
from .._optim import Adam
from .._params import num_params
from ..datasets import anode_a1, anode_a2
from ..train import RunDirectory, Trainer, progress
from ._runs import rng_state, start_run
from .anode import AnodeConfig

KINDS = ("node", "anode")


def _field(cfg: AnodeConfig, features: int, width: int) -> MLP:
    return MLP([features, width, width, features], activation=cfg.activation)


def _spec(cfg: AnodeConfig, kind: str, width: int):
    """The model spec of ``kind``: an ODE field (a1) or a classifier network (a2)."""
    n = 1 if cfg.problem == "a1" else 2
    d = cfg.augment_dims if kind == "anode" else 0
    field = _field(cfg, n + d, width)
    if cfg.problem == "a1":
        return field
    block = ODEBlock(field, control=StepControl(rtol=cfg.rtol, atol=cfg.atol))
    return Sequential(*([Augment(d)] if d else []), block, Linear(n + d, 2))


def widths(cfg: AnodeConfig) -> dict[str, int]:
    """Hidden widths: ANODE's is ``cfg.width``; NODE's the same, or (``match_params``) the one whose parameter count
    is nearest ANODE's."""
    if not cfg.match_params:
        return {"node": cfg.width, "anode": cfg.width}
    target = num_params(_spec(cfg, "anode", cfg.width))
    best = min(range(1, 4 * cfg.width + 8), key=lambda h: abs(num_params(_spec(cfg, "node", h)) - target))
    return {"node": best, "anode": cfg.width}


def build_models(cfg: AnodeConfig) -> dict:
    """``{"node": model, "anode": model}`` (ODEModels for a1, Networks for a2)."""
    out = {}
    for kind, width in widths(cfg).items():
        spec = _spec(cfg, kind, width)
        if cfg.problem == "a1":
            out[kind] = ODEModel(spec, control=StepControl(rtol=cfg.rtol, atol=cfg.atol), backend=cfg.backend,
                                 dtype=cfg.dtype, augment=cfg.augment_dims if kind == "anode" else 0)
        else:
            out[kind] = Network(spec, input_shape=(2,), backend=cfg.backend, dtype=cfg.dtype)
    return out


class _A1:
    """A1: both points every step; ``ts = [0, 1]``; accuracy = sign of ``y(1)`` right."""

    def __init__(self, cfg, models, devices=None):
        self.x, self.y = anode_a1(dtype=cfg.dtype)
        self.ts = np.array([0.0, 1.0], dtype=cfg.dtype)
        self.models = models
        self.trainers = {k: Trainer(m, optimizer=Adam(lr=cfg.lr), loss=MSE, devices=devices)
                         for k, m in models.items()}

    def step(self, kind, rng):
        info = self.trainers[kind].step(self.x, self.ts, np.stack([self.x, self.y]))
        return 2 * info.loss, info.stats   # the t = 0 residual is zero: MSE at t = 1 is twice the mean

    def params(self, kind):
        return self.trainers[kind].params

    def evaluate(self, kind):
        out = self.models[kind].solve(self.params(kind), self.x, self.ts).ys[-1]
        return float(np.mean((out - self.y) ** 2)), float(np.mean(np.sign(out) == np.sign(self.y)))


class _A2:
    """A2: minibatches of the training points; test accuracy on a held-out draw."""

    def __init__(self, cfg, models, devices=None):
        self.cfg, self.models = cfg, models
        self.x, self.labels = anode_a2(cfg.points, cfg.seed, dtype=cfg.dtype)
        self.x_test, self.labels_test = anode_a2(max(300, cfg.points // 3), cfg.seed + 1, dtype=cfg.dtype)
        self.trainers = {k: m.program.make_trainer(Adam(lr=cfg.lr), CrossEntropy(), devices=devices)
                         for k, m in models.items()}

    def step(self, kind, rng):
        idx = rng.choice(len(self.x), min(self.cfg.batch_size, len(self.x)), replace=False)
        loss, _, block_stats = self.trainers[kind].step(self.x[idx], self.labels[idx])
        return loss, sum_stats(tuple(block_stats))

    def params(self, kind):
        return self.trainers[kind].get_params()

    def evaluate(self, kind):
        res = self.models[kind].value_and_grad(self.params(kind), self.x_test, self.labels_test)
        return res.value, float(np.mean(np.argmax(res.outputs, axis=1) == self.labels_test))


class _Pair:
    """Both trainers as one for the run directory: ``init`` takes ``{kind: params}``; state arrays are prefixed."""

    def __init__(self, trainers: dict):
        self.trainers = trainers

    def init(self, params: dict) -> None:
        for kind, trainer in self.trainers.items():
            trainer.init(params[kind])

    def state_arrays(self) -> dict:
        return {f"{kind}.{k}": v for kind, t in self.trainers.items() for k, v in t.state_arrays().items()}

    def load_state_arrays(self, arrays) -> None:
        for kind, trainer in self.trainers.items():
            trainer.load_state_arrays({k[len(kind) + 1:]: v for k, v in arrays.items() if k.startswith(kind + ".")})


def train_anode(cfg: AnodeConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
                show_progress: bool = True, devices=None) -> dict:
    """Train NODE and ANODE on the same batches; writes ``metrics.json``/``.csv``, ``checkpoint.npz``,
    ``node_params.npy``/``anode_params.npy`` and ``anode.png`` to ``out_dir`` (the run-directory rules of
    :class:`pyneuralode.train.RunDirectory`: ``resume`` continues, ``overwrite`` replaces) and returns the summary.
    ``devices`` trains both data-parallel on JAX (A1's two points, or each A2 minibatch, split over them)."""
    config = dataclasses.asdict(cfg)
    with RunDirectory(out_dir, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite, outputs=("anode.png", "node_params.npy", "anode_params.npy")) as run:
        models = build_models(cfg)
        task = (_A1 if cfg.problem == "a1" else _A2)(cfg, models, devices)
        pair = _Pair(task.trainers)
        rngs = {k: np.random.default_rng(cfg.seed) for k in KINDS}   # the same batches for both models
        start, log = start_run(run, pair, init_params={k: m.init(cfg.seed) for k, m in models.items()}, rng=rngs)
        log.summary.update(problem=f"anode-{cfg.problem}", config=config,
                           num_params={k: m.num_params for k, m in models.items()}, widths=widths(cfg))
        bar = progress(cfg.iters, f"anode {cfg.problem} [{cfg.backend}]", initial=start, enabled=show_progress)
        t_start = time.perf_counter()
        for it in range(start + 1, cfg.iters + 1):
            record: dict = {"iteration": it}
            for kind in KINDS:
                t0 = time.perf_counter()
                loss, stats = task.step(kind, rngs[kind])
                record.update({f"{kind}_loss": loss, f"{kind}_nfe_forward": stats.nfe_forward,
                               f"{kind}_nfe_backward": stats.nfe_backward,
                               f"{kind}_step_seconds": time.perf_counter() - t0})
            checkpoint_now = it % cfg.eval_every == 0 or it == cfg.iters
            if checkpoint_now:
                for kind in KINDS:
                    record[f"{kind}_test_loss"], record[f"{kind}_test_accuracy"] = task.evaluate(kind)
            log.append(**record)
            if checkpoint_now:
                run.commit(pair, log, it, rng=rng_state(rngs))
            bar.set_postfix(node=f"{record['node_loss']:.3f}/{record['node_nfe_forward']}",
                            anode=f"{record['anode_loss']:.3f}/{record['anode_nfe_forward']}")
            bar.update()
        bar.close()
        last = log.records[-1]
        for kind in KINDS:
            log.summary[kind] = {
                "final_train_loss": last[f"{kind}_loss"], "test_loss": last[f"{kind}_test_loss"],
                "test_accuracy": last[f"{kind}_test_accuracy"],
                "mean_nfe_forward": float(np.mean(log.column(f"{kind}_nfe_forward"))),
                "mean_nfe_backward": float(np.mean(log.column(f"{kind}_nfe_backward"))),
                "final_nfe_forward": int(last[f"{kind}_nfe_forward"]),
                "median_step_ms": 1e3 * float(np.median(log.column(f"{kind}_step_seconds")))}
            run.save_array(f"{kind}_params.npy", task.params(kind))
        log.summary["wall_seconds"] = time.perf_counter() - t_start
        run.write_metrics(log)
        from ._anode_plot import plot_anode
        with run.output("anode.png") as tmp:
            plot_anode(cfg, models, {k: task.params(k) for k in KINDS}, log, tmp)
    return log.summary


def format_summary(summary: dict) -> str:
    """NODE and ANODE side by side."""
    cfg = summary["config"]
    head = f"anode {cfg['problem']} [{cfg['backend']}, {cfg['dtype']}], {cfg['iters']} iterations, " \
           f"augment={cfg['augment_dims']}, {cfg['activation']}"
    rows = [("", "NODE", "ANODE"),
            ("hidden width", summary["widths"]["node"], summary["widths"]["anode"]),
            ("parameters", summary["num_params"]["node"], summary["num_params"]["anode"])]
    for key, label, fmt in [("final_train_loss", "final train loss", "{:.4f}"), ("test_loss", "test loss", "{:.4f}"),
                            ("test_accuracy", "test accuracy", "{:.3f}"),
                            ("mean_nfe_forward", "mean NFE forward", "{:.1f}"),
                            ("mean_nfe_backward", "mean NFE backward", "{:.1f}"),
                            ("final_nfe_forward", "final NFE forward", "{}"),
                            ("median_step_ms", "median step (ms)", "{:.2f}")]:
        rows.append((label, fmt.format(summary["node"][key]), fmt.format(summary["anode"][key])))
    width = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [head] + ["  ".join(f"{str(v):<{w}}" for v, w in zip(r, width)) for r in rows]
    lines.append(f"wall time {summary['wall_seconds']:.1f} s")
    return "\n".join(lines)
