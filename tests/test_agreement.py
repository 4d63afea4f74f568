"""Cross-backend agreement: same spec, same weights, same inputs, same settings => same numbers.

Runs every pair of available backends (jax, torch, and julia where Julia exists). Bounds are the issue's
targets; the measured differences are far smaller (see the README's comparison table).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode.backends import BACKEND_NAMES
from pyneuralode.backends._registry import REGISTRY

from helpers import model, rel_err, spiral_field, unavailable_reason


PAIRS = list(itertools.combinations(BACKEND_NAMES, 2))


@pytest.fixture(params=PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS], scope="module")
def pair(request):
    for name in request.param:
        reason = unavailable_reason(name)
        if reason:
            pytest.skip(reason)
    return request.param


def _spiral_inputs():
    from pyneuralode.problems.spiral import sample_batch, spiral_data
    ts, ys = spiral_data()
    return sample_batch(np.random.default_rng(0), ts, ys)


@pytest.mark.parametrize("rtol, atol, bound", [(1e-10, 1e-10, 1e-7), (1e-6, 1e-6, 1e-5), (1e-3, 1e-4, 1e-3)])
@pytest.mark.parametrize("adjoint", [pn.DirectAdjoint(), pn.BacksolveAdjoint()], ids=repr)
def test_spiral_gradients_agree(pair, rtol, atol, bound, adjoint):
    y0, t, target = _spiral_inputs()
    control = pn.StepControl(rtol=rtol, atol=atol)
    a, b = (model(spiral_field(), backend=name, control=control, adjoint=adjoint) for name in pair)
    params = a.init(0)
    ra = a.value_and_grad(params, y0, t, loss=pn.L1(target))
    rb = b.value_and_grad(params, y0, t, loss=pn.L1(target))
    assert ra.value == pytest.approx(rb.value, rel=bound)
    assert rel_err(ra.ys, rb.ys) < bound
    assert rel_err(ra.grad_params, rb.grad_params) < bound
    assert rel_err(ra.grad_y0, rb.grad_y0) < bound


@pytest.mark.parametrize("solver", [pn.Dopri5(), pn.Bosh3()], ids=repr)
@pytest.mark.parametrize("rtol, atol", [(1e-3, 1e-4), (1e-8, 1e-8)])
def test_forward_steps_and_nfe_agree(pair, solver, rtol, atol):
    """Same steps (accepted and rejected) on both backends and the same forward NFE: with Hairer's initial step
    neither library re-evaluates a first stage it already has, rejected steps included."""
    y0, t, _ = _spiral_inputs()
    control = pn.StepControl(rtol=rtol, atol=atol)
    a, b = (model(spiral_field(), backend=name, solver=solver, control=control) for name in pair)
    params = a.init(0)
    sa, sb = a.solve(params, y0, t), b.solve(params, y0, t)
    assert (sa.stats.steps_accepted, sa.stats.steps_rejected) == (sb.stats.steps_accepted, sb.stats.steps_rejected)
    assert sa.stats.nfe_forward == sb.stats.nfe_forward
    assert rel_err(sa.ys, sb.ys) < 1e-12


def test_backsolve_backward_nfe_agree(pair):
    y0, t, target = _spiral_inputs()
    if any("BacksolveAdjoint" not in REGISTRY[name].adjoints for name in pair):
        pytest.skip("a backend of this pair has no BacksolveAdjoint")
    control = pn.StepControl(rtol=1e-6, atol=1e-6)
    a, b = (model(spiral_field(), backend=name, control=control, adjoint=pn.BacksolveAdjoint()) for name in pair)
    params = a.init(0)
    ra = a.value_and_grad(params, y0, t, loss=pn.L1(target))
    rb = b.value_and_grad(params, y0, t, loss=pn.L1(target))
    assert ra.stats.nfe_backward == rb.stats.nfe_backward
    assert ra.stats.backward_steps_accepted == rb.stats.backward_steps_accepted


def test_compare_report(pair):
    y0, t, target = _spiral_inputs()
    m = model(spiral_field(), backend=pair[0], control=pn.StepControl(rtol=1e-6, atol=1e-6))
    comparison = pn.compare(m, backends=pair, params=m.init(0), y0=y0,
                            ts=t, loss=pn.L1(target), repeats=2)
    assert [r.backend for r in comparison.results] == list(pair)
    (diff,) = comparison.pairs
    assert diff.grad_params < 1e-5 and diff.outputs < 1e-5
    # The spiral is smooth: nudging the weights by 1e-15 moves each backend's gradient by round-off only.
    assert all(r.grad_round_off < 1e-12 for r in comparison.results)
    assert diff.round_off_floor == max(r.grad_round_off for r in comparison.results)
    text = str(comparison)
    assert "max rel diff ys" in text and f"{pair[0]} vs {pair[1]}" in text and "round-off floor" in text
    data = comparison.to_dict()
    assert data["pairs"][0]["a"] == pair[0] and "ys" not in data["results"][0]


def test_compare_skips_unavailable_backend_with_reason():
    y0, t, target = _spiral_inputs()
    m = model(spiral_field(), backend="jax", control=pn.StepControl(rtol=1e-6, atol=1e-6),
              adjoint=pn.CheckpointAdjoint())
    comparison = pn.compare(m, backends=("jax", "torch"), params=m.init(0), y0=y0, ts=t, loss=pn.L1(target),
                            repeats=1)
    assert [r.backend for r in comparison.results] == ["jax"]
    assert "CheckpointAdjoint() is not available on backend 'torch'" in comparison.skipped["torch"]
    assert "skipped torch: CheckpointAdjoint()" in str(comparison)
