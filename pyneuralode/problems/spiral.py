"""The spiral of Chen et al. (2018), exactly as torchdiffeq's ``examples/ode_demo.py``.

True system ``dy/dt = (y**3) A`` with ``A = [[-0.1, 2.0], [-2.0, -0.1]]`` (row-vector convention), ``y0 = [2, 0]``,
1000 points on ``[0, 25]``; training batches are 20 windows of 10 consecutive points; the network is
``2 -> 50 -> 2`` with tanh applied to ``y**3``; the loss is the mean absolute error.

The true trajectory is itself solved by pyneuralode: ``dy/dt = (y**3) A`` is the spec
``Sequential(Activation("cube"), Linear(2, 2, bias=False))`` with weight ``Aᵀ``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._control import StepControl
from .._layers import MLP, Activation, Linear, Sequential
from .._model import ODEModel
from ._options import check_options
from .._solvers import Dopri5
from .._options import checked_options

TRUE_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
TRUE_Y0 = np.array([2.0, 0.0])


def spiral_field() -> MLP:
    """The paper's learned field: ``f(t, y) = Linear(50, 2)(tanh(Linear(2, 50)(y**3)))``."""
    return MLP([2, 50, 2], activation="tanh", input_transform="cube")


@checked_options
def spiral_data(*, data_size: int = 1000, t1: float = 25.0, backend: str = "jax"):
    """``(ts, ys)``: the true spiral at ``data_size`` points on ``[0, t1]``, solved with Dopri5 at 1e-7/1e-9
    (torchdiffeq's defaults, which the paper's demo used)."""
    truth = ODEModel(Sequential(Activation("cube"), Linear(2, 2, bias=False)), solver=Dopri5(),
                     control=StepControl(rtol=1e-7, atol=1e-9, max_steps=100_000), backend=backend)
    ts = np.linspace(0.0, t1, data_size)
    return ts, truth.solve(TRUE_A.T.reshape(-1), TRUE_Y0, ts).ys


def sample_batch(rng: np.random.Generator, ts, ys, *, batch_time: int = 10, batch_size: int = 20):
    """``(y0, t, target)``: ``batch_size`` random windows of ``batch_time`` points (ode_demo.py ``get_batch``).

    ``y0`` is ``(batch_size, 2)``, ``t`` is ``ts[:batch_time]`` and ``target`` is ``(batch_time, batch_size, 2)``.
    """
    starts = rng.choice(np.arange(len(ts) - batch_time, dtype=np.int64), batch_size, replace=False)
    target = np.stack([ys[starts + i] for i in range(batch_time)], axis=0)
    return ys[starts], ts[:batch_time], target


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpiralConfig:
    """Settings of a spiral training run (the CLI's options, with the paper's values as defaults where they
    fit a CPU demo: the paper trains 2000 iterations with RMSprop lr=1e-3 at rtol=1e-7)."""

    backend: str = "jax"
    iters: int = 1000
    seed: int = 0
    lr: float = 1e-2
    rtol: float = 1e-5
    atol: float = 1e-6
    adjoint: str = "DirectAdjoint"
    dtype: str = "float64"
    batch_time: int = 10
    batch_size: int = 20
    eval_every: int = 20

    def __post_init__(self):
        check_options(self)
