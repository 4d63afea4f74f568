"""Latent ODEs on irregularly-sampled spirals (Chen et al. 2018 §5, Table 2): ``pyneuralode latent --obs 30|50|100``.

Data: :func:`pyneuralode.datasets.latent_spirals` (1000 spirals, 100 equally-spaced times, noise 0.1), each
series observed at ``obs`` of its 100 times drawn at random (:func:`pyneuralode.datasets.subsample`); the first
``train`` series train, the rest test. A batch is given on the 100-point grid (a superset of the batch's union of
observation times, so every batch has one shape and JAX compiles once) with each series' mask.

Metric (our reading of Table 2's "predictive RMSE on the test set"): encode each test series from its ``obs``
noisy observations, decode the posterior mean at all 100 times, and take the RMSE against the noise-free spiral
over all 100 times and both coordinates.

The RNN baseline (:mod:`._latent_rnn`) reads the same observations with time differences and predicts every time.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..backends import BACKEND_NAMES

from .._control import StepControl
from .._errors import SpecError
from .._latent import LatentODE
from .._layers import MLP
from .._optim import Adam
from ..train._host import host_update
from ._options import add_config_options, add_run_options, check_options, config_from_args, option_type, run_problem


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatentConfig:
    """Settings of a latent-ODE spirals run (the CLI's options; sizes as torchdiffeq's ``latent_ode.py``)."""

    obs: int = 30
    backend: str = "jax"
    iters: int = 500
    batch_size: int = 100
    lr: float = 1e-2
    latent_size: int = 4
    rnn_width: int = 25
    width: int = 20
    spirals: int = 1000
    train_size: int = 800
    rtol: float = 1e-3
    atol: float = 1e-4
    seed: int = 0
    eval_every: int = 50
    dtype: str = "float32"

    def __post_init__(self):
        if not 2 <= self.obs <= 100:
            raise SpecError(f"obs must be an integer in [2, 100] (observations of the 100 times), got {self.obs!r}.")
        if not 1 <= self.train_size < self.spirals:
            raise SpecError(f"train_size must be in [1, spirals - 1] (the rest test), got {self.train_size!r}.")
        check_options(self)


def latent_model(cfg: LatentConfig) -> LatentODE:
    """The latent ODE a run trains: torchdiffeq's sizes (latent 4, RNN 25, field and decoder width 20)."""
    return LatentODE(obs_dim=2, latent_dim=cfg.latent_size, rnn_hidden=cfg.rnn_width,
                     field=MLP([cfg.latent_size, cfg.width, cfg.latent_size], activation="elu"),
                     decoder=MLP([cfg.latent_size, cfg.width, 2], activation="relu"),
                     control=StepControl(rtol=cfg.rtol, atol=cfg.atol), backend=cfg.backend, dtype=cfg.dtype)


@dataclasses.dataclass(frozen=True)
class SpiralData:
    """The run's data: shared times, noise-free and observed spirals, observation masks, train/test split."""

    ts: np.ndarray
    truth: np.ndarray
    observed: np.ndarray
    mask: np.ndarray
    train: np.ndarray
    test: np.ndarray


def spiral_data(cfg: LatentConfig) -> SpiralData:
    """Spirals and each series' ``obs`` random observation times (seeded by ``cfg.seed``)."""
    from ..datasets import latent_spirals, subsample
    ts, truth, observed, _ = latent_spirals(cfg.spirals, cfg.seed, dtype=cfg.dtype)
    mask = np.zeros(truth.shape[:2], bool)
    np.put_along_axis(mask, subsample(cfg.spirals, len(ts), cfg.obs, cfg.seed + 1), True, axis=1)
    index = np.arange(cfg.spirals)
    return SpiralData(ts, truth, observed, mask, index[:cfg.train_size], index[cfg.train_size:])


class LatentTrainer:
    """Adam on the host around ``model.value_and_grad`` (the update rule of :func:`pyneuralode.train._host.host_update`,
    torch.optim's); a fresh ``ε ~ N(0, I)`` per step. ``state_arrays``/``load_state_arrays`` make runs resumable."""

    def __init__(self, model: LatentODE, optimizer: Adam):
        if not isinstance(optimizer, Adam):
            raise SpecError(f"LatentTrainer takes pn.Adam(...), got {optimizer!r}.")
        self.model, self.optimizer = model, optimizer
        self._params, self._state, self._step = None, {}, 0

    def init(self, params) -> None:
        self._params = np.array(params, dtype=self.model.dtype)
        self._state = {"m": np.zeros_like(self._params), "v": np.zeros_like(self._params)}
        self._step = 0

    def step(self, ts, x, mask, eps):
        """One update; returns the :class:`pyneuralode.LatentValueAndGrad` at the parameters before it."""
        res = self.model.value_and_grad(self._params, ts, x, mask, eps=eps)
        self._params, self._state = host_update(self.optimizer, self._params, res.grad_params, self._state,
                                                self._step)
        self._params = self._params.astype(self.model.dtype)
        self._step += 1
        return res

    @property
    def params(self) -> np.ndarray:
        return self._params.copy()

    def state_arrays(self) -> dict:
        return {"params": self.params, "step": np.array(self._step),
                **{f"opt_{k}": np.asarray(v) for k, v in self._state.items()}}

    def load_state_arrays(self, arrays) -> None:
        self.init(arrays["params"])
        self._step = int(arrays["step"])
        self._state = {k[4:]: np.asarray(v) for k, v in arrays.items() if k.startswith("opt_")}


def test_rmse(model: LatentODE, params, data: SpiralData, series=None) -> float:
    """Predictive RMSE: posterior-mean reconstruction at all 100 times vs the noise-free spirals."""
    series = data.test if series is None else series
    pred = model.predict(params, data.ts, data.observed[series], data.ts, data.mask[series])
    return float(np.sqrt(np.mean((pred - data.truth[series]) ** 2)))


def add_parser(subparsers) -> None:
    """``pyneuralode latent``."""
    d = LatentConfig()
    p = subparsers.add_parser("latent", help="train a latent ODE on irregularly-sampled spirals (Chen et al. "
                                             "Table 2): progress, metrics, checkpoint/resume, PNG")
    p.add_argument("--obs", type=option_type("obs"), default=d.obs, choices=[30, 50, 100],
                   help="observations per spiral (of 100 times)")
    p.add_argument("--backend", default=d.backend, choices=BACKEND_NAMES)
    p.add_argument("--iters", type=option_type("iters"), default=d.iters)
    p.add_argument("--batch-size", type=option_type("batch_size"), default=d.batch_size)
    p.add_argument("--lr", type=option_type("lr"), default=d.lr, help="Adam learning rate")
    add_config_options(p, d, "rtol", "atol", "seed", "eval_every", "dtype")
    add_run_options(p, out_help="output directory (default runs/latent-<obs>-<backend>)", brief_help=True)
    p.set_defaults(func=run)


def run(args) -> int:
    """``pyneuralode latent``: train, print the summary, write metrics/checkpoint/PNG."""
    from pathlib import Path

    from ._latent_run import format_summary, train_latent

    cfg = config_from_args(LatentConfig, args)
    out = Path(args.out or f"runs/latent-{cfg.obs}-{cfg.backend}")
    return run_problem(args, cfg, out, train=train_latent, format_summary=format_summary, plot="latent.png")
