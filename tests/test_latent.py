"""pn.LatentODE: the encoder restated in NumPy, the ELBO restated from predictions, JAX vs torch at 1e-9 on the
ELBO and its gradient (float64, fixed ε), exact NFE against the ODE model alone, masks, and the spirals data."""

from __future__ import annotations

import numpy as np
import pytest

import pyneuralode as pn

RNG = np.random.default_rng(0)
TIMES = [np.sort(RNG.choice(np.linspace(0.0, 2.0, 9), k, replace=False)) for k in (4, 6, 3)]
VALUES = [RNG.standard_normal((len(t), 2)) for t in TIMES]
TS, MASK, X = pn.union_times(TIMES, VALUES)
EPS = RNG.standard_normal((3, 3))
MODEL = pn.LatentODE(latent_dim=3, rnn_hidden=5, field=pn.MLP([3, 6, 3], activation="tanh"),
                     decoder=pn.MLP([3, 6, 2], activation="tanh"), control=pn.StepControl(rtol=1e-10, atol=1e-10),
                     dtype="float64")
PARAMS = MODEL.init(0)


@pytest.fixture(scope="module")
def results():
    """value_and_grad on each backend (one compile each)."""
    return {b: MODEL.replace(backend=b).value_and_grad(PARAMS, TS, X, MASK, eps=EPS) for b in ("jax", "torch")}


def _numpy_encoder(params, ts, x, mask):
    tensors = dict((s.name, params[s.offset:s.stop].reshape(s.shape)) for s in MODEL.param_layout())
    w, b = tensors["encoder.0.weight"], tensors["encoder.0.bias"]
    out = []
    for series in range(x.shape[0]):
        h, t_prev = np.zeros(5), None
        for k in reversed(range(len(ts))):
            if not mask[series, k]:
                continue
            dt = 0.0 if t_prev is None else t_prev - ts[k]
            h, t_prev = np.tanh(w @ np.concatenate([x[series, k], [dt], h]) + b), ts[k]
        out.append(tensors["head.weight"] @ h + tensors["head.bias"])
    q = np.array(out)
    return q[:, :3], q[:, 3:]


def test_union_times_places_each_observation_at_its_time():
    assert np.all(np.diff(TS) > 0) and set(np.concatenate(TIMES)) == set(TS)
    for b, (t, v) in enumerate(zip(TIMES, VALUES)):
        np.testing.assert_array_equal(TS[MASK[b]], t)
        np.testing.assert_array_equal(X[b, MASK[b]], v)
    assert np.isnan(X[~MASK]).all()


def test_parameter_layout_names_the_four_parts():
    names = [s.name for s in MODEL.param_layout()]
    assert names[:3] == ["encoder.0.weight", "encoder.0.bias", "head.weight"]
    assert names[-1].startswith("decoder.") and any(n.startswith("field.") for n in names)
    assert MODEL.param_layout()[0].shape == (5, 2 + 1 + 5)     # [x, Δt, h]


def test_encoder_runs_backwards_over_each_series_own_observations():
    post = MODEL.replace(backend="torch").encode(PARAMS, TS, X, MASK)
    mean, log_var = _numpy_encoder(PARAMS, TS, np.nan_to_num(X), MASK)
    np.testing.assert_allclose(post.mean, mean, rtol=0, atol=1e-13)
    np.testing.assert_allclose(post.log_var, log_var, rtol=0, atol=1e-13)


def test_elbo_is_the_masked_gaussian_likelihood_minus_the_kl(results):
    torch_model = MODEL.replace(backend="torch")
    pred = torch_model.predict(PARAMS, TS, X, TS, MASK, eps=EPS)
    post = torch_model.encode(PARAMS, TS, X, MASK)
    sigma = MODEL.noise_std
    ll = np.array([np.sum(-0.5 * ((X[b, MASK[b]] - pred[b, MASK[b]]) / sigma) ** 2 - np.log(sigma)
                          - 0.5 * np.log(2 * np.pi)) for b in range(3)])
    kl = 0.5 * np.sum(post.mean ** 2 + np.exp(post.log_var) - post.log_var - 1, axis=1)
    res = results["torch"]
    np.testing.assert_allclose(res.log_likelihood, ll, rtol=1e-10)
    np.testing.assert_allclose(res.kl, kl, rtol=1e-12)
    assert res.value == pytest.approx(-np.mean(ll - kl), rel=1e-10)


def test_jax_and_torch_agree_on_the_elbo_and_its_gradient(results):
    jax_res, torch_res = results["jax"], results["torch"]
    assert jax_res.value == pytest.approx(torch_res.value, rel=1e-9)
    scale = np.abs(torch_res.grad_params).max()
    assert np.abs(jax_res.grad_params - torch_res.grad_params).max() <= 1e-9 * scale
    np.testing.assert_allclose(jax_res.kl, torch_res.kl, rtol=1e-9)


def test_nfe_is_the_latent_solve_counted_alone(results):
    for backend in ("torch", "jax"):
        post = MODEL.replace(backend="torch").encode(PARAMS, TS, X, MASK)
        z0 = post.mean + np.exp(0.5 * post.log_var) * EPS
        field = MODEL.param_layout()
        start = min(s.offset for s in field if s.name.startswith("field."))
        stop = max(s.stop for s in field if s.name.startswith("field."))
        alone = MODEL.replace(backend=backend).ode_model().solve(PARAMS[start:stop], z0, TS).stats
        got = results[backend].stats
        assert (got.nfe_forward, got.steps_accepted, got.steps_rejected) == \
            (alone.nfe_forward, alone.steps_accepted, alone.steps_rejected)
        assert got.nfe_backward > 0


def test_gradient_matches_finite_differences(results):
    model = MODEL.replace(backend="torch")
    direction = np.random.default_rng(1).standard_normal(PARAMS.shape)
    h = 1e-6
    plus = model.value_and_grad(PARAMS + h * direction, TS, X, MASK, eps=EPS).value
    minus = model.value_and_grad(PARAMS - h * direction, TS, X, MASK, eps=EPS).value
    assert results["torch"].grad_params @ direction == pytest.approx((plus - minus) / (2 * h), rel=1e-6)


def test_unobserved_entries_do_not_reach_the_loss(results):
    noisy = X.copy()
    noisy[~MASK] = 1e6
    res = MODEL.replace(backend="torch").value_and_grad(PARAMS, TS, noisy, MASK, eps=EPS)
    assert res.value == results["torch"].value
    np.testing.assert_array_equal(res.grad_params, results["torch"].grad_params)


def test_predict_extrapolates_from_t0():
    pred = MODEL.replace(backend="torch").predict(PARAMS, TS, X, np.linspace(TS[0], 4.0, 7), MASK)
    assert pred.shape == (3, 7, 2) and np.all(np.isfinite(pred))


@pytest.mark.parametrize("call, message", [
    (lambda m: m.value_and_grad(PARAMS, TS, X, MASK[:, :-1]), r"mask must be a boolean array of shape \(batch, "),
    (lambda m: m.value_and_grad(PARAMS, TS, X, np.zeros_like(MASK)), "every series needs at least one observation"),
    (lambda m: m.value_and_grad(PARAMS, TS, X, np.ones_like(MASK)), "x contains NaN or infinite values at observed"),
    (lambda m: m.value_and_grad(PARAMS, TS, X, MASK, eps=EPS[:2]), r"eps must have shape \(batch, latent_dim\)"),
    (lambda m: m.predict(PARAMS, TS, X, TS[1:], MASK), r"pred_ts must be strictly increasing and start at ts\[0\]"),
    (lambda m: m.value_and_grad(PARAMS, TS[::-1], X, MASK), "ts must be the strictly increasing 1-D union"),
])
def test_bad_inputs_name_the_fix(call, message):
    with pytest.raises(pn.SpecError, match=message):
        call(MODEL.replace(backend="torch"))


def test_bad_models_name_the_fix():
    with pytest.raises(pn.SpecError, match=r"LatentODE decoder must map 4 features to 2, got \(3,\)"):
        pn.LatentODE(decoder=pn.MLP([4, 3]))
    with pytest.raises(pn.SpecError, match="LatentODE noise_std must be a number > 0"):
        pn.LatentODE(noise_std=0)


def test_spirals_are_seeded_and_follow_the_two_archimedean_curves():
    ts, truth, observed, clockwise = pn.datasets.latent_spirals(40, seed=3, noise=0.1)
    again = pn.datasets.latent_spirals(40, seed=3, noise=0.1)
    assert ts.shape == (100,) and truth.shape == observed.shape == (40, 100, 2)
    np.testing.assert_array_equal(observed, again[2])
    np.testing.assert_allclose(ts, np.linspace(0, 6 * np.pi, 1000)[:100])
    assert 0 < clockwise.sum() < 40
    cc = truth[~clockwise][0]                    # counter-clockwise: radius 0.3 θ about (5, 0)
    radius, angle = np.hypot(cc[:, 0] - 5, cc[:, 1]), np.unwrap(np.arctan2(cc[:, 1], cc[:, 0] - 5))
    np.testing.assert_allclose(radius, 0.3 * (angle - angle[0] + radius[0] / 0.3), atol=1e-9)
    assert 0.05 < np.std(observed - truth) < 0.15
    idx = pn.datasets.subsample(40, 100, 30, seed=0)
    assert idx.shape == (40, 30) and np.all(np.diff(idx, axis=1) > 0)
