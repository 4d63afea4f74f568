"""The contract a backend implements: compile a model once, then solve and differentiate with numpy in/out."""

from __future__ import annotations

import abc
from typing import Any, ClassVar


class AbstractProgram(abc.ABC):
    """A model compiled for one backend. Inputs arrive validated, as numpy arrays of the model's dtype."""

    @abc.abstractmethod
    def solve(self, params, y0, ts):
        """Return a :class:`pyneuralode.Solution` (numpy ``ys`` of shape ``(len(ts), *y0.shape)``)."""

    @abc.abstractmethod
    def value_and_grad(self, params, y0, ts, loss):
        """Return a :class:`pyneuralode.ValueAndGrad` with gradients in the canonical layout."""

    @abc.abstractmethod
    def native(self) -> Any:
        """The backend's own object (JAX callable, ``torch.nn.Module``, Julia callable)."""


class AbstractBackend(abc.ABC):
    """A compiler from pyneuralode specs to one framework."""

    name: ClassVar[str]

    @abc.abstractmethod
    def compile(self, model) -> AbstractProgram:
        """Compile an :class:`pyneuralode.ODEModel` into a program."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """Versions and devices, for ``pyneuralode info``."""
