"""Train an MNIST network end to end: progress bar, per-epoch metrics JSON/CSV, atomic checkpoint after every
epoch (an interrupted run loses at most the current epoch; ``--resume`` continues exactly), and a PNG of test
error and NFE-F/NFE-B over training (the paper's Figure 3 style). Batches depend only on ``seed + epoch``."""

from __future__ import annotations

import dataclasses
import resource
import sys
import time

import numpy as np

from .._adjoints import as_adjoint
from .._classify import CrossEntropy
from .._errors import SpecError
from .._network import Network
from .._optim import SGD, Adam
from ..datasets import batches, mnist
from ..train import RunDirectory, progress
from ._mnist_models import MNIST_INPUT_SHAPE, mnist_model


def build_network(cfg) -> Network:
    """The :class:`Network` of a run's config."""
    kw = {"groups": cfg.groups}
    if cfg.model != "resnet":
        kw["tol"] = cfg.tol
        if cfg.adjoint != "auto":
            kw["adjoint"] = as_adjoint(cfg.adjoint)
    spec = mnist_model(cfg.model, channels=cfg.channels, **kw)
    return Network(spec, input_shape=MNIST_INPUT_SHAPE, backend=cfg.backend, dtype=cfg.dtype)


def build_optimizer(cfg, steps_per_epoch: int):
    """SGD momentum 0.9 with torchdiffeq's schedule (lr × batch/128; ×0.1 at epochs 60, 100, 140), or Adam."""
    if cfg.optimizer == "adam":
        return Adam(lr=cfg.lr)
    if cfg.optimizer != "sgd":
        raise SpecError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}.")
    return SGD(lr=cfg.lr * cfg.batch / 128, momentum=0.9,
               boundaries=tuple(e * steps_per_epoch for e in (60, 100, 140)), factors=(0.1, 0.1, 0.1))


def _peak_memory_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def evaluate(net, params, images, labels, batch: int):
    """``(error rate, mean forward NFE per batch)`` on a whole split."""
    wrong, nfe = 0, []
    for start in range(0, len(images), batch):
        logits, stats = net.apply(params, images[start:start + batch], return_stats=True)
        wrong += int(np.sum(np.argmax(logits, axis=1) != labels[start:start + batch]))
        nfe.append(stats.nfe_forward)
    return wrong / len(images), float(np.mean(nfe))


def train_mnist(cfg, out_dir, *, resume: bool = False, overwrite: bool = False, show_progress: bool = True,
                devices=None) -> dict:
    """Train per ``cfg``; writes ``metrics.json``/``.csv``, ``checkpoint.npz``, ``params.npy`` and
    ``mnist.png`` to ``out_dir`` and returns the run summary (``resume``/``overwrite``: the rules of
    :class:`pyneuralode.train.RunDirectory`). ``devices`` trains data-parallel on JAX."""
    with RunDirectory(out_dir, config=dataclasses.asdict(cfg), budget_key="epochs", counter="epoch", resume=resume,
                      overwrite=overwrite, outputs=("mnist.png",)) as run:
        return _train(cfg, run, show_progress, devices)


def _train(cfg, run: RunDirectory, show_progress: bool, devices) -> dict:
    if cfg.backend == "torch" and cfg.torch_threads:  # --torch-threads: this run only (a process-wide setting)
        import torch
        torch.set_num_threads(cfg.torch_threads)
    train, test = mnist("train"), mnist("test")
    x_train, y_train = np.asarray(train.images), np.asarray(train.labels)
    if cfg.train_limit:
        x_train, y_train = x_train[:cfg.train_limit], y_train[:cfg.train_limit]
    x_test, y_test = np.asarray(test.images)[:cfg.test_limit], np.asarray(test.labels)[:cfg.test_limit]
    steps_per_epoch = len(x_train) // cfg.batch
    net = build_network(cfg)
    trainer = net.program.make_trainer(build_optimizer(cfg, steps_per_epoch), CrossEntropy(), devices=devices)
    start, log, _ = run.start(trainer, init_params=net.init(cfg.seed))
    log.summary.update(problem="mnist", config=run.config, num_params=net.num_params)

    for epoch in range(start + 1, cfg.epochs + 1):
        bar = progress(steps_per_epoch, f"mnist {cfg.model} [{cfg.backend}] epoch {epoch}/{cfg.epochs}",
                       enabled=show_progress)
        losses, correct, nfe_f, nfe_b = [], 0, [], []
        t0 = time.perf_counter()
        for x, y in batches(x_train, y_train, cfg.batch, seed=cfg.seed * 100_003 + epoch, augment=cfg.augment,
                            drop_last=True):
            x = x.astype(cfg.dtype, copy=False)
            loss, logits, stats = trainer.step(x, y)
            losses.append(loss)
            correct += int(np.sum(np.argmax(logits, axis=1) == y))
            if stats:
                nfe_f.append(sum(s.nfe_forward for s in stats))
                nfe_b.append(sum(s.nfe_backward or 0 for s in stats))
            bar.set_postfix(loss=f"{loss:.3f}", nfe_f=nfe_f[-1] if nfe_f else 0, nfe_b=nfe_b[-1] if nfe_b else 0)
            bar.update()
        bar.close()
        epoch_seconds = time.perf_counter() - t0
        params = trainer.get_params()
        test_error, test_nfe = evaluate(net, params, x_test.astype(cfg.dtype, copy=False), y_test, cfg.test_batch)
        log.append(epoch=epoch, train_loss=float(np.mean(losses)), train_error=1 - correct / (len(losses) * cfg.batch),
                   test_error=test_error, nfe_forward=float(np.mean(nfe_f)) if nfe_f else 0.0,
                   nfe_backward=float(np.mean(nfe_b)) if nfe_b else 0.0, test_nfe_forward=test_nfe,
                   epoch_seconds=epoch_seconds, peak_memory_mb=_peak_memory_mb())
        run.commit(trainer, log, epoch)
        run.save_array("params.npy", params)
        with run.output("mnist.png") as tmp:
            _plot(log, tmp, cfg)
    last = log.records[-1] if log.records else {}
    log.summary.update(final_test_error=last.get("test_error"), final_test_accuracy=1 - last.get("test_error", 1),
                       total_train_seconds=float(sum(log.column("epoch_seconds"))))
    run.write_metrics(log)
    return dict(log.summary, out=str(run.path))


def _plot(log, path, cfg) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional (pip install "pyneuralode[plot]")
        return
    epochs = log.column("epoch")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, 100 * np.asarray(log.column("test_error")), marker="o")
    a.set(xlabel="epoch", ylabel="test error (%)", title=f"MNIST {cfg.model} [{cfg.backend}]")
    b.plot(epochs, log.column("nfe_forward"), marker="o", label="NFE-F")
    b.plot(epochs, log.column("nfe_backward"), marker="s", label="NFE-B")
    b.set(xlabel="epoch", ylabel="evaluations per step", title="NFE over training")
    b.legend()
    from matplotlib.ticker import MaxNLocator
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    """A short human-readable summary of a finished run."""
    err = summary.get("final_test_error")
    acc = "n/a" if err is None else f"{100 * (1 - err):.2f}%"
    return (f"MNIST {summary['config']['model']} on {summary['config']['backend']}: test accuracy {acc}, "
            f"{summary['num_params']:,} parameters, {summary.get('total_train_seconds', 0):.0f} s training; "
            f"outputs in {summary['out']}")
