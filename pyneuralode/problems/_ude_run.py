"""Train the Lotka–Volterra UDE end to end: Adam then L-BFGS, progress bar, metrics JSON/CSV, atomic checkpoint
with exact resume (in either phase), the missing-physics errors, a PNG and, with pysindy, the symbolic terms."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._losses import MSE
from .._optim import LBFGS, Adam
from .._params import param_layout
from .._schedules import ExponentialDecay
from ..train import RunDirectory, Trainer, progress
from ._runs import format_rows, median_step_ms
from .ude import (BETA, DATA_TIMES, GAMMA, T_DATA, T_EXTRAPOLATE, UDEConfig, lotka_volterra_data, missing_terms,
                  ude_model)

DENSE = 201
"""Points of the dense grid on [0, 10] the errors and the picture use (every 0.05)."""
SINDY_FILE = "sindy.txt"
"""The symbolic terms ``--sindy`` recovers, one equation a line."""


class AdamThenLBFGS:
    """The UDE recipe as one trainer: ``adam_steps`` Adam steps, then L-BFGS from where Adam stopped.

    Has what a :class:`pyneuralode.train.RunDirectory` uses (``init``, ``step``, ``params``, ``state_arrays``,
    ``load_state_arrays``); the state records the step count, so a checkpoint from either phase resumes in that
    phase.
    """

    def __init__(self, model, *, adam: Adam, adam_steps: int, lbfgs: LBFGS, loss=MSE):
        self.adam = Trainer(model, optimizer=adam, loss=loss)
        self.lbfgs = Trainer(model, optimizer=lbfgs, loss=loss)
        self.adam_steps, self.steps = adam_steps, 0

    @property
    def phase(self) -> str:
        """``"adam"`` or ``"lbfgs"``: the phase of the next step."""
        return "adam" if self.steps < self.adam_steps else "lbfgs"

    @property
    def _current(self) -> Trainer:
        return self.adam if self.steps <= self.adam_steps else self.lbfgs

    def init(self, params) -> None:
        self.adam.init(params)
        self.lbfgs.init(params)  # replaced by Adam's result at the switch; initialised so its state always exists
        self.steps = 0

    def step(self, *args, **kwargs):
        if self.steps == self.adam_steps:
            self.lbfgs.init(self.adam.params)
        trainer = self.adam if self.steps < self.adam_steps else self.lbfgs
        info = trainer.step(*args, **kwargs)
        self.steps += 1
        return info

    @property
    def params(self) -> np.ndarray:
        return self._current.params

    def state_arrays(self) -> dict:
        """Both phases' state (prefixed ``adam_``/``lbfgs_``) and the step count: the same names and shapes in
        either phase, as a run directory checks."""
        return {"phase_steps": np.array(self.steps), **{f"adam_{k}": v for k, v in self.adam.state_arrays().items()},
                **{f"lbfgs_{k}": v for k, v in self.lbfgs.state_arrays().items()}}

    def load_state_arrays(self, arrays) -> None:
        self.steps = int(arrays["phase_steps"])
        for prefix, trainer in (("adam_", self.adam), ("lbfgs_", self.lbfgs)):
            trainer.load_state_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})


def learned_physics(model, params) -> dict[str, float]:
    """``alpha`` and ``delta`` as the model uses them: learned (``exp`` of the stored logarithm) or the known
    constants."""
    field = model.field
    layout = {slot.name: slot for slot in param_layout(field)}
    out = {}
    for name in ("alpha", "delta"):
        if name in layout:
            out[name] = float(np.exp(params[layout[name].offset]))
        else:
            out[name] = float(dict(field.constants)[name].array)
    return out


def network_terms(model, params, states: np.ndarray) -> np.ndarray:
    """``U(x, y)`` at ``states`` ``(n, 2)``: the learned field minus its known part (NumPy reference)."""
    physics = learned_physics(model, params)
    du = model.field.evaluate(params, 0.0, states)
    return du - np.stack([physics["alpha"] * states[:, 0], -physics["delta"] * states[:, 1]], axis=1)


def _rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def ude_errors(model, params, data) -> tuple[dict, np.ndarray, np.ndarray]:
    """``(errors, fit, terms)``: relative L2 errors of the learned model against the truth, the fitted trajectory
    and the network terms on the dense grid.

    - ``terms_in_sample``: ``U`` vs the true missing terms ``(−βxy, γxy)`` along the true trajectory on [0, 5]
      (the data's span); ``terms_extrapolation``: the same on (5, 10].
    - ``trajectory_in_sample`` / ``trajectory_extrapolation``: the UDE solved from the first (noisy) observation
      over [0, 10] vs the true solution, on [0, 5] and on (5, 10].
    """
    dense_t, clean_dense, u_start = data["dense_t"], data["clean_dense"], data["noisy"][0]
    inside, outside = dense_t <= T_DATA, dense_t > T_DATA
    terms = network_terms(model, params, clean_dense)
    truth = missing_terms(clean_dense)
    fit = model.solve(params, u_start, dense_t).ys
    return {"terms_in_sample": _rel_l2(terms[inside], truth[inside]),
            "terms_extrapolation": _rel_l2(terms[outside], truth[outside]),
            "trajectory_in_sample": _rel_l2(fit[inside], clean_dense[inside]),
            "trajectory_extrapolation": _rel_l2(fit[outside], clean_dense[outside]),
            **learned_physics(model, params)}, fit, terms


def ude_dataset(cfg: UDEConfig) -> dict:
    """The run's arrays: data times, clean and noisy observations, and the dense truth on [0, 10]."""
    u0, ts, clean, noisy = lotka_volterra_data(cfg)
    dense_t = np.linspace(0.0, T_EXTRAPOLATE, DENSE)
    _, _, clean_dense, _ = lotka_volterra_data(cfg, dense_t)
    return {"u0": u0, "ts": ts, "clean": clean, "noisy": noisy, "dense_t": dense_t, "clean_dense": clean_dense}


def observation_window(cfg: UDEConfig, iteration: int) -> np.ndarray:
    """The mask of the observations the loss sees at ``iteration`` (1-based): ``t <= 1`` at first, growing
    linearly to all of [0, 5] over the first ``curriculum`` fraction of the Adam iterations."""
    ramp = cfg.curriculum * cfg.adam_iters
    horizon = T_DATA if ramp <= 0 else min(T_DATA, 1.0 + (T_DATA - 1.0) * (iteration - 1) / ramp)
    return np.broadcast_to((DATA_TIMES <= horizon + 1e-12)[:, None], (len(DATA_TIMES), 2))


def train_ude(cfg: UDEConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
              show_progress: bool = True) -> dict:
    """Fit the UDE to the noisy data; writes ``metrics.json``/``.csv``, ``checkpoint.npz``, ``params.npy`` and
    ``ude.png`` (and ``sindy.txt`` with ``cfg.sindy``) to ``out_dir`` and returns the run summary
    (``resume``/``overwrite``: the rules of :class:`pyneuralode.train.RunDirectory`)."""
    # The run's length is Adam + L-BFGS iterations; a resume may lengthen the L-BFGS phase only, so the run
    # directory sees the total as its budget and the config without lbfgs_iters. --sindy analyses the trained
    # network and does not change the training, so a finished run may be resumed with it added (or dropped).
    if cfg.sindy:
        from ._ude_sindy import require_pysindy
        require_pysindy()
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("lbfgs_iters", "sindy")}
    config["iters"] = cfg.adam_iters + cfg.lbfgs_iters
    with RunDirectory(out_dir, config=config, budget_key="iters", counter="iteration", resume=resume,
                      overwrite=overwrite, outputs=("ude.png", SINDY_FILE)) as run:
        return _train(cfg, run, show_progress)


def _train(cfg: UDEConfig, run: RunDirectory, show_progress: bool) -> dict:
    data = ude_dataset(cfg)
    model = ude_model(cfg)
    total = cfg.adam_iters + cfg.lbfgs_iters
    adam = Adam(lr=ExponentialDecay(init_value=cfg.lr, decay_rate=cfg.lr_decay,
                                    transition_steps=max(cfg.adam_iters, 1)))
    trainer = AdamThenLBFGS(model, adam=adam, adam_steps=cfg.adam_iters, lbfgs=LBFGS())
    y0, target = data["noisy"][0], data["noisy"]
    start, log, _ = run.start(trainer, init_params=model.init(cfg.seed))
    log.summary.update(problem="ude", config=dataclasses.asdict(cfg), num_params=model.num_params)

    title = f"ude{' +physics' if cfg.learn_physics else ''} [{cfg.backend}]"
    bar = progress(total, title, initial=start, enabled=show_progress)
    t_start = time.perf_counter()
    for it in range(start + 1, total + 1):
        phase = trainer.phase
        t0 = time.perf_counter()
        window = observation_window(cfg, it)
        info = trainer.step(y0, DATA_TIMES, target, mask=window)
        record = {"iteration": it, "phase": phase, "loss": info.loss, "observed": int(window[:, 0].sum()),
                  "evaluations": info.evaluations, "nfe_forward": info.stats.nfe_forward,
                  "nfe_backward": info.stats.nfe_backward, "step_seconds": time.perf_counter() - t0}
        checkpoint_now = it % cfg.eval_every == 0 or it == total or it == cfg.adam_iters
        if checkpoint_now:
            record.update(ude_errors(model, trainer.params, data)[0])
        log.append(**record)
        if checkpoint_now:
            run.commit(trainer, log, it)
        bar.set_postfix(phase=phase, loss=f"{info.loss:.3g}")
        bar.update()
    bar.close()

    params = trainer.params
    errors, fit, terms = ude_errors(model, params, data)
    adam_records = [r for r in log.records if r["phase"] == "adam"]
    log.summary.update(
        iterations=total, final_loss=log.column("loss")[-1] if log.records else None,
        loss_after_adam=adam_records[-1]["loss"] if adam_records else None, **errors,
        median_step_ms=median_step_ms(log) if log.records else None,
        wall_seconds=time.perf_counter() - t_start)
    if cfg.sindy:
        from ._ude_sindy import recover_terms
        inside = data["dense_t"] <= T_DATA
        log.summary["sindy"] = recover_terms(data["clean_dense"][inside], terms[inside])
        with run.output(SINDY_FILE) as tmp:
            tmp.write_text("\n".join(log.summary["sindy"]["equations"]) + "\n")
    else:  # an earlier --sindy result would describe other parameters than this run's
        (run.path / SINDY_FILE).unlink(missing_ok=True)
    run.write_metrics(log)
    run.save_array("params.npy", params)
    from ._ude_plot import plot_ude
    with run.output("ude.png") as tmp:
        plot_ude(data, fit, terms, log, tmp)
    return log.summary


def format_summary(summary: dict) -> str:
    """An aligned table of a run's headline figures."""
    c = summary["config"]
    rows = [("problem", "ude (Lotka-Volterra missing physics)" + (", alpha/delta learned" if c["learn_physics"]
                                                                   else "")),
            ("backend", c["backend"]), ("parameters", summary["num_params"]),
            ("iterations", f"{c['adam_iters']} Adam + {c['lbfgs_iters']} L-BFGS"),
            ("loss after Adam (MSE)", f"{summary['loss_after_adam']:.3e}" if summary["loss_after_adam"] else "-"),
            ("final loss (MSE)", f"{summary['final_loss']:.3e}" if summary["final_loss"] else "-"),
            ("U vs true terms, rel L2 [0, 5]", f"{summary['terms_in_sample']:.3e}"),
            ("U vs true terms, rel L2 (5, 10]", f"{summary['terms_extrapolation']:.3e}"),
            ("trajectory rel L2 [0, 5]", f"{summary['trajectory_in_sample']:.3e}"),
            ("trajectory rel L2 (5, 10] (extrapolation)", f"{summary['trajectory_extrapolation']:.3e}"),
            ("alpha, delta (true 1.3, 1.8)", f"{summary['alpha']:.4f}, {summary['delta']:.4f}"),
            ("wall time", f"{summary['wall_seconds']:.1f} s")]
    if "sindy" in summary:
        # each equation reads "U1 = -0.9 x y": the row names the term it recovers (true: -beta*x*y, gamma*x*y)
        rows += [(f"SINDy, learned {eq.split(' = ')[0]} (true {true})", eq.split(" = ", 1)[1])
                 for eq, true in zip(summary["sindy"]["equations"], (f"{-BETA:g} x y", f"{GAMMA:g} x y"))]
    return format_rows(rows)
