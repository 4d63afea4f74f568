"""The MNIST networks of Chen et al. (2018), Table 1, as torchdiffeq's ``examples/odenet_mnist.py`` builds them.

- Downsampling (``--downsampling-method conv``): Conv(1→C, 3) → GN → ReLU → Conv(C→C, 4, s2, p1) → GN → ReLU →
  Conv(C→C, 4, s2, p1): 28×28 → 26 → 13 → 6.
- Feature layers: **ODE-Net** one ``ODEBlock`` of ``ODEfunc(C)`` = GN → ReLU → ConcatConv2d(C+t → C, 3, p1) →
  GN → ReLU → ConcatConv2d → GN, on [0, 1] with Dopri5 at rtol = atol = ``tol`` (default 1e-3);
  **ResNet** six ``ResBlock(C, C)`` = x + conv3x3(ReLU(GN(conv3x3(ReLU(GN(x)))))), convolutions without bias.
- Head: GN → ReLU → AdaptiveAvgPool(1) → Flatten → Linear(C, 10).
- GN is ``GroupNorm(min(32, C), C)``.

With C = 64: ODE-Net and RK-Net 208,266 parameters, ResNet 576,778 (torchdiffeq's counts).

Gradient methods (our choices, where torchdiffeq's script has none):

- ODE-Net defaults to ``BacksolveAdjoint()`` — the paper's O(1)-memory adjoint method that Table 1 credits it
  with (torchdiffeq's script backpropagates through dopri5 unless ``--adjoint``; pass ``adjoint=`` to choose).
- RK-Net is the same block trained by backpropagation through the solver (``DirectAdjoint``), with a fixed-step
  classic ``RK4()`` at ``dt = 0.25`` (4 steps, 16 evaluations — about what Dopri5 at 1e-3 spends on this
  block): memory O(steps), as the paper's O(L̃). Backpropagating through an *adaptive* solve with
  ``DirectAdjoint`` would work too, but diffrax then reserves memory for ``max_steps`` steps.
"""

from __future__ import annotations

from .._adjoints import AbstractAdjoint, BacksolveAdjoint, DirectAdjoint
from .._blocks import ODEBlock, Residual
from .._control import StepControl
from .._conv_layers import ConcatConv2d, Conv2d, Flatten, GlobalAvgPool2d, ReLU, norm
from .._errors import SpecError
from .._layers import Activation, Linear, Sequential
from .._solvers import RK4, AbstractSolver, Dopri5
from .._options import checked_options

MNIST_MODELS = ("odenet", "rknet", "resnet")
MNIST_INPUT_SHAPE = (1, 28, 28)
RKNET_DT = 0.25


def odefunc(channels: int, activation: str = "relu", groups: int | None = None) -> Sequential:
    """torchdiffeq's ``ODEfunc(dim)``: GN → ReLU → ConcatConv2d → GN → ReLU → ConcatConv2d → GN.

    ``activation`` replaces the two ReLUs (e.g. ``"softplus"`` for smooth dynamics, see :func:`mnist_model`);
    ``groups`` the group norms' group count (default ``min(32, channels)``).
    """
    c = channels
    act = ReLU if activation == "relu" else (lambda: Activation(activation))
    return Sequential(norm(c, groups), act(), ConcatConv2d(c, c, 3, 1, 1), norm(c, groups), act(),
                      ConcatConv2d(c, c, 3, 1, 1), norm(c, groups))


def res_block(channels: int, groups: int | None = None) -> Residual:
    """torchdiffeq's ``ResBlock(C, C)`` (no downsampling): ``x + conv(relu(gn(conv(relu(gn(x))))))``."""
    c = channels
    return Residual(Sequential(norm(c, groups), ReLU(), Conv2d(c, c, 3, 1, 1, bias=False), norm(c, groups), ReLU(),
                               Conv2d(c, c, 3, 1, 1, bias=False)))


@checked_options
def mnist_model(kind: str = "odenet", *, channels: int = 64, tol: float = 1e-3,
                solver: AbstractSolver | None = None, adjoint: AbstractAdjoint | None = None,
                control: StepControl | None = None, activation: str = "relu",
                groups: int | None = None) -> Sequential:
    """The spec of the paper's MNIST ``"odenet"``, ``"rknet"`` or ``"resnet"`` (see the module docstring).

    **Arguments (keyword-only after ``kind``):**

    - ``channels``: feature channels ``C`` (64 in the paper; small values make fast tests).
    - ``tol``: rtol = atol of the ODE-Net's Dopri5 solve.
    - ``solver``, ``adjoint``, ``control``: override the ODE block's method (ODE-Net and RK-Net only).
    - ``activation``: the ODE block field's activation (default ``"relu"`` as the paper; a smooth one such as
      ``"softplus"`` gives smooth dynamics, for which adaptive solves agree across backends to the tolerance).
    - ``groups``: group count of every GroupNorm (default torchdiffeq's ``min(32, channels)``). Below 64 channels
      the default is one channel per group, and the head's GN → ReLU → global average pool then sees every channel
      normalised to mean 0, variance 1 per image, which slows learning badly; ``groups = channels // 2`` keeps the
      paper's two channels per group (``--quick`` uses it).

    Inputs are ``(1, 28, 28)`` images: ``pn.Network(spec, input_shape=(1, 28, 28), ...)``.
    """
    if kind not in MNIST_MODELS:
        raise SpecError(f"Unknown MNIST model {kind!r}: choose one of {', '.join(map(repr, MNIST_MODELS))}.")
    if kind == "resnet" and (solver or adjoint or control or activation != "relu"):
        raise SpecError("The ResNet has no ODE block: solver/adjoint/control/activation apply to 'odenet' and "
                        "'rknet' only.")
    c = channels
    down = [Conv2d(1, c, 3, 1), norm(c, groups), ReLU(), Conv2d(c, c, 4, 2, 1), norm(c, groups), ReLU(),
            Conv2d(c, c, 4, 2, 1)]
    if kind == "resnet":
        features = [res_block(c, groups) for _ in range(6)]
    elif kind == "odenet":
        features = [ODEBlock(odefunc(c, activation, groups), 1.0, solver=solver or Dopri5(),
                             control=control or StepControl(rtol=tol, atol=tol),
                             adjoint=adjoint or BacksolveAdjoint())]
    else:
        features = [ODEBlock(odefunc(c, activation, groups), 1.0, solver=solver or RK4(),
                             control=control or StepControl(dt=RKNET_DT, max_steps=round(1 / RKNET_DT)),
                             adjoint=adjoint or DirectAdjoint())]
    head = [norm(c, groups), ReLU(), GlobalAvgPool2d(), Flatten(), Linear(c, 10)]
    return Sequential(*down, *features, *head)
