"""``pn.dynamics``: the user's own vector field ``f(t, u, p)``, written once in NumPy, as a layer every backend runs.

The function is traced once (:mod:`pyneuralode._trace`) into the neutral expression graph
(:mod:`pyneuralode._graph`); :class:`Dynamics` carries that graph and is an ordinary
:class:`pyneuralode.AbstractLayer`, so ``ODEModel``, ``compare``, ``Trainer``, every solver and adjoint, NFE
counting, float32/64, batching and reverse time need nothing new: each backend compiles it with the one graph
compiler it compiles every layer with (networks are graphs of the same ops; see :mod:`pyneuralode._numpy_layers`).

Canonical parameters (one flat vector, the same on every backend): the declared ``params`` first, in declaration
order, each row-major; then each network's parameters, networks in declaration order, each in its own canonical layout.
Parameters named in ``positive`` are stored as their natural logarithm and enter ``f`` as ``exp(stored)``: the
flat vector (and its gradient) holds the unconstrained log-value, ``model.init`` stores ``log(declared value)``.
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
from typing import Any, Callable, Mapping

import numpy as np

from ._errors import SpecError
from ._graph import Graph, Literal
from ._layers import AbstractLayer, ParamSpec
from ._numpy_layers import numpy_layer
from ._options import checked_options
from ._params import num_params, param_layout
from ._trace import Namespace, Tracer, trace


def _check_name(name, what: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise SpecError(f"{what} name {name!r} must be a Python identifier not starting with '_' (it is used as "
                        f"p.{name}).")
    return name


def _real_array(value, what: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001
        array = None
    if array is None or array.dtype.kind not in "biuf" or array.dtype == np.bool_:
        raise SpecError(f"{what} must be a real number or array, got {value!r}.")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise SpecError(f"{what} must be finite, got {value!r}.")
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Dynamics(AbstractLayer):
    """A user vector field ``du/dt = fn(t, u, p)`` with declared parameters, networks and constants.

    Build it with :func:`pyneuralode.dynamics`. It is a layer: pass it to ``pn.ODEModel`` as the field. Its
    :attr:`graph` is the traced, backend-neutral expression graph; :meth:`evaluate` calls ``fn`` on NumPy arrays
    (the reference implementation).
    """

    fn: Callable
    state: tuple[int, ...]
    params: tuple[tuple[str, Literal], ...] = ()
    nets: tuple[tuple[str, AbstractLayer], ...] = ()
    constants: tuple[tuple[str, Literal], ...] = ()
    positive: tuple[str, ...] = ()
    scalar: bool = dataclasses.field(default=False, repr=False)
    """True for an event function (:class:`pyneuralode.Event`): ``fn`` returns one number or a 1-D array of them
    (conditions), not ``du/dt``."""
    graph: Graph = dataclasses.field(init=False, repr=False)

    def __post_init__(self):
        if not callable(self.fn):
            raise SpecError(f"pn.dynamics needs a function f(t, u, p), got {type(self.fn).__name__}.")
        state = (self.state,) if isinstance(self.state, (int, np.integer)) else self.state
        try:
            state = tuple(state)
        except TypeError:
            state = None
        if (not state or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in state)):
            raise SpecError(f"state must be the state size or shape, e.g. state=2 or state=(3, 4), got "
                            f"{self.state!r}.")
        object.__setattr__(self, "state", tuple(int(s) for s in state))
        params = _pairs(self.params, "params")
        nets = _pairs(self.nets, "nets")
        constants = _pairs(self.constants, "constants")
        names = [n for n, _ in (*params, *nets, *constants)]
        for n in names:
            _check_name(n, "A parameter, net or constant")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SpecError(f"Names must be unique across params, nets and constants: {', '.join(duplicates)} "
                            "repeated.")
        positive = (self.positive,) if isinstance(self.positive, str) else tuple(self.positive)
        for n in positive:
            if n not in dict(params):
                raise SpecError(f"positive names {n!r}, which is not in params ({', '.join(dict(params)) or 'none'}).")
        values = []
        for n, v in params:
            array = _real_array(v.array if isinstance(v, Literal) else v, f"params[{n!r}]")
            if n in positive and np.any(array <= 0):
                raise SpecError(f"params[{n!r}] is declared positive, so its initial value must be > 0, got {v!r}.")
            values.append((n, Literal(array)))
        for n, net in nets:
            if not isinstance(net, AbstractLayer):
                raise SpecError(f"nets[{n!r}] must be a pyneuralode layer such as pn.MLP([...]), got "
                                f"{type(net).__name__}.")
        object.__setattr__(self, "params", tuple(values))
        object.__setattr__(self, "nets", tuple((n, net.expand()) for n, net in nets))
        object.__setattr__(self, "constants", tuple(
            (n, Literal(_real_array(v.array if isinstance(v, Literal) else v, f"constants[{n!r}]")))
            for n, v in constants))
        object.__setattr__(self, "positive", tuple(dict.fromkeys(positive)))
        graph = trace(self.fn, state=self.state,
                      params={n: (v.array.shape, n in self.positive) for n, v in self.params},
                      constants={n: v.array.shape for n, v in self.constants}, nets=dict(self.nets),
                      scalar=self.scalar)
        object.__setattr__(self, "graph", graph)

    # ---------------------------------------------------------------- the layer interface
    @property
    def uses_time(self) -> bool:  # type: ignore[override]
        return self.graph.uses("time") or any(net.uses_time for _, net in self.nets)

    def param_specs(self):
        return tuple(ParamSpec(n, v.array.shape, init="value",
                               value=Literal(np.log(v.array)) if n in self.positive else v)
                     for n, v in self.params)

    def sublayers(self):
        return tuple(net for _, net in self.nets)

    def sublayer_names(self):
        return tuple(n for n, _ in self.nets)

    @property
    def in_shape(self):
        return self.state

    def out_shape(self, in_shape):
        if tuple(in_shape) != self.state:
            raise SpecError(f"{self.name} has state shape {self.state}, got samples of shape {tuple(in_shape)}.")
        return self.graph.nodes[self.graph.output].shape if self.scalar else self.state

    @property
    def name(self) -> str:
        """The function's name."""
        return getattr(self.fn, "__name__", "dynamics")

    def __repr__(self):
        parts = [f"state={self.state}"]
        if self.params:
            parts.append(f"params=({', '.join(n for n, _ in self.params)})")
        if self.nets:
            parts.append(f"nets=({', '.join(n for n, _ in self.nets)})")
        if self.constants:
            parts.append(f"constants=({', '.join(n for n, _ in self.constants)})")
        return f"Dynamics({self.name}, {', '.join(parts)})"

    # ---------------------------------------------------------------- the NumPy reference
    @functools.cached_property
    def _slots(self):
        """``param_layout(self)``, computed once (the layer is immutable)."""
        return param_layout(self)

    def evaluate(self, params, t, u) -> np.ndarray:
        """``du/dt`` by calling the user's function on NumPy arrays (the reference every backend is tested
        against): ``params`` the canonical flat vector, ``u`` one sample or a batch ``(batch, *state)``."""
        flat = np.asarray(params, dtype=np.float64)
        layout = self._slots
        size = layout[-1].stop if layout else 0
        if flat.shape != (size,):
            raise SpecError(f"params must have shape ({size},), got {flat.shape}.")
        u = np.asarray(u, dtype=np.float64)
        if u.shape[-len(self.state):] != self.state or u.ndim not in (len(self.state), len(self.state) + 1):
            raise SpecError(f"u must have shape {self.state} or (batch, {', '.join(map(str, self.state))}), got "
                            f"{u.shape}.")
        if u.ndim > len(self.state):
            return np.stack([self.evaluate(flat, t, ui) for ui in u])
        layout = {slot.name: slot for slot in layout}
        values: dict[str, Any] = {}
        for n, v in self.params:
            stored = flat[layout[n].offset:layout[n].stop].reshape(v.array.shape)
            values[n] = np.exp(stored) if n in self.positive else stored
        offset = sum(v.array.size for _, v in self.params)
        for n, net in self.nets:
            size = num_params(net)
            values[n] = _numpy_net(net, flat[offset:offset + size], t)
            offset += size
        values.update((n, v.array.copy()) for n, v in self.constants)
        kinds = {**{n: "params" for n, _ in self.params}, **{n: "nets" for n, _ in self.nets},
                 **{n: "constants" for n, _ in self.constants}}
        du = np.asarray(self.fn(np.float64(t), u, Namespace(values, kinds)))
        if self.scalar and du.dtype == np.bool_:  # a boolean event condition, as traced (see _trace.BOOLEAN_EVENT)
            du = np.where(du, -1.0, 1.0)
        du = du.astype(np.float64)
        return np.broadcast_to(du, self.out_shape(self.state)).copy()


def _numpy_net(net, flat, t):
    apply, slots = numpy_layer(net), {slot.name: slot for slot in param_layout(net)}

    def tensor(name):
        return flat[slots[name].offset:slots[name].stop].reshape(slots[name].shape)
    # a traced x comes from pn.grad's NumPy reference, which traces the network into its own graph
    return lambda x: apply(tensor, t, x if isinstance(x, Tracer) else np.asarray(x, dtype=np.float64))


def _pairs(value, what: str) -> tuple:
    if isinstance(value, Mapping):
        return tuple(value.items())
    try:
        pairs = tuple((n, v) for n, v in value)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be a dict of name -> value, got {value!r}.") from None
    return pairs


@checked_options
def dynamics(fn: Callable | None = None, *, state, params: Mapping[str, Any] = {},  # noqa: B006 - never mutated
             nets: Mapping[str, AbstractLayer] = {}, constants: Mapping[str, Any] = {},  # noqa: B006
             positive=()) -> Dynamics | Callable[[Callable], Dynamics]:
    """Define a vector field ``du/dt = fn(t, u, p)`` in plain NumPy, for ONE sample; use it as a decorator.

    ```python
    @pn.dynamics(state=2, params={"alpha": 1.3, "delta": 1.8},
                 nets={"U": pn.MLP([2, 32, 32, 2], activation="tanh")})
    def lotka_volterra_ude(t, u, p):
        m = p.U(u)
        return np.stack([p.alpha * u[0] + m[0], -p.delta * u[1] + m[1]])

    model = pn.ODEModel(lotka_volterra_ude, solver=pn.Tsit5(), backend="jax")
    ```

    **Arguments:**

    - ``fn``: ``fn(t, u, p)`` returning ``du/dt`` of ``u``'s shape; ``t`` is a scalar, ``u`` one sample of shape
      ``state``. It may use NumPy ufuncs and functions (``np.exp``, ``np.sin``, ``np.where``, ``np.stack``,
      ``np.sum``, ``@``, ``**``, indexing with constants...; the full list is in the error for anything else), but
      no Python ``if`` on values (use ``np.where``). It is traced once, here; pyneuralode vectorises it over the
      batch on every backend.
    - ``state``: the state size (``2``) or shape (``(3, 4)``).
    - ``params``: trainable physical parameters, ``name -> initial value`` (a number or an array, whose shape is
      the parameter's shape); ``p.name`` in ``fn``.
    - ``nets``: networks, ``name -> spec`` (``pn.MLP``, ``pn.Sequential``...); ``p.name(x)`` applies one to a
      sample ``x`` (a network with ``time_input=True`` also sees ``t``). Their weights get the usual seeded init.
    - ``constants``: fixed arrays (no gradient), ``name -> value``; ``p.name`` in ``fn``.
    - ``positive``: names in ``params`` kept > 0: stored as the logarithm and used as ``exp(stored)``, so the
      flat vector holds ``log(value)`` and ``model.init`` stores ``log(initial value)``.

    Canonical flat parameters: ``params`` in declaration order (row-major), then each net's weights in
    declaration order; ``model.param_layout()`` names each slot (``"alpha"``, ``"U.0.weight"``, ...).
    Untraceable code raises :class:`pyneuralode.SpecError` here, naming the operation.
    """
    def build(f: Callable) -> Dynamics:
        return Dynamics(f, state=state, params=params, nets=nets, constants=constants, positive=positive)

    return build if fn is None else build(fn)
