"""Implicit (stiff) diffrax solvers with an exact, in-graph count of vector-field evaluations.

An implicit step evaluates the field a data-dependent number of times (the Newton iterations of each stage), and
diffrax keeps those counts to itself. A host callback per evaluation counts them exactly but costs ~1 ms each on
CPU — 50x the whole Robertson gradient. So the count travels through the solve as data instead:

- the state becomes ``(y, c)`` with a scalar count ``c``; :class:`CountingTerm` gives the field as ``(f(y), 0)``
  and keeps the count out of the step (its ``prod`` passes ``c`` through unscaled);
- :class:`CountingRootFinder` wraps the solver's root finder (diffrax's ``VeryChord``/optimistix's ``Chord``):
  after each Newton iteration it sets the ``c`` part of the stage value to the iteration count, and its
  convergence norm ignores ``c`` (so the Newton iterates of ``y`` are the unwrapped solver's, bit for bit: the
  linear system only gains an identity row);
- :class:`CountingSolver` reads each stage's ``c`` from the step's stage buffer (or the increment, for
  ImplicitEuler), adds the evaluations the step makes outside Newton iterations (its Jacobian linearisations,
  ImplicitEuler's explicit predictor), and returns the step's total as ``c`` of the candidate ``y1``;
- :class:`CountingController` wraps the PID controller: it sees every candidate, accepted or rejected, adds its
  ``c`` to a total in its state (returned with ``SaveAt(controller_state=True)``), and judges the step on ``y``
  alone. So rejected steps are counted too, and the controller takes the same steps as on the plain state.

The evaluations outside Newton iterations (``FIXED_PER_STEP``) are a constant of these methods; the whole count is
checked against an independent host-callback counter for every method in tests/test_stiff.py. Nothing here
changes the numbers: the solve takes the unwrapped solver's steps and values exactly (also tested).
"""

from __future__ import annotations

from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx


class CountingTerm(diffrax.AbstractTerm):
    """``(y, c) -> (f(t, y), 0)``; ``prod`` scales the field part by ``dt`` and passes the count part through."""

    term: diffrax.AbstractTerm

    def vf(self, t, y, args):
        return self.term.vf(t, y[0], args), jnp.zeros_like(y[1])

    def contr(self, t0, t1, **kwargs):
        return self.term.contr(t0, t1, **kwargs)

    def prod(self, vf, control):
        return self.term.prod(vf[0], control), vf[1]


class CountingRootFinder(optx.AbstractRootFinder):
    """A root finder on ``(x, c)`` iterates that writes its own iteration count into ``c``."""

    inner: optx.AbstractRootFinder
    rtol: float
    atol: float
    norm: Callable

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return self.inner.init(fn, y, args, options, f_struct, aux_struct, tags)

    def step(self, fn, y, args, options, state, tags):
        new_y, new_state, aux = self.inner.step(fn, y, args, options, state, tags)
        return (new_y[0], new_state.step.astype(new_y[1].dtype)), new_state, aux

    def terminate(self, fn, y, args, options, state, tags):
        return self.inner.terminate(fn, y, args, options, state, tags)

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return self.inner.postprocess(fn, y, aux, args, options, state, tags, result)


FIXED_PER_STEP = 2
"""Evaluations of each implicit step outside its Newton iterations, the same for every method here (measured
against a host-callback counter): an ESDIRK step linearises the field twice (the identity-diagonal Jacobian diffrax
sets up at the start of a step, then the one at the second stage); ImplicitEuler evaluates its explicit predictor
``k0`` and linearises once for its Chord iteration."""


class CountingSolver(diffrax.AbstractAdaptiveSolver):
    """Wraps an implicit diffrax solver (on :class:`CountingTerm` terms) to report each step's evaluations."""

    solver: diffrax.AbstractSolver

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    def order(self, terms):
        return self.solver.order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        if isinstance(solver_state, tuple):  # FSAL (ESDIRK): (first step?, f of the last stage)
            first_step, f0 = solver_state
            solver_state = (first_step, (f0[0], jnp.zeros_like(f0[1])))  # that count was the previous step's
        y1, y_error, dense, state, result = self.solver.step(terms, t0, t1, y0, args, solver_state, made_jump)
        if "k" in dense:  # Runge–Kutta: the stage buffer holds each stage's iteration count (the explicit
            newton = jnp.sum(dense["k"][1])  # first stage is a root find with zero diagonal, counted the same)
        else:  # ImplicitEuler: one root find on the increment y1 - y0
            newton = y1[1] - y0[1]
        count = newton + FIXED_PER_STEP
        y1 = (y1[0], count.astype(y0[1].dtype))
        y_error = (y_error[0], jnp.zeros_like(y_error[1]))
        return y1, y_error, dict(dense, y1=y1), state, result


class CountingController(diffrax.AbstractAdaptiveStepSizeController):
    """A step-size controller on ``(y, c)`` that judges steps on ``y`` and sums every candidate's ``c``."""

    inner: diffrax.AbstractAdaptiveStepSizeController

    @property
    def rtol(self):
        return self.inner.rtol

    @property
    def atol(self):
        return self.inner.atol

    @property
    def norm(self):
        return self.inner.norm

    def wrap(self, direction):
        return CountingController(self.inner.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.inner.init(terms, t0, t1, y0[0], dt0, args, func, error_order)
        return tnext, (state, jnp.zeros_like(y0[1]))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        state, total = controller_state
        keep, tprev, tnext, jump, state, result = self.inner.adapt_step_size(
            t0, t1, y0[0], y1_candidate[0], args, y_error[0], error_order, state)
        return keep, tprev, tnext, jump, (state, total + y1_candidate[1]), result


class _ImplicitKenCarp(diffrax.AbstractESDIRK):
    """A Kennedy–Carpenter IMEX pair's implicit ESDIRK tableau as a method on the whole field.

    diffrax's ``KenCarp*`` expect ``MultiTerm(explicit, implicit)``; with a zero explicit term they take
    explicit-sized steps on stiff problems (Robertson: 100 000 steps by t = 0.05, measured), so the implicit tableau
    is run alone here, with Kvaerno5's third-order Hermite interpolation — what OrdinaryDiffEq's ``KenCarp*`` do on
    an unsplit problem.
    """

    root_finder: optx.AbstractRootFinder = diffrax.with_stepsize_controller_tols(diffrax.VeryChord)()
    root_find_max_steps: int = 10
    interpolation_cls = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k


def _kencarp(pair: type) -> type:
    order = {"KenCarp3": 3, "KenCarp4": 4, "KenCarp5": 5}[pair.__name__]
    return type(pair.__name__, (_ImplicitKenCarp,), {
        "tableau": pair.tableau.tableaus[1], "order": lambda self, terms: order,
        "__module__": __name__, "__doc__": f"{pair.__name__}'s implicit tableau alone (see _ImplicitKenCarp)."})


KenCarp3, KenCarp4, KenCarp5 = (_kencarp(p) for p in (diffrax.KenCarp3, diffrax.KenCarp4, diffrax.KenCarp5))


def counting_parts(term: diffrax.AbstractTerm, solver, controller, y0, *, norm):
    """``(term, solver, controller, y0)`` that solve as given and count evaluations into the controller state.

    ``solver`` is a plain diffrax implicit solver; its root finder is rebuilt with the controller's tolerances
    (what ``diffeqsolve`` does for an implicit solver) and a norm that ignores the count.
    """
    count_norm = lambda tree: norm(tree[0])  # noqa: E731
    base = optx.Chord if isinstance(solver, diffrax.ImplicitEuler) else diffrax.VeryChord
    inner = base(rtol=controller.rtol, atol=controller.atol, norm=count_norm)
    root_finder = CountingRootFinder(inner, controller.rtol, controller.atol, count_norm)
    solver = eqx.tree_at(lambda s: s.root_finder, solver, root_finder)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(y0))
    return (CountingTerm(term), CountingSolver(solver), CountingController(controller),
            (y0, jnp.zeros((), dtype)))
