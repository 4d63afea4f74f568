"""``pn.grad`` / ``pn.jacobian`` inside a traced function: reverse mode written into the graph as ordinary ops.

Every op's derivative rule is checked against central finite differences (through the op cases of
``test_dynamics``); fields built from derivatives (a Hamiltonian network, a gradient flow) are checked on every
backend against the NumPy reference and finite differences of it — their parameter gradients are second
derivatives — and against a hand-written field for a Hamiltonian whose gradient is known in closed form.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import pyneuralode as pn
from pyneuralode._graph import NUMPY_OPS, evaluate
from test_dynamics import CASES, M, U0, W, _make, _param

from helpers import assert_field_matches_reference, model

R = np.array([0.7, -1.3, 0.4])  # weights that make each case's vector output one number
P = types.SimpleNamespace(w=W, M=M, s=1.7, c=np.array([1.0, -2.0, 0.5]))  # the cases' p as NumPy values


def _central(fn, x, eps=1e-6):
    """Central differences of ``fn`` (any output shape) at ``x``: shape ``fn(x).shape + x.shape``."""
    x = np.asarray(x, dtype=float)
    columns = []
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        columns.append((np.asarray(fn(x + e)) - np.asarray(fn(x - e))) / (2 * eps))
    out = np.stack(columns, axis=-1)
    return out.reshape(*out.shape[:-1], *x.shape)


# ---------------------------------------------------------------------- each op's rule
@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_of_every_op_matches_finite_differences(name):
    """The traced gradient of each op case, run with the graph's NumPy op table, against central differences of
    the case's own NumPy reference. Every op the graph has appears in some case (test_dynamics checks that), so
    every rule is exercised, as the backends compile it."""
    dyn = _make(lambda t, u, p: pn.grad(lambda x: np.sum(CASES[name](t, x, p) * R))(u), f"grad_{name}")
    case = _make(CASES[name], name)
    params = pn.init_params(case, 0)
    for t in (0.3, 1.1):
        def leaf(node, args, t=t):
            return {"time": lambda: np.asarray(t), "state": lambda: U0, "param": lambda: _param(dyn, params, node),
                    "constant": lambda: P.c, "literal": lambda: node.attr("value").array}[node.op]()

        expected = _central(lambda x: np.sum(case.evaluate(params, t, x) * R), U0)
        np.testing.assert_allclose(evaluate(dyn.graph, leaf, NUMPY_OPS), expected, rtol=1e-6, atol=1e-7)


def test_jacobian_and_hessian_by_nesting():
    def field(x):
        return np.stack([x[0] * x[1] ** 2, np.sin(x[2]) * x[0], np.exp(-x[1]), x @ M @ x])

    jac = pn.jacobian(field)(U0)
    assert jac.shape == (4, 3)
    np.testing.assert_allclose(jac, _central(field, U0), rtol=1e-7, atol=1e-8)

    def energy(x):
        return np.sum(x ** 3 * np.sin(x)) + x @ M @ x + np.log(np.sum(np.exp(x)))

    hessian = pn.jacobian(pn.grad(energy))(U0)
    np.testing.assert_allclose(hessian, _central(pn.grad(energy), U0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(hessian, hessian.T, rtol=1e-12, atol=1e-12)  # symmetric, as it must be
    matrix = pn.jacobian(lambda a: a @ U0)(M)  # with respect to a matrix: shape out + in
    np.testing.assert_allclose(matrix, np.einsum("ij,k->ijk", np.eye(3), U0))


def test_grad_of_a_function_that_ignores_its_argument_is_zero():
    np.testing.assert_array_equal(pn.grad(lambda x: np.sum(W))(U0), np.zeros(3))


# ---------------------------------------------------------------------- fields built from derivatives, on every backend
COVER = ("interp", "trig", "comparisons_where", "hyperbolic", "powers", "logical", "reductions", "matmul",
         "neg_pos_abs", "arctan2_logaddexp", "indexing", "linalg")
"""Op cases whose gradients together contain every op a gradient graph can have (checked below). Not
``lowered_numpy``, whose ``np.array([u[1], -u[0], t])`` mixes traced values with the NumPy reference's number
``t``, which NumPy's ufuncs then cannot apply to."""


def test_the_cover_uses_every_op_the_gradients_use():
    def ops(names):
        dyn = _make(lambda t, u, p: pn.grad(lambda x: sum(np.sum(CASES[n](t, x, p) * R) for n in names))(u))
        return {node.op for node in dyn.graph.nodes}
    assert ops(COVER) == ops([name for name in CASES if name != "lowered_numpy"])


@pn.dynamics(state=3, params={"w": W, "M": M, "s": 1.7}, constants={"c": [1.0, -2.0, 0.5]}, positive=["s"])
def gradient_of_every_case(t, u, p):
    """The gradient of one scalar built from cases that together use every op (:data:`COVER`): the backends'
    compiled rules, all at once, in one compile."""
    return pn.grad(lambda x: sum(np.sum(CASES[name](t, x, p) * R) for name in COVER))(u)


H_NET = pn.MLP([2, 16, 16, 1], activation="tanh")


@pn.dynamics(state=2, params={"k": 1.5}, nets={"H": H_NET, "V": pn.MLP([2, 8, 1], activation="softplus",
                                                                       time_input=True)})
def hamiltonian_nn(t, u, p):
    """Greydanus et al. (2019): dq/dt = ∂H/∂p, dp/dt = -∂H/∂q, with a learned H plus known physics and a
    time-dependent learned potential (a network that reads t)."""
    dH = pn.grad(lambda x: p.H(x)[0] + 0.5 * p.k * x[0] ** 2 + p.V(x)[0])(u)
    return np.stack([dH[1], -dH[0]])


@pn.dynamics(state=2, nets={"E": pn.Sequential(pn.Augment(1), pn.Residual(pn.MLP([3, 8, 3], activation="elu")),
                                                pn.Linear(3, 1))})
def gradient_flow(t, u, p):
    """-∇E(u) of an energy whose network has a skip connection and an augmented input."""
    return -pn.grad(lambda x: p.E(x)[0])(u)


@pytest.mark.parametrize("dyn", [gradient_of_every_case, hamiltonian_nn, gradient_flow],
                         ids=["every_op", "hamiltonian_nn", "residual_augment"])
def test_fields_built_from_gradients_match_the_reference_and_second_derivatives(backend, dyn):
    params = pn.init_params(dyn, 0)
    u = np.stack([U0, U0[::-1] * 0.9])[:, :dyn.state[0]]
    r = np.random.default_rng(1).standard_normal(u.shape)
    assert_field_matches_reference(backend, dyn, params, 0.7, u, r, rtol=1e-11)


def test_reference_hnn_equals_its_hand_written_gradient():
    """The NumPy reference of the network's gradient against the chain rule written out by hand."""
    params = pn.init_params(hamiltonian_nn, 2)
    slots = {s.name: params[s.offset:s.stop].reshape(s.shape) for s in pn.param_layout(hamiltonian_nn)}
    q_p, t = np.array([0.3, -0.8]), 0.4
    h1 = np.tanh(slots["H.0.weight"] @ q_p + slots["H.0.bias"])
    h2 = np.tanh(slots["H.2.weight"] @ h1 + slots["H.2.bias"])
    dh = slots["H.0.weight"].T @ ((1 - h1 ** 2) * (slots["H.2.weight"].T @ ((1 - h2 ** 2) * slots["H.4.weight"][0])))
    z = slots["V.0.weight"] @ np.append(q_p, t) + slots["V.0.bias"]
    dv = (slots["V.0.weight"][:, :2].T @ (slots["V.2.weight"][0] / (1 + np.exp(-z))))
    grad_h = dh + dv + np.array([params[0] * q_p[0], 0.0])
    np.testing.assert_allclose(hamiltonian_nn.evaluate(params, t, q_p), [grad_h[1], -grad_h[0]], rtol=1e-12)


@pn.dynamics(state=2, params={"g": 9.81, "length": 1.5})
def pendulum_from_its_energy(t, u, p):
    energy = pn.grad(lambda x: 0.5 * x[1] ** 2 / p.length ** 2 - p.g / p.length * np.cos(x[0]))
    dH = energy(u)
    return np.stack([dH[1], -dH[0]])


@pn.dynamics(state=2, params={"g": 9.81, "length": 1.5})
def pendulum_by_hand(t, u, p):
    return np.stack([u[1] / p.length ** 2, -p.g / p.length * np.sin(u[0])])


def test_hamiltonian_field_solves_like_the_hand_written_one_and_conserves_energy(backend):
    """The field from ``pn.grad`` of the pendulum's energy is the hand-written field: same states, gradients and
    evaluation counts through a solve, and the energy is conserved to the solver's tolerance."""
    ts = np.linspace(0.0, 5.0, 11)
    y0 = np.array([[1.0, 0.0], [2.5, 0.3]])
    from_energy, by_hand = (model(dyn, backend=backend, control=pn.StepControl(rtol=1e-10, atol=1e-10))
                            for dyn in (pendulum_from_its_energy, pendulum_by_hand))
    params = from_energy.init(0)
    a, b = from_energy.solve(params, y0, ts), by_hand.solve(params, y0, ts)
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-12, atol=1e-12)
    assert a.stats.nfe_forward == b.stats.nfe_forward
    q, mom = a.ys[..., 0], a.ys[..., 1]
    energy = 0.5 * mom ** 2 / 1.5 ** 2 - 9.81 / 1.5 * np.cos(q)
    assert np.max(np.abs(energy - energy[0])) < 1e-8
    loss = pn.MSE(np.zeros_like(a.ys))
    ga, gb = (m.value_and_grad(params, y0, ts, loss=loss) for m in (from_energy, by_hand))
    np.testing.assert_allclose(ga.grad_params, gb.grad_params, rtol=1e-9)
    np.testing.assert_allclose(ga.grad_y0, gb.grad_y0, rtol=1e-9)


# ---------------------------------------------------------------------- errors name the fix
def _error(fn, **kwargs) -> str:
    with pytest.raises(pn.SpecError) as info:
        pn.dynamics(fn, state=2, **kwargs)
    return str(info.value)


def test_grad_of_a_vector_says_reduce_it_or_use_jacobian():
    message = _error(lambda t, u, p: pn.grad(lambda x: x * 2.0)(u))
    assert "must return one real number, got shape (2,)" in message and "pn.jacobian" in message


def test_grad_of_a_boolean_function_or_value():
    assert "boolean value, which has no derivative" in _error(lambda t, u, p: pn.grad(lambda x: x[0] > 0)(u))
    assert "called on a boolean value" in _error(lambda t, u, p: pn.grad(lambda x: 1.0)(u > 0) + u)


def test_grad_through_a_convolution_says_which_layers_it_differentiates():
    with pytest.raises(pn.SpecError, match="networks of Linear and ConcatSquash layers.*not through Conv2d"):
        pn.dynamics(lambda t, u, p: pn.grad(lambda x: p.C(x)[0])(u), state=(1, 2, 2),
                    nets={"C": pn.Sequential(pn.Conv2d(1, 1, 1), pn.Flatten())})


def test_grad_through_a_time_gated_network(backend):
    """A ConcatSquash network (FFJORD's time-gated layer) is written out in ops like an MLP: the field built from
    its gradient matches the NumPy reference, with parameter and state gradients against central differences."""
    @pn.dynamics(state=2, nets={"C": pn.ConcatSquashMLP([2, 8, 1])})
    def gradient_flow(t, u, p):
        return -pn.grad(lambda x: p.C(x)[0])(u)
    u = np.array([[0.3, -0.4], [1.1, 0.2]])
    r = np.random.default_rng(4).standard_normal(u.shape)
    assert_field_matches_reference(backend, gradient_flow, pn.init_params(gradient_flow, 5), 0.6, u, r)


def test_the_users_own_error_is_reported_with_its_name():
    def energy(x):
        raise RuntimeError("boom")
    assert "Tracing pn.grad(energy) failed: RuntimeError: boom" in _error(lambda t, u, p: pn.grad(energy)(u))


@pn.loss
def fit_with_a_gradient_penalty(ys, target):
    """A loss that reads a gradient: pn.grad works in pn.loss as in a field."""
    return np.mean((ys - target) ** 2) + 0.1 * np.sum(pn.grad(lambda z: np.sum(np.sin(z)))(ys[-1]) ** 2)


@pn.dynamics(state=2)
def oscillator(t, u, p):
    return np.stack([u[1], -u[0]])


# the position's share of the energy falls to 0.1 (x = cos t, so at t = arccos 0.1), written through pn.grad
ENERGY_GRADIENT_EVENT = pn.Event(lambda t, u, p: pn.grad(lambda x: 0.5 * x[0] ** 2 + 0.5 * x[1] ** 2)(u)[0] - 0.1)


def test_grad_inside_a_loss_and_an_event(backend):
    tol = pn.StepControl(rtol=1e-10, atol=1e-10)
    hit = model(oscillator, backend=backend, control=tol).solve_event(
        np.zeros(0), np.array([1.0, 0.0]), event=ENERGY_GRADIENT_EVENT, t0=0.0, t1=5.0)
    assert hit.occurred and abs(hit.t - np.arccos(0.1)) < 1e-8
    ude = model(pn.MLP([2, 8, 2], activation="tanh"), backend=backend)
    params, ts, y0 = ude.init(0), np.linspace(0.0, 1.0, 3), np.array([[0.5, 0.1]])
    target = np.zeros((3, 1, 2))
    res = ude.value_and_grad(params, y0, ts, loss=fit_with_a_gradient_penalty(target))
    ys = ude.solve(params, y0, ts).ys
    expected = np.mean((ys - target) ** 2) + 0.1 * np.sum(np.cos(ys[-1]) ** 2)  # d/dz sum(sin z) = cos z
    assert abs(res.value - expected) < 1e-12
