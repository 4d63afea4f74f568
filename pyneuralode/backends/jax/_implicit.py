"""Implicit (stiff) diffrax solvers with an exact, in-graph count of vector-field evaluations.

An implicit step evaluates the field a data-dependent number of times (the Newton iterations of each stage), and
diffrax keeps those counts to itself. A host callback per evaluation counts them exactly but costs ~1 ms each on
CPU — 50x the whole Robertson gradient. So the count travels through each step as data instead, and leaves it
beside the error estimate:

- inside a step, the state is ``(y, c)`` with a scalar count ``c``: :class:`CountingTerm` gives the field as
  ``(f(y), 0)`` and keeps the count out of the step (its ``prod`` passes ``c`` through unscaled);
- :class:`CountingRootFinder` wraps the solver's root finder (diffrax's ``VeryChord``/optimistix's ``Chord``) and
  runs it on ``y`` alone — the same relation, Jacobian, norm and iterates as the unwrapped solver, bit for bit —
  then sets the ``c`` part of the stage value to its iteration count;
- :class:`CountingSolver` takes the plain state: it runs the wrapped solver on ``(y0, 0)``, reads each stage's
  ``c`` from the step's stage buffer (or the increment, for ImplicitEuler), adds the evaluations the step makes
  outside Newton iterations (its Jacobian linearisations, ImplicitEuler's explicit predictor), and returns the
  plain ``y1``, dense output and solver state, with the step's total as the second half of ``y_error``
  (``(error, count)``), the one output of a step that reaches the step-size controller whether or not the step is
  accepted;
- :class:`CountingController` wraps the PID controller: it sees every candidate, accepted or rejected, adds the
  count to a total in its state (returned with ``SaveAt(controller_state=True)``), and judges the step on the
  error alone. So rejected steps are counted too, and the controller takes the same steps as on the plain state.

The solve's carried state, dense output and interpolation stay the plain ``y`` (the count costs 3-5% of a
Robertson solve; measured by ``benchmarks/stiff_bench.py``; a solver given ``count_evaluations=False`` is not
wrapped at all). The evaluations outside Newton iterations
(``FIXED_PER_STEP``) are a constant of these methods; the whole count is checked against an independent
host-callback counter for every method in tests/test_stiff.py. Nothing here changes the numbers: the solve takes
the unwrapped solver's steps and values exactly (also tested).
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
    """A root finder on ``(x, c)`` iterates that runs ``inner`` on ``x`` alone and writes its iteration count into ``c``.

    The ``c`` part of the implicit relation never feeds back into the ``x`` part (:class:`CountingTerm` ignores the
    count), so ``inner`` sees exactly the relation, Jacobian and norm of the unwrapped solver: the same iterates,
    bit for bit, and a linear system of the state's own size (no identity row for the count).
    """

    inner: optx.AbstractRootFinder
    rtol: float
    atol: float
    norm: Callable

    @staticmethod
    def _on_x(fn, y):
        """The relation ``fn`` restricted to ``x``: the count part held at ``y``'s (it does not affect ``x``)."""
        return lambda x, args: (lambda out: (out[0][0], out[1]))(fn((x, y[1]), args))

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        return self.inner.init(self._on_x(fn, y), y[0], args, options, f_struct[0], aux_struct, tags)

    def step(self, fn, y, args, options, state, tags):
        new_x, new_state, aux = self.inner.step(self._on_x(fn, y), y[0], args, options, state, tags)
        return (new_x, y[1]), new_state, aux  # the count is written once, by postprocess

    def terminate(self, fn, y, args, options, state, tags):
        return self.inner.terminate(self._on_x(fn, y), y[0], args, options, state, tags)

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        x, aux, stats = self.inner.postprocess(self._on_x(fn, y), y[0], aux, args, options, state, tags, result)
        return (x, state.step.astype(y[1].dtype)), aux, stats  # the iterations this root find took


FIXED_PER_STEP = 2
"""Evaluations of each implicit step outside its Newton iterations, the same for every method here (measured
against a host-callback counter): an ESDIRK step linearises the field twice (the identity-diagonal Jacobian diffrax
sets up at the start of a step, then the one at the second stage); ImplicitEuler evaluates its explicit predictor
``k0`` and linearises once for its Chord iteration."""


def _zero_count(y):
    return jnp.zeros((), jnp.result_type(*jax.tree_util.tree_leaves(y)))


class CountingSolver(diffrax.AbstractAdaptiveSolver):
    """Wraps an implicit diffrax solver (whose root finder is a :class:`CountingRootFinder`) on the plain state;
    each step's evaluation count leaves as ``y_error = (error, count)``."""

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
        state = self.solver.init(CountingTerm(terms), t0, t1, (y0, _zero_count(y0)), args)
        if isinstance(state, tuple):  # FSAL (ESDIRK): (first step?, f of the last stage); keep f's plain part
            state = (state[0], state[1][0])
        return state

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        zero = _zero_count(y0)
        if isinstance(solver_state, tuple):  # FSAL: the count part of the carried stage starts at zero
            solver_state = (solver_state[0], (solver_state[1], zero))
        y1, y_error, dense, state, result = self.solver.step(
            CountingTerm(terms), t0, t1, (y0, zero), args, solver_state, made_jump)
        if "k" in dense:  # Runge–Kutta: the stage buffer holds each stage's iteration count (the explicit
            newton = jnp.sum(dense["k"][1])  # first stage is a root find with zero diagonal, counted the same)
            dense = dict(dense, y0=dense["y0"][0], y1=dense["y1"][0], k=dense["k"][0])
        else:  # ImplicitEuler: one root find on the increment y1 - y0 (linear interpolation from y0 and y1)
            newton = y1[1]
            dense = dict(dense, y0=dense["y0"][0], y1=dense["y1"][0])
        if isinstance(state, tuple):
            state = (state[0], state[1][0])
        count = (newton + FIXED_PER_STEP).astype(zero.dtype)
        return y1[0], (y_error[0], count), dense, state, result


class CountingController(diffrax.AbstractAdaptiveStepSizeController):
    """A step-size controller that judges steps on ``y_error[0]`` and sums every candidate's ``y_error[1]``."""

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
        tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, _zero_count(y0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        state, total = controller_state
        error, count = y_error
        keep, tprev, tnext, jump, state, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, error, error_order, state)
        return keep, tprev, tnext, jump, (state, total + count), result


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


def counting_parts(solver, controller, *, norm):
    """``(solver, controller)`` that solve as given and count evaluations into the controller state.

    ``solver`` is a plain diffrax implicit solver; its root finder is rebuilt with the controller's tolerances
    (what ``diffeqsolve`` does for an implicit solver) and ``norm``.
    """
    base = optx.Chord if isinstance(solver, diffrax.ImplicitEuler) else diffrax.VeryChord
    inner = base(rtol=controller.rtol, atol=controller.atol, norm=norm)
    root_finder = CountingRootFinder(inner, controller.rtol, controller.atol, lambda tree: norm(tree[0]))
    solver = eqx.tree_at(lambda s: s.root_finder, solver, root_finder)
    return CountingSolver(solver), CountingController(controller)
