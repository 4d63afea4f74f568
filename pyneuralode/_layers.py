"""The backend-neutral network spec: layers as small frozen descriptions, no arrays and no framework.

A spec says *what* a network computes; each backend compiles it to its own code. Every layer lists its
parameter tensors in a fixed order with PyTorch's shape convention (``Linear`` weight ``(out, in)``); the
canonical flat parameter vector is those tensors, row-major, layer after layer (see :mod:`pyneuralode._params`).

Time enters a layer only where the layer says so (``Linear(time_input=True)`` appends ``t`` as the *last*
input feature, as DiffEqFlux and the paper's ``ConcatLinear`` do).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence as _SequenceABC
from typing import Callable, ClassVar

import numpy as np

from ._errors import SpecError
from ._options import CheckedOptions

ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "softplus", "sigmoid", "elu", "silu", "cube", "rbf", "identity")
"""Pointwise functions every backend implements identically (``cube`` is ``y**3``, the paper's spiral; ``rbf`` is
``exp(-y**2)``, the radial basis of the SciML universal-differential-equation tutorials)."""


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor of a layer: its name, PyTorch-convention shape and initialiser.

    ``init`` is one of ``"uniform_fan_in"`` (PyTorch's default for Linear/Conv: U(-1/sqrt(fan_in),
    1/sqrt(fan_in))), ``"ones"``, ``"zeros"`` or ``"value"`` (the declared initial ``value``, a hashable
    :class:`pyneuralode._graph.Literal` of this shape; :func:`pyneuralode.dynamics` parameters).
    """

    name: str
    shape: tuple[int, ...]
    init: str = "uniform_fan_in"
    fan_in: int = 1
    value: object = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class AbstractLayer(metaclass=CheckedOptions):
    """A node of a network spec. Subclasses are frozen dataclasses and either abstract or final."""

    uses_time: ClassVar[bool] = False
    """Whether the layer reads the time ``t`` (a field ``f(t, y)`` rather than ``f(y)``)."""

    @abc.abstractmethod
    def param_specs(self) -> tuple[ParamSpec, ...]:
        """This layer's own parameter tensors, in canonical order."""

    @abc.abstractmethod
    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output sample given the shape of one input sample (no batch axis)."""

    def sublayers(self) -> tuple[AbstractLayer, ...]:
        """Layers nested inside this one, in parameter order (empty for a leaf)."""
        return ()

    def sublayer_names(self) -> tuple[str, ...]:
        """Names of :meth:`sublayers` in parameter names (``"U.0.weight"``); positions by default, as
        ``torch.nn.Sequential`` names its children."""
        return tuple(str(i) for i in range(len(self.sublayers())))

    def expand(self) -> AbstractLayer:
        """The primitive layer graph a backend compiles (composite conveniences such as MLP override this)."""
        return self

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        """The input sample shape this layer requires, where it fixes one (``None`` if it accepts any)."""
        return None


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SpecError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def _check_activation(name) -> str | None:
    if name is None:
        return None
    if name not in ACTIVATIONS:
        raise SpecError(f"Unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)} (or None).")
    return name


class AbstractFeatureLayer(AbstractLayer):
    """A layer mapping ``in_features`` to ``out_features`` along the last axis (``Linear``, ``ConcatSquash``)."""

    in_features: int
    out_features: int

    @property
    def in_shape(self):
        return (self.in_features,)

    def out_shape(self, in_shape):
        if tuple(in_shape)[-1:] != (self.in_features,):
            raise SpecError(f"{type(self).__name__} expects {self.in_features} input features, got shape "
                            f"{tuple(in_shape)}.")
        return (*tuple(in_shape)[:-1], self.out_features)


@dataclasses.dataclass(frozen=True)
class Linear(AbstractFeatureLayer):
    """``y = W x + b`` with ``W`` of shape ``(out_features, in_features [+1 if time_input])``.

    With ``time_input=True`` the scalar time is appended as the last input feature.
    """

    in_features: int
    out_features: int
    bias: bool = True
    time_input: bool = False

    def __post_init__(self):
        _check_positive_int(self.in_features, "Linear in_features")
        _check_positive_int(self.out_features, "Linear out_features")

    @property
    def uses_time(self) -> bool:  # type: ignore[override]
        return self.time_input

    def param_specs(self):
        fan_in = self.in_features + int(self.time_input)
        specs = [ParamSpec("weight", (self.out_features, fan_in), fan_in=fan_in)]
        if self.bias:
            specs.append(ParamSpec("bias", (self.out_features,), fan_in=fan_in))
        return tuple(specs)



@dataclasses.dataclass(frozen=True)
class Activation(AbstractLayer):
    """A pointwise function from :data:`ACTIVATIONS`; no parameters."""

    name: str

    def __post_init__(self):
        _check_activation(self.name)

    def param_specs(self):
        return ()

    def out_shape(self, in_shape):
        return tuple(in_shape)


class Sequential(AbstractLayer):
    """Layers applied in order; parameters are the layers' parameters concatenated in that order."""

    __slots__ = ("layers",)

    def __init__(self, *layers: AbstractLayer):
        if len(layers) == 1 and isinstance(layers[0], _SequenceABC):
            layers = tuple(layers[0])
        if not layers:
            raise SpecError("Sequential needs at least one layer.")
        for layer in layers:
            if not isinstance(layer, AbstractLayer):
                raise SpecError(f"Sequential takes pyneuralode layers, got {type(layer).__name__}.")
        object.__setattr__(self, "layers", tuple(layer.expand() for layer in layers))

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other):
        return type(other) is Sequential and other.layers == self.layers

    def __hash__(self):
        return hash(("Sequential", self.layers))

    def __repr__(self):
        return f"Sequential({', '.join(map(repr, self.layers))})"

    @property
    def uses_time(self) -> bool:  # type: ignore[override]
        return any(layer.uses_time for layer in self.layers)

    def param_specs(self):
        return ()

    def sublayers(self):
        return self.layers

    @property
    def in_shape(self):
        return self.layers[0].in_shape

    def out_shape(self, in_shape):
        shape = tuple(in_shape)
        for layer in self.layers:
            shape = layer.out_shape(shape)
        return shape


class AbstractCompositeLayer(AbstractLayer):
    """A convenience layer defined entirely by :meth:`expand` (its primitive ``Sequential``): it has no parameters
    of its own, and its sublayers and output shape are those of the expansion."""

    @abc.abstractmethod
    def expand(self) -> Sequential:
        """The primitive layers this convenience stands for."""

    def param_specs(self):
        return ()

    def sublayers(self):
        return self.expand().layers

    def out_shape(self, in_shape):
        return self.expand().out_shape(in_shape)


def with_activations(layers: list[AbstractLayer], activation: str | None) -> list[AbstractLayer]:
    """``layers`` with ``Activation(activation)`` between consecutive ones and none after the last (the stack of an
    MLP); ``None`` or ``"identity"`` adds none."""
    out: list[AbstractLayer] = []
    for i, layer in enumerate(layers):
        if i and activation not in (None, "identity"):
            out.append(Activation(activation))
        out.append(layer)
    return out


@dataclasses.dataclass(frozen=True)
class MLP(AbstractCompositeLayer):
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``; the last layer has no activation.

    **Arguments:**

    - ``sizes``: layer widths, at least two (input and output).
    - ``activation``: hidden activation from :data:`ACTIVATIONS`, or ``None`` for none.
    - ``time_input``: append ``t`` as an extra input of the first layer.
    - ``bias``: give every Linear layer a bias.
    - ``input_transform``: a pointwise function applied to the input first; ``"cube"`` gives the paper's
      spiral field ``f(t, y) = MLP(y**3)``.
    """

    sizes: tuple[int, ...]
    activation: str | None = "tanh"
    time_input: bool = False
    bias: bool = True
    input_transform: str | None = None

    def __post_init__(self):
        if isinstance(self.sizes, (str, bytes)) or not isinstance(self.sizes, (_SequenceABC, np.ndarray)):
            raise SpecError(f"MLP sizes must be a sequence of layer widths such as [2, 50, 2], got {self.sizes!r}.")
        sizes = tuple(_check_positive_int(s, "MLP layer width") for s in self.sizes)
        if len(sizes) < 2:
            raise SpecError(f"MLP needs at least an input and an output size, got sizes={list(sizes)}.")
        object.__setattr__(self, "sizes", sizes)
        _check_activation(self.activation)
        _check_activation(self.input_transform)

    @property
    def uses_time(self) -> bool:  # type: ignore[override]
        return self.time_input

    def expand(self) -> Sequential:
        layers: list[AbstractLayer] = []
        if self.input_transform not in (None, "identity"):
            layers.append(Activation(self.input_transform))
        layers += with_activations([Linear(n_in, n_out, bias=self.bias, time_input=self.time_input and i == 0)
                                    for i, (n_in, n_out) in enumerate(zip(self.sizes, self.sizes[1:]))],
                                   self.activation)
        return Sequential(*layers)

    @property
    def in_shape(self):
        return (self.sizes[0],)


def walk(layer: AbstractLayer) -> list[AbstractLayer]:
    """Every layer of a spec in canonical parameter order (depth first, parents before children)."""
    out = [layer]
    for child in layer.sublayers():
        out.extend(walk(child))
    return out


def check_state_preserving(field: AbstractLayer, in_shape, what: str) -> None:
    """Raise a SpecError unless ``field`` maps samples of ``in_shape`` to the same shape (an ODE's vector field
    returns the shape of its state)."""
    out = tuple(field.out_shape(tuple(in_shape)))
    if out != tuple(in_shape):
        raise SpecError(f"{what} maps shape {tuple(in_shape)} to {out}: an ODE's vector field must return the shape "
                        f"of its state (for an MLP, make the last width equal the first, e.g. pn.MLP([2, 8, 2])).")


def initialiser(spec: ParamSpec) -> Callable[[np.random.Generator], np.ndarray]:
    """The numpy draw for one parameter tensor (PyTorch's default Linear/Conv rule for weights and biases)."""
    if spec.init == "zeros":
        return lambda rng: np.zeros(spec.shape)
    if spec.init == "ones":
        return lambda rng: np.ones(spec.shape)
    if spec.init == "value":
        return lambda rng: np.array(spec.value.array, dtype=np.float64).reshape(spec.shape)
    bound = 1.0 / math.sqrt(spec.fan_in)
    return lambda rng: rng.uniform(-bound, bound, size=spec.shape)
