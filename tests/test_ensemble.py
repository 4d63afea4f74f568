"""``ODEModel.solve_ensemble``: every member equals its own single solve (values and exact statistics), a failing
member is reported for that member alone, and bad member axes are refused with the same words everywhere."""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

TS = np.linspace(0.0, 1.0, 5)
Y0 = np.array([[1.0, 0.0], [0.5, 0.5], [0.1, 0.2], [2.0, -1.0]])


def _model(backend):
    return pn.ODEModel(pn.MLP([2, 16, 2]), control=pn.StepControl(rtol=1e-8, atol=1e-8, max_steps=200),
                       backend=backend)


def test_each_member_is_its_own_solve(backend):
    model = _model(backend)
    params = np.stack([model.init(seed) for seed in range(4)])
    ens = model.solve_ensemble(params, Y0, TS)
    assert ens.ys.shape == (4, len(TS), 2) and ens.ok.all() and ens.errors == (None,) * 4
    for m in range(4):
        single = model.solve(params[m], Y0[m], TS)
        np.testing.assert_allclose(ens.ys[m], single.ys, rtol=1e-12, atol=1e-14)
        assert ens.stats[m] == single.stats  # exact NFE and steps of that member alone
    assert len({s.nfe_forward for s in ens.stats}) > 1, "members should take different numbers of steps"


def test_shared_params_or_shared_state(backend):
    model = _model(backend)
    params = model.init(0)
    by_state = model.solve_ensemble(params, Y0, TS)                       # one parameter set, 4 initial states
    by_params = model.solve_ensemble(np.stack([params] * 3), Y0[1], TS)   # 3 copies of one member
    np.testing.assert_allclose(by_state.ys[1], model.solve(params, Y0[1], TS).ys, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(by_params.ys, np.stack([by_state.ys[1]] * 3), rtol=1e-12, atol=1e-14)


def test_a_failing_member_is_reported_alone(backend):
    model = pn.ODEModel(pn.Linear(1, 1, bias=False), control=pn.StepControl(rtol=1e-6, atol=1e-6, max_steps=50),
                        backend=backend)
    ens = model.solve_ensemble(np.array([[-1.0], [500.0], [1.0]]), np.array([1.0]), np.linspace(0.0, 10.0, 3))
    assert ens.ok.tolist() == [True, False, True]
    assert ens.errors[0] is None and ens.errors[2] is None
    with pytest.raises(pn.SolveError) as err:
        model.solve(np.array([500.0]), np.array([1.0]), np.linspace(0.0, 10.0, 3))
    assert ens.errors[1] == str(err.value)  # the words the single solve raises
    assert np.isnan(ens.ys[1]).all() and ens.stats[1] == pn.Stats()
    np.testing.assert_allclose(ens.ys[2, :, 0], np.exp(np.linspace(0.0, 10.0, 3)), rtol=1e-4)
    with pytest.raises(pn.SolveError, match=r"1 of 3 ensemble members failed; member 1: "):
        ens.raise_if_failed()


def test_a_stiff_member_is_reported_with_the_single_solve_words(backend):
    """On JAX a stalled member is not stopped early (that would slow every member's step), but it is still
    reported as the single solve reports it: the stiff diagnosis, not a bare max_steps."""
    model = pn.ODEModel(pn.Linear(1, 1, bias=False), control=pn.StepControl(rtol=1e-6, atol=1e-6, max_steps=200),
                        backend=backend)
    ts = np.linspace(0.0, 10.0, 3)
    ens = model.solve_ensemble(np.array([[-1.0], [-1e5], [1.0]]), np.array([1.0]), ts)
    assert ens.ok.tolist() == [True, False, True]
    with pytest.raises(pn.MaxStepsError, match="the signature of a stiff problem") as err:
        model.solve(np.array([-1e5]), np.array([1.0]), ts)
    assert ens.errors[1] == str(err.value)
    assert ens.stats[0] == model.solve(np.array([-1.0]), np.array([1.0]), ts).stats


@pytest.mark.parametrize("params_shape, y0, message", [
    ((3, 82), Y0, r"params have 3 members but y0 has 4: give both the same number of members"),
    ((4, 5), Y0, r"ensemble params have 5 parameters per member but this model has 82"),
    ((82,), Y0[0], r"an ensemble needs a member axis: give params of shape \(members, P\)"),
    ((2, 3, 82), Y0, r"ensemble params must be \(P,\) shared or \(members, P\), got shape \(2, 3, 82\)"),
])
def test_member_axes_are_checked(params_shape, y0, message):
    model = _model("jax")
    with pytest.raises(pn.SpecError, match=message):
        model.solve_ensemble(np.zeros(params_shape), y0, TS)


@pytest.mark.parametrize("backend, how", [
    ("torch", "backend 'torch' solves the members one after another on the model's device"),
    ("julia", "backend 'julia' spreads the members over Julia's threads"),  # refused before Julia starts
])
def test_devices_is_jax_only(backend, how):
    """The torch refusal named an internal class (TorchProgram); each backend now says how it spreads members."""
    model = pn.ODEModel(pn.MLP([2, 2]), backend=backend)
    with pytest.raises(pn.NotSupportedError) as info:
        model.solve_ensemble(model.init(0), np.zeros((2, 2)), TS, devices=2)
    assert str(info.value) == (f"devices= shards an ensemble over JAX devices, on backend 'jax' only: {how}"
                               + ("" if backend == "torch" else " (EnsembleThreads; start Julia with threads, e.g. "
                                  "PYTHON_JULIACALL_THREADS=auto)") + ". Drop devices=, or use backend='jax'.")


def test_more_devices_than_jax_sees_names_the_cpu_flag():
    model = _model("jax")
    with pytest.raises(pn.SpecError, match=r"devices=64 but JAX sees 1 device\(s\).*"
                                           r"XLA_FLAGS=--xla_force_host_platform_device_count=64"):
        model.solve_ensemble(model.init(0), Y0, TS, devices=64)
