"""``pn.compare``: run one model on several backends with identical weights and inputs, side by side.

Agreement is a product feature: the report shows, per backend, the loss, NFE forward/backward, steps and wall
time per call (median after a warm-up call), and per pair of backends the largest relative differences of the
outputs, of ``grad_params`` and of ``grad_y0`` (``max |a - b| / max |b|``). :func:`compare_networks` does the
same for a :class:`pyneuralode.Network` (outputs = logits; no ``grad_y0``, shown as ``n/a``).

Each backend also reports its **round-off floor**: how much its own ``grad_params`` move when the weights are
multiplied by ``1 + 1e-15·N(0, 1)`` (float64; float32 weights by the same few units in their last place,
``1 + 5.4e-8·N(0, 1)``). Smooth problems give ~1e-14; adaptive solves of non-smooth dynamics (ReLU
fields) can give 1e-5 and more, because which steps the controller rejects depends on the last bits. Two backends
cannot agree better than that floor, so the report shows both side by side (beyond the peers: no other library
tells a gradient disagreement caused by the problem's conditioning from one caused by a bug).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time

import numpy as np

from ._errors import BackendUnavailable, NotSupportedError, SpecError
from ._options import checked_options


def relative_difference(a, b) -> float:
    """``max |a - b| / max |b|`` (0 when both are zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    diff = np.max(np.abs(a - b)) if a.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


@dataclasses.dataclass(frozen=True)
class BackendResult:
    """One backend's figures in a comparison."""

    backend: str
    value: float
    nfe_forward: int | None
    nfe_backward: int | None
    steps_accepted: int
    steps_rejected: int
    seconds_per_call: float
    grad_round_off: float
    ys: np.ndarray = dataclasses.field(repr=False)
    grad_params: np.ndarray = dataclasses.field(repr=False)
    grad_y0: np.ndarray = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class PairDifference:
    """Largest relative differences between two backends."""

    a: str
    b: str
    outputs: float
    grad_params: float
    grad_y0: float
    nfe_forward: int | None
    """The first backend's forward NFE minus the second's (``None`` where either was not counted)."""
    round_off_floor: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare`: per-backend figures, per-pair differences, and skipped backends."""

    title: str
    results: tuple[BackendResult, ...]
    pairs: tuple[PairDifference, ...]
    skipped: dict[str, str]

    def to_dict(self) -> dict:
        """JSON-ready figures (arrays left out)."""
        def strip(r):
            return {k: v for k, v in dataclasses.asdict(r).items() if k not in ("ys", "grad_params", "grad_y0")}

        def pair(p):  # NaN (a figure that does not apply) as JSON null
            return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in dataclasses.asdict(p).items()}
        return {"title": self.title, "results": [strip(r) for r in self.results],
                "pairs": [pair(p) for p in self.pairs], "skipped": dict(self.skipped)}

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        lines = [self.title, ""]
        head = ("backend", "loss", "NFE-F", "NFE-B", "steps acc/rej", "time/call", "grad round-off")
        rows = [(r.backend, f"{r.value:.12g}", str(r.nfe_forward), str(r.nfe_backward),
                 f"{r.steps_accepted}/{r.steps_rejected}", f"{1e3 * r.seconds_per_call:.2f} ms",
                 f"{r.grad_round_off:.1e}") for r in self.results]
        lines += _table(head, rows)
        if self.pairs:
            lines.append("")
            head = ("pair", "max rel diff ys", "grad_params", "grad_y0", "ΔNFE-F", "round-off floor")
            rows = [(f"{p.a} vs {p.b}", f"{p.outputs:.2e}", f"{p.grad_params:.2e}", _fmt(p.grad_y0),
                     "–" if p.nfe_forward is None else f"{p.nfe_forward:+d}", f"{p.round_off_floor:.1e}")
                    for p in self.pairs]
            lines += _table(head, rows)
            if any(p.round_off_floor > 1e-9 for p in self.pairs):
                lines.append("round-off floor: how far one backend's own gradient moves when the weights are "
                             "nudged by a few units in their last place (1e-15 relative in float64); no two "
                             "implementations can agree better than it.")
        for name, reason in self.skipped.items():
            lines.append(f"skipped {name}: {reason}")
        return "\n".join(lines)


def _fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.2e}"


def _table(head, rows) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]


def _time_call(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


ROUND_OFF_NUDGE = 1e-15
"""Relative size, in float64, of the weight perturbation that measures a backend's round-off floor (about 4.5
units in the last place); other dtypes get the same number of units in their last place (float32: 5.4e-8)."""


def round_off_nudge(dtype) -> float:
    """The relative nudge for parameters of ``dtype``: :data:`ROUND_OFF_NUDGE` scaled by its machine epsilon, so
    it moves float32 weights too (a 1e-15 nudge vanishes when rounded to float32)."""
    return ROUND_OFF_NUDGE * float(np.finfo(dtype).eps / np.finfo(np.float64).eps)


def nudged(params, seed: int = 0) -> np.ndarray:
    """``params · (1 + ν·N(0, 1))``, ``ν`` = :func:`round_off_nudge` of their dtype: the same weights up to
    round-off (seeded)."""
    params = np.asarray(params)
    noise = np.random.default_rng(seed).standard_normal(params.shape)
    return (params.astype(np.float64) * (1 + round_off_nudge(params.dtype) * noise)).astype(params.dtype)


def run_backends(subject, backends, repeats: int, call, arrays, params):
    """Run ``call(subject.replace(backend=name), params)`` on each backend: one warm-up call (compiles), then
    ``repeats`` timed calls, then one call at :func:`nudged` weights (the round-off floor). ``arrays(result)``
    gives ``(outputs, grad_params, grad_y0)``. Returns ``(results, skipped)``; a backend that is missing or cannot
    run these options is skipped with the reason."""
    results, skipped = [], {}
    for name in backends:
        try:
            on_backend = subject.replace(backend=name)
            res = call(on_backend, params)
        except (BackendUnavailable, NotSupportedError) as err:
            skipped[name] = str(err)
            continue
        seconds = _time_call(lambda: call(on_backend, params), repeats)  # noqa: B023 (called right here)
        outputs, grad_params, grad_y0 = arrays(res)
        round_off = relative_difference(arrays(call(on_backend, nudged(params)))[1], grad_params)
        s = res.stats
        results.append(BackendResult(name, res.value, s.nfe_forward, s.nfe_backward, s.steps_accepted,
                                     s.steps_rejected, seconds, round_off, outputs, grad_params, grad_y0))
    return results, skipped


def _tolerance(atol) -> str:
    """``atol`` for a title: ``1e-08``, or ``(1e-08, 1e-14)`` per component."""
    return f"{atol:g}" if isinstance(atol, float) else str(atol)


def _check_model(model) -> None:
    """Raise unless ``model`` is a ``pn.ODEModel``; a bare layer names the fix."""
    from ._model import ODEModel
    if not isinstance(model, ODEModel):
        raise SpecError(f"compare takes a pn.ODEModel, got {type(model).__name__}: wrap the field in one, "
                        "pn.compare(pn.ODEModel(field, solver=..., control=...), ...) (its solver, tolerances and "
                        "gradient method are part of what is compared).")


@checked_options
def compare(model, *, backends=("jax", "torch"), params, y0, ts, loss, repeats: int = 5,
            title: str | None = None) -> Comparison:
    """Run ``model`` (its settings, each backend in turn) on the same ``params``, ``y0``, ``ts`` and ``loss``.

    A backend that is not installed or cannot run this model's options is skipped with the reason shown.
    ``repeats`` timed calls follow one warm-up call (which includes compilation).
    """
    _check_model(model)
    results, skipped = run_backends(
        model, backends, repeats, lambda m, p: m.value_and_grad(p, y0, ts, loss=loss),
        lambda res: (res.ys, res.grad_params, res.grad_y0), params)
    pairs = pair_differences(results)
    title = title or (f"{model.solver.name}, {model.adjoint.name}, {model.dtype}, rtol={model.control.rtol:g}, "
                      f"atol={_tolerance(model.control.atol)}")
    return Comparison(title, tuple(results), pairs, skipped)


def pair_differences(results) -> tuple[PairDifference, ...]:
    """:class:`PairDifference` of every pair of :class:`BackendResult` (in order). A result whose ``grad_y0`` is
    empty (a Network has none) gives ``grad_y0 = nan``."""
    def grad_y0(a, b):
        return relative_difference(a.grad_y0, b.grad_y0) if a.grad_y0.size and b.grad_y0.size else float("nan")
    return tuple(PairDifference(a.backend, b.backend, relative_difference(a.ys, b.ys),
                                relative_difference(a.grad_params, b.grad_params), grad_y0(a, b),
                                None if None in (a.nfe_forward, b.nfe_forward) else a.nfe_forward - b.nfe_forward,
                                max(a.grad_round_off, b.grad_round_off))
                 for a, b in itertools.combinations(results, 2))


@checked_options
def compare_networks(network, *, backends=("jax", "torch"), params, x, labels, loss=None, repeats: int = 3,
                     title: str | None = None) -> Comparison:
    """:func:`compare` for a :class:`pyneuralode.Network`: ``network.replace(backend=...)`` on each backend with the
    same ``params``, images ``x`` and ``labels``; ``ys`` are the logits, ``grad_params`` the loss gradient (the
    pair's ``grad_y0`` is ``n/a``). Steps and NFE are summed over the ODE blocks."""
    results, skipped = run_backends(
        network, backends, repeats, lambda net, p: net.value_and_grad(p, x, labels, loss=loss),
        lambda res: (res.outputs, res.grad_params, np.zeros(0)), params)
    title = title or f"{type(network.spec).__name__} network, {network.dtype}, {len(x)} samples"
    return Comparison(title, tuple(results), pair_differences(results), skipped)
