"""Composite layers of a network spec: an ODE solve as a layer (``ODEBlock``) and a skip connection
(``Residual``).

``ODEBlock(field)`` maps ``x`` to ``y(t1)`` where ``dy/dt = field(t, y)``, ``y(0) = x`` — the paper's ODE-Net
block. It carries its own numerical method (solver, step control, gradient method), so one spec describes the
whole network, and its parameters are its field's, in the field's canonical order. Run networks that contain
blocks with :class:`pyneuralode.Network`; each backend solves a block with the same machinery as
:class:`pyneuralode.ODEModel`, with the same exact NFE counts.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

from ._adjoints import AbstractAdjoint, DirectAdjoint, as_adjoint
from ._control import StepControl, check_atol_shape, check_solver_control
from ._errors import SpecError
from ._layers import AbstractLayer, Sequential, check_state_preserving, walk
from ._solvers import AbstractSolver, Dopri5, as_solver


@dataclasses.dataclass(frozen=True)
class ODEBlock(AbstractLayer):
    """``x -> y(t1)`` with ``dy/dt = field(t, y)``, ``y(0) = x``, usable as a layer inside ``Sequential``.

    **Arguments:**

    - ``field``: the vector field spec; its output shape must equal its input shape.
    - ``t1``: the end time (the start is 0), default 1 as in the paper.
    - ``solver``, ``control``, ``adjoint`` (keyword-only): as in :class:`pyneuralode.ODEModel` (defaults
      ``Dopri5()``, ``StepControl()``, ``DirectAdjoint()``).
    """

    field: AbstractLayer
    t1: float = 1.0
    solver: AbstractSolver = dataclasses.field(default_factory=Dopri5, kw_only=True)
    control: StepControl = dataclasses.field(default_factory=StepControl, kw_only=True)
    adjoint: AbstractAdjoint = dataclasses.field(default_factory=DirectAdjoint, kw_only=True)

    def __post_init__(self):
        if not isinstance(self.field, AbstractLayer):
            raise SpecError(f"ODEBlock field must be a pyneuralode layer, got {type(self.field).__name__}.")
        object.__setattr__(self, "field", self.field.expand())
        if isinstance(self.t1, bool) or not isinstance(self.t1, numbers.Real) or not math.isfinite(self.t1) \
                or self.t1 == 0:
            raise SpecError(f"ODEBlock t1 must be a finite non-zero number (the solve runs from 0 to t1), "
                            f"got {self.t1!r}.")
        object.__setattr__(self, "t1", float(self.t1))
        object.__setattr__(self, "solver", as_solver(self.solver))
        object.__setattr__(self, "adjoint", as_adjoint(self.adjoint))
        if not isinstance(self.control, StepControl):
            raise SpecError(f"ODEBlock control must be a pn.StepControl(...), got {type(self.control).__name__}.")
        check_solver_control(self.solver, self.control,
                             give="give the ODEBlock a step with control=pn.StepControl(dt=...)")
        check_atol_shape(self.control, None, "an ODEBlock")

    def param_specs(self):
        return ()

    def sublayers(self):
        return (self.field,)

    @property
    def in_shape(self):
        return self.field.in_shape

    def out_shape(self, in_shape):
        check_state_preserving(self.field, in_shape, "ODEBlock field")
        return tuple(in_shape)

    def as_model(self, *, backend: str, dtype: str, device=None):
        """This block's solve as an :class:`pyneuralode.ODEModel` (the field's parameters only)."""
        from ._model import ODEModel
        return ODEModel(self.field, solver=self.solver, control=self.control, adjoint=self.adjoint,
                        backend=backend, dtype=dtype, device=device)


@dataclasses.dataclass(frozen=True)
class Residual(AbstractLayer):
    """``x -> x + layer(x)``: a skip connection around ``layer`` (whose output shape must equal its input's).

    With ``layer`` = GN, ReLU, 3x3 conv, GN, ReLU, 3x3 conv this is torchdiffeq's ``ResBlock`` without
    downsampling — the block the MNIST ResNet baseline stacks six times.
    """

    layer: AbstractLayer

    def __post_init__(self):
        if not isinstance(self.layer, AbstractLayer):
            raise SpecError(f"Residual wraps a pyneuralode layer, got {type(self.layer).__name__}.")
        object.__setattr__(self, "layer", self.layer.expand())

    @property
    def uses_time(self) -> bool:  # type: ignore[override]
        return self.layer.uses_time

    def param_specs(self):
        return ()

    def sublayers(self):
        return (self.layer,)

    @property
    def in_shape(self):
        return self.layer.in_shape

    def out_shape(self, in_shape):
        out = self.layer.out_shape(in_shape)
        if tuple(out) != tuple(in_shape):
            raise SpecError(f"Residual layer maps shape {tuple(in_shape)} to {tuple(out)}: a skip connection "
                            "needs equal shapes.")
        return tuple(in_shape)


def compose_layers(root: AbstractLayer, leaf: Callable[[AbstractLayer, range], Callable]) -> Callable:
    """``apply(params, t, x)`` of the expanded spec ``root``, the one composition every lowering shares:
    ``Sequential`` chains its children and ``Residual`` adds its layer's output to its input; every other layer is
    ``leaf(layer, subtree)``, ``subtree`` the :func:`pyneuralode._layers.walk` positions of the layer and its
    sublayers (its own first: ``param_layout`` numbers parameters by it), which such a layer compiles itself."""
    counter = iter(range(len(walk(root))))

    def build(layer: AbstractLayer) -> Callable:
        index = next(counter)  # walk() order: parent before children
        if isinstance(layer, Sequential):
            children = [build(child) for child in layer.layers]

            def sequential(params, t, x):
                for child in children:
                    x = child(params, t, x)
                return x
            return sequential
        if isinstance(layer, Residual):  # x + layer(t, x)
            inner = build(layer.layer)
            return lambda params, t, x: x + inner(params, t, x)
        subtree = range(index, index + len(walk(layer)))
        for _ in subtree[1:]:
            next(counter)
        return leaf(layer, subtree)

    return build(root)

