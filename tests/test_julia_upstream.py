"""What the Julia code calls upstream, and which upstream releases that was checked against (no Julia needed).

Julia cannot run on the development machines or in CI, so an upstream API drift (a renamed keyword, a constructor
that changed shape in a minor release, a sensitivity algorithm that refuses array states) would otherwise first
show on a user's machine. The table ``UPSTREAM`` records, per upstream package, the releases whose source was read
for the names PyNeuralODEJL imports, and per name the keyword arguments the code passes. The tests fail when

- ``[compat]`` in Project.toml admits a release outside what was checked (under semver, a range read at both
  ends of a major covers that major; a new major, or an older minor than the one read, is outside);
- the Julia code imports a name, or passes a keyword, that the table does not record (record it after reading
  the source of every release ``[compat]`` admits);
- a keyword reaching ``solve`` through solve.jl's NamedTuples is not one OrdinaryDiffEqCore's ``__init`` takes;
- a ``fieldnames``/``isdefined`` branch on an upstream type is not recorded with the eras it distinguishes;
- a sensitivity algorithm would receive a state kind it does not accept (``ReverseDiffAdjoint``: vectors only),
  for any model family.

Each checker is also run on a deliberately broken copy, so it provably can fail.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = __import__("pytest").importorskip("tomli", reason="Python 3.10 needs tomli to read TOML")

import pytest

from test_julia_static import _parser, broken_copy

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pyneuralode" / "julia"
STDLIBS = {"Logging", "Random"}  # versioned with Julia itself (compat "1")


@dataclasses.dataclass(frozen=True)
class Checked:
    """The releases of one upstream package read for the names PyNeuralODEJL uses from it."""

    checked: str  # a Julia compat spec: the releases the reading covers (semver within a major)
    read: str  # which releases were read, and where
    symbols: dict[str, frozenset[str]]  # imported name -> the keyword names the code passes to it
    splat_ok: frozenset[str] = frozenset()  # names called with `kwargs...` (keys built elsewhere, see `read`)


def _kw(*names: str) -> frozenset[str]:
    return frozenset(names)


_EXPLICIT = _kw()
UPSTREAM: dict[str, Checked] = {
    "SciMLSensitivity": Checked(
        "7.70",
        "v7.70.0 (ca2e34b, 2024-11-05) and 7.112.3 (efb2fdb): src/sensitivity_algorithms.jl keyword constructors "
        "(Backsolve/Interpolating: autojacvec, checkpointing; Quadrature: autojacvec, abstol, reltol; Gauss: "
        "autojacvec, checkpointing), `ReverseDiffVJP(compile = false)`, `EnzymeVJP(; chunksize = 0)`; "
        "src/concrete_solve.jl: ReverseDiffAdjoint raises 'only supports vector u0' in both",
        {"BacksolveAdjoint": _kw("autojacvec", "checkpointing"),
         "InterpolatingAdjoint": _kw("autojacvec", "checkpointing"),
         "QuadratureAdjoint": _kw("autojacvec", "abstol", "reltol"),
         "GaussAdjoint": _kw("autojacvec", "checkpointing"),
         "ReverseDiffAdjoint": _EXPLICIT, "ReverseDiffVJP": _EXPLICIT, "ZygoteVJP": _EXPLICIT,
         "EnzymeVJP": _EXPLICIT}),
    "OrdinaryDiffEqCore": Checked(
        "1 - 4",
        "1.0.0, 1.29.0, 2.0.0, 3.0.0-3.33.0, 4.0.0, 4.1.0, 4.2.0, 4.15.0 (lib/OrdinaryDiffEqCore/src/"
        "integrators/controllers.jl and solve.jl): field-less `IController` with solve keywords (1.0-3.3), "
        "`NewIController(QT, alg; qmin, qmax, gamma, qsteady_min, qsteady_max)` read when a controller is passed "
        "(3.4-3.33, `qmax_first_step` from 3.10), `IController(; qmin, qmax, qmax_first_step, gamma, "
        "qsteady_min, qsteady_max)` with fields (4.0-4.1) or a `basic` NamedTuple (>= 4.2)",
        {"IController": _kw("qmin", "qmax", "qmax_first_step", "gamma", "qsteady_min", "qsteady_max"),
         "NewIController": _kw("qmin", "qmax", "qmax_first_step", "gamma", "qsteady_min", "qsteady_max"),
         "OrdinaryDiffEqCore": _EXPLICIT}),
    "OrdinaryDiffEqRosenbrock": Checked(
        "1.4 - 2", "tags OrdinaryDiffEqRosenbrock-v1.3.1 (no `_process_AD_choice`: `autodiff` must be a Val), "
        "v1.4.0 (ADTypes accepted) and 2.6.6: `Rodas5P(; autodiff)` exported", {"Rodas5P": _kw("autodiff")}),
    "OrdinaryDiffEqSDIRK": Checked(
        "1.2 - 2", "1.1.0 (no `_process_AD_choice`), v1.2.0 and 2.9.1: `ImplicitEuler`, `Kvaerno3`, `Kvaerno4`, "
        "`Kvaerno5`, `KenCarp3`, `KenCarp4`, `KenCarp5` exported (; autodiff, the SDIRK_docstring keywords)",
        {n: _kw("autodiff") for n in ("ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5", "KenCarp3", "KenCarp4",
                                      "KenCarp5")}),
    "OrdinaryDiffEqBDF": Checked(
        "1.2 - 2", "1.1.2 (no `_process_AD_choice`), v1.2.0 and 2.4.4: `QNDF`, `FBDF` (; autodiff)",
        {"QNDF": _kw("autodiff"), "FBDF": _kw("autodiff")}),
    "OrdinaryDiffEqTsit5": Checked("1 - 2", "v1.0.0 and 2.1.3: `Tsit5` exported", {"Tsit5": _EXPLICIT}),
    "OrdinaryDiffEqVerner": Checked("1 - 2", "v1.0.0 and 2.3.0: `Vern7` exported", {"Vern7": _EXPLICIT}),
    "OrdinaryDiffEqHighOrderRK": Checked("1 - 2", "v1.0.0 and 2.2.0: `DP8` exported", {"DP8": _EXPLICIT}),
    "OrdinaryDiffEqLowOrderRK": Checked(
        "1 - 2", "v1.0.0 and 2.2.3: Euler, Heun, Midpoint, RK4, BS3, DP5 exported; fixed-step methods are FSAL "
        "(fixed_timestep_perform_step.jl `initialize!` evaluates f once)",
        {n: _EXPLICIT for n in ("BS3", "DP5", "Euler", "Heun", "Midpoint", "RK4")}),
    "SciMLBase": Checked(
        "2.60 - 3", "v2.60.0 and 3.49.2: ODEFunction, ODEProblem, ReturnCode, successful_retcode, "
        "sensitivity_solution; `solve` keywords saveat, tstops, u0, p, sensealg, reltol, abstol, maxiters, dt, "
        "adaptive, controller (splatted from SolveOptions.kwargs, built in solve.jl); ensembles (3.49.2, "
        "src/ensemble/: `EnsembleProblem(prob; prob_func, output_func, reduction, u_init, safetycopy)`, "
        "`solve(eprob, alg, EnsembleThreads(); trajectories, kwargs...)`, `remake(prob; u0, p)`, "
        "`EnsembleSolution.u`; `init(prob, alg; kwargs...)` then `solve!(integrator)` (CommonSolve, re-exported; "
        "OrdinaryDiffEqCore's `__init` sets the automatic first step in `integrator.dt` via `handle_dt!`, read "
        "at 4.15.0); `prob_func(prob, ctx::EnsembleContext)` with `ctx.sim_id`/`ctx.repeat` in 3.x "
        "vs `prob_func(prob, i, repeat)` in 2.x -- _EnsembleMember has both methods); events: "
        "`ContinuousCallback(condition, affect!; ...)` (affect_neg! defaults to affect!, condition(u, t, "
        "integrator)) and `terminate!(integrator)` exported by both (v2.60.0 src/callbacks.jl:165, "
        "integrator_interface.jl:125), a terminated solve's retcode `ReturnCode.Terminated`; `solve` keywords "
        "callback, save_everystep, save_start, save_end in 3.49.2's `allowedkeywords` (src/errors.jl; DiffEqBase's "
        "list before 3.x)",
        {"ODEFunction": _EXPLICIT, "ODEProblem": _EXPLICIT, "ReturnCode": _EXPLICIT, "successful_retcode": _EXPLICIT,
         "ContinuousCallback": _EXPLICIT, "terminate!": _EXPLICIT,
         "solve": _kw("u0", "p", "saveat", "sensealg", "trajectories", "callback", "save_everystep", "save_start",
                      "save_end"),
         "EnsembleProblem": _kw("prob_func", "safetycopy"), "EnsembleThreads": _EXPLICIT,
         "remake": _kw("u0", "p"), "init": _kw("saveat"), "solve!": _EXPLICIT},
        splat_ok=_kw("solve", "init")),
    "Lux": Checked(
        "1", "v1.0.0 and 1.31.4: `Dense(in => out; use_bias)`, `Conv(k, in => out; stride, pad, use_bias, "
        "cross_correlation)` (cross_correlation present at v1.0.0)",
        {"Dense": _kw("use_bias"), "Conv": _kw("stride", "pad", "use_bias", "cross_correlation")}),
    "LuxCore": Checked(
        "1", "LuxCore-v1.0.0 and 1.5.3: AbstractLuxLayer, AbstractLuxWrapperLayer{:layers}, setup, "
        "initialparameters", {"LuxCore": _EXPLICIT, "AbstractLuxLayer": _EXPLICIT,
                              "AbstractLuxWrapperLayer": _EXPLICIT}),
    "ComponentArrays": Checked(
        "0.15", "v0.15.0 and 0.15.45: `ComponentArray(data, axes)`, getaxes, getdata; "
        "ext/ComponentArraysReverseDiffExt.jl `TrackedComponentArray` (a `TrackedArray` whose value is a "
        "ComponentArray) with `getproperty` in both",
        {"ComponentArray": _EXPLICIT, "getaxes": _EXPLICIT, "getdata": _EXPLICIT}),
    "ReverseDiff": Checked(
        "1.15", "v1.15.0 and 1.16.2: `TrackedArray{V,D,N,VA,DA}`, `reshape` of a TrackedArray (src/tracked.jl)",
        {"ReverseDiff": _EXPLICIT}),
    "ADTypes": Checked("1", "v1.0.0 and 1.23.0: AutoForwardDiff(), AutoFiniteDiff()",
                       {"AutoForwardDiff": _EXPLICIT, "AutoFiniteDiff": _EXPLICIT}),
    "ChainRulesCore": Checked("1", "v1.0.0 and 1.26.1: @non_differentiable", {"ChainRulesCore": _EXPLICIT}),
    "Zygote": Checked("0.6.70 - 0.7", "v0.6.70 and 0.7.12: `Zygote.pullback(f, args...)`", {"Zygote": _EXPLICIT}),
    "PrecompileTools": Checked("1.2", "v1.2.0 and 1.3.4: @setup_workload, @compile_workload",
                               {"@compile_workload": _EXPLICIT, "@setup_workload": _EXPLICIT}),
    "CUDA": Checked("5 - 6", "v5.0.0 and 6.3.0: `CuArray` exported, `CUDA.functional()` (public in 6)",
                    {"CUDA": _EXPLICIT, "CuArray": _EXPLICIT}),
}

# Keywords that reach `solve` through the NamedTuples solve.jl builds (SolveOptions.kwargs, _controller_kwargs,
# _solve_kwargs): OrdinaryDiffEqCore's `__init`/`_ode_init` keyword list, read at 1.0.0 and 4.15.0.
SOLVE_KEYWORDS = {
    **{k: "OrdinaryDiffEqCore 1.0-4.15" for k in ("saveat", "tstops", "dt", "adaptive", "abstol", "reltol",
                                                    "controller", "maxiters")},
    # `unstable_check = ODE_DEFAULT_UNSTABLE_CHECK` in `__init`, with the (dt, u, p, t) signature, in every
    # OrdinaryDiffEq/OrdinaryDiffEqCore release read (and in OrdinaryDiffEq's solve.jl long before the split)
    "unstable_check": "OrdinaryDiffEqCore 1.0-4.15",
    # `dtmax = eltype(prob.tspan)(prob.tspan[end] - prob.tspan[1])` in `_ode_init` (read at SciML/OrdinaryDiffEq.jl
    # 00a7452), made negative there for a backward solve; a common solver option of every OrdinaryDiffEq release
    "dtmax": "OrdinaryDiffEqCore __init (common solver option)",
    # SciML's common solver option (its docs: "force FSAL algorithms ... to re-evaluate the derivatives at the
    # point of discontinuity"), an `__init` keyword kept in `integrator.opts.d_discontinuities_cache` (seen in
    # OrdinaryDiffEq's `reinit!`); not re-read at the two pinned releases this session
    "d_discontinuities": "OrdinaryDiffEqCore __init (common solver option)",
    # the Core 1.0-3.3 branch of _controller_kwargs only: `solve` keywords there, gone from `_ode_init` in 4.x
    **{k: "OrdinaryDiffEqCore 1.0-3.33" for k in ("gamma", "qmin", "qmax", "qsteady_min", "qsteady_max")},
}

# `fieldnames`/`isdefined` branches on upstream types: what each distinguishes (read as in UPSTREAM).
BRANCHES = {
    "IController": "OrdinaryDiffEqCore: no fields in 1.0-3.33; fields qmin..qsteady_max in 4.0-4.1; `basic` from 4.2",
    "NewIController": "OrdinaryDiffEqCore: defined in 3.4-3.33 (removed in 4.0); field qmax_first_step from 3.10",
}

# Which state kinds each sensitivity algorithm accepts (SciMLSensitivity src/concrete_solve.jl, 7.70.0 and 7.112.3:
# only `ReverseDiffAdjoint` checks `u0 isa AbstractVector`; the continuous adjoints work on any AbstractArray).
SENSEALG_STATES = {
    "ReverseDiffAdjoint": {"vector"},
    "BacksolveAdjoint": {"vector", "array"},
    "InterpolatingAdjoint": {"vector", "array"},
    "QuadratureAdjoint": {"vector", "array"},
    "GaussAdjoint": {"vector", "array"},
}
# The model families and the (array) states they solve: each file must build its problems with `flat_problem`.
FAMILIES = {"solve.jl": "ODEModel, (D, B)", "cnf.jl": "CNF, (D + 1 (+ 2), B)", "network.jl": "ODE block, (W, H, C, B)",
            "latent.jl": "LatentODE, (L, B)"}


# ------------------------------------------------------------------------------------------------ parsing helpers
def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _imports(src: Path) -> list[tuple[str, str, str]]:
    """(file, package, name) for every `using Package: a, b` / `import Package: a` in the package."""
    out = []
    for path in sorted(src.rglob("*.jl")):
        text = path.read_text()
        for match in re.finditer(r"^\s*(?:using|import) (\w+): ([^\n]+(?:\n {4}[^\n]+)*)", text, re.M):
            for name in re.split(r"[,\s]+", match.group(2).strip()):
                if name:
                    out.append((path.name, match.group(1), name))
    return out


def _calls(src: Path):
    """(file, line, callee, keyword names, has a keyword splat) for every call expression of a plain name."""
    parser = _parser()
    for path in sorted(src.rglob("*.jl")):
        tree = parser.parse(path.read_bytes())
        for node in _walk(tree.root_node):
            if node.type != "call_expression" or node.children[0].type != "identifier":
                continue
            args = next((c for c in node.children if c.type == "argument_list"), None)
            if args is None:
                continue
            keywords, splat, after_semicolon = set(), False, False
            for child in args.children:
                if child.type == ";":
                    after_semicolon = True
                elif child.type == "named_argument":
                    keywords.add(child.children[0].text.decode())
                elif after_semicolon and child.type == "identifier":
                    keywords.add(child.text.decode())  # `f(; name)` is `f(; name = name)`
                elif after_semicolon and child.type == "splat_expression":
                    splat = True
            yield path.name, node.start_point[0] + 1, node.children[0].text.decode(), keywords, splat


def _recorded() -> dict[str, tuple[str, Checked]]:
    return {name: (package, entry) for package, entry in UPSTREAM.items() for name in entry.symbols}


# ------------------------------------------------------------------------------------------------ checkers
def _compat_violations(compat: dict[str, str]) -> list[str]:
    ranges = pytest.importorskip("juliapkg.compat", reason="juliapkg parses Julia compat specs")
    problems = []
    for package, spec in compat.items():
        if package == "julia" or package in STDLIBS:
            continue
        if package not in UPSTREAM:
            problems.append(f"{package}: in [compat] but no releases recorded as checked")
            continue
        checked = ranges.Compat.parse(UPSTREAM[package].checked)
        for clause in ranges.Compat.parse(spec).clauses:
            if not any(c.lo <= clause.lo and clause.hi <= c.hi for c in checked.clauses):
                problems.append(f"{package} = {spec!r} admits [{clause.lo}, {clause.hi}), outside the releases "
                                f"checked ({UPSTREAM[package].checked!r}: {UPSTREAM[package].read})")
    return problems


def _symbol_violations(src: Path) -> list[str]:
    problems = []
    for file, package, name in _imports(src):
        entry = UPSTREAM.get(package)
        if package in STDLIBS or package == "PyNeuralODEJL":
            continue
        if entry is None or name not in entry.symbols:
            problems.append(f"{file}: `using {package}: {name}` is not recorded in UPSTREAM (read its source in "
                            "every release [compat] admits, then record it)")
    recorded = _recorded()
    for file, line, callee, keywords, splat in _calls(src):
        if callee not in recorded:
            continue
        package, entry = recorded[callee]
        unknown = keywords - entry.symbols[callee]
        if unknown:
            problems.append(f"{file}:{line}: {callee}(; {', '.join(sorted(unknown))}) passes keywords not checked "
                            f"against {package} ({entry.checked})")
        if splat and callee not in entry.splat_ok:
            problems.append(f"{file}:{line}: {callee}(; ...) splats keywords: write them out so they can be checked")
    return problems


def _namedtuple_keys(text: str) -> list[list[str]]:
    """The keys of every `(; k = v, name, ...)` NamedTuple literal in Julia code (splats skipped)."""
    out = []
    for match in re.finditer(r"(?<![\w)}\]])\(;", text):  # `(;` not right after a callee: not `f(; kw)`
        keys, start = [], match.end()
        while True:
            entry = _argument(text, start)
            name = re.match(r"\s*(\w+)\s*(=(?!=)|$)", entry)
            if name and not entry.rstrip().endswith("..."):
                keys.append(name.group(1))
            start += len(text[start:]) - len(text[start:].lstrip()) + len(entry)
            while start < len(text) and text[start] in " \n":
                start += 1
            if start >= len(text) or text[start] != ",":
                break
            start += 1
        out.append(keys)
    return out


def _solve_keyword_violations(src: Path) -> list[str]:
    problems = []
    for keys in _namedtuple_keys(_code((src / "solve.jl").read_text())):
        for key in keys:
            if key not in SOLVE_KEYWORDS:
                problems.append(f"solve.jl: `solve` keyword {key!r} is not recorded in SOLVE_KEYWORDS (read it in "
                                "OrdinaryDiffEqCore's `__init` keywords for every release [compat] admits)")
    return problems


def _branch_violations(src: Path) -> list[str]:
    problems = []
    for path in sorted(src.rglob("*.jl")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for name in re.findall(r"fieldnames\((\w+)\)|isdefined\(\w+, :(\w+)\)", line):
                name = next(n for n in name if n)
                if name in _recorded() and name not in BRANCHES:
                    problems.append(f"{path.name}:{lineno}: a branch on {name}'s shape is not recorded in BRANCHES")
    return problems


def _state_kind(src: Path) -> str:
    """The state kind `flat_problem` hands to `ODEProblem`: "vector" if it passes `vec(U0)`, else "array"."""
    text = (src / "solve.jl").read_text()
    body = re.search(r"^flat_problem\(.*?\) =\n(.*?)\n\n", text, re.M | re.S)
    assert body, "solve.jl must define `flat_problem(rhs, U0, tspan, p) = ...`"
    return "vector" if re.search(r"\bvec\(U0\)", body.group(1)) else "array"


def _sensealgs(src: Path) -> set[str]:
    text = (src / "solve.jl").read_text()
    return set(re.findall(r'kind == "\w+" && return (\w+)\(', text))


def _code(text: str) -> str:
    """Julia source without docstrings and comments."""
    return re.sub(r"#[^\n]*", "", re.sub(r'"""(.*?)"""', "", text, flags=re.S))


def _argument(text: str, start: int) -> str:
    """The expression starting at ``start`` up to the next comma or closing bracket at its own nesting level."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            break
        i += 1
    return text[start:i].strip()


def _state_violations(src: Path) -> list[str]:
    problems = []
    for file in FAMILIES:
        text = _code((src / file).read_text())
        direct = re.findall(r"\bODEProblem\{", text)
        if file != "solve.jl" and direct or file == "solve.jl" and len(direct) != 1:
            problems.append(f"{file}: builds an ODEProblem directly; every family must use `flat_problem`")
        if "flat_problem(" not in text:
            problems.append(f"{file}: does not build its problems with `flat_problem`")
        for match in re.finditer(r"\bsolve\([^;]*;[^)]*?\bu0 = ", text):
            u0 = _argument(text, match.end())
            if not u0.startswith("vec("):
                problems.append(f"{file}: solve(...; u0 = {u0}) is not a flat state")
    kind = _state_kind(src)
    for sensealg in _sensealgs(src):
        accepted = SENSEALG_STATES.get(sensealg)
        if accepted is None:
            problems.append(f"{sensealg}: which states it accepts is not recorded in SENSEALG_STATES")
        elif kind not in accepted:
            for file, family in FAMILIES.items():
                problems.append(f"{sensealg} accepts {sorted(accepted)} states, but the {family} state of "
                                f"{file} reaches it as an {kind}")
    return problems


# ------------------------------------------------------------------------------------------------ tests
def test_compat_admits_only_checked_releases():
    project = tomllib.loads((PKG / "Project.toml").read_text())
    assert set(project["compat"]) - {"julia"} <= set(UPSTREAM) | STDLIBS
    assert _compat_violations(project["compat"]) == []


def test_compat_checker_catches_an_unchecked_release():
    """The ranges this session narrowed: a new major of OrdinaryDiffEqCore, and the stiff sub-libraries before
    they accepted ADTypes' `autodiff`."""
    problems = _compat_violations({"OrdinaryDiffEqCore": "1, 2, 3, 4, 5", "OrdinaryDiffEqRosenbrock": "1, 2",
                                   "Lux": "1", "NotAPackage": "1"})
    assert len(problems) == 3, problems
    assert any("OrdinaryDiffEqCore" in p and "[5.0.0, 6.0.0)" in p for p in problems)
    assert any("OrdinaryDiffEqRosenbrock" in p and "[1.0.0, 2.0.0)" in p for p in problems)
    assert any("NotAPackage" in p for p in problems)


def test_every_upstream_name_and_keyword_is_recorded():
    assert _symbol_violations(PKG) == []


def test_symbol_checker_catches_unrecorded_names_and_keywords(tmp_path):
    copy = broken_copy(tmp_path, {
        "src/solve.jl": [("BacksolveAdjoint(; autojacvec = v, checkpointing = false)",
                          "BacksolveAdjoint(; autojacvec = v, checkpointing = false, noisemixing = true)"),
                         ("IController(; qmin, qmax,", "IController(; knobs..., qmin, qmax,")],
        "src/PyNeuralODEJL.jl": [("using OrdinaryDiffEqTsit5: Tsit5", "using OrdinaryDiffEqTsit5: Tsit5, Tsit5Cache")]})
    problems = _symbol_violations(copy)
    assert any("noisemixing" in p for p in problems), problems
    assert any("IController(; ...) splats" in p for p in problems), problems
    assert any("Tsit5Cache" in p for p in problems), problems


def test_solve_keywords_are_recorded():
    keys = {k for tuple_keys in _namedtuple_keys(_code((PKG / "src" / "solve.jl").read_text())) for k in tuple_keys}
    assert {"adaptive", "maxiters", "reltol", "abstol", "dt", "tstops", "controller", "gamma"} <= keys, keys
    assert _solve_keyword_violations(PKG / "src") == []


def test_solve_keyword_checker_catches_an_unrecorded_keyword(tmp_path):
    copy = broken_copy(tmp_path, {"src/solve.jl": [("(; adaptive = false, maxiters = Int(max_steps))",
                                                    "(; adaptive = false, maxiters = Int(max_steps), dtmin = 1.0)")]})
    copy = copy / "src"
    assert [p for p in _solve_keyword_violations(copy) if "'dtmin'" in p], _solve_keyword_violations(copy)


def test_upstream_shape_branches_are_recorded():
    assert _branch_violations(PKG) == []
    assert set(BRANCHES) <= set(_recorded())


def test_every_sensealg_accepts_the_state_of_every_model_family():
    src = PKG / "src"
    assert _sensealgs(src) == set(SENSEALG_STATES)
    assert _state_kind(src) == "vector"
    assert _state_violations(src) == []


def test_state_checker_catches_an_array_state_reaching_reversediffadjoint(tmp_path):
    """The defect found by review: a matrix state handed to ReverseDiffAdjoint ("only supports vector u0")."""
    copy = broken_copy(tmp_path, {"src/solve.jl": [("FlatRHS(rhs, size(U0))), vec(U0),", "rhs), U0,")],
                                  "src/cnf.jl": [("u0 = vec(vcat(xx, pad))", "u0 = vcat(xx, pad)")],
                                  "src/latent.jl": [("u0 = vec(z0)", "u0 = z0")]})
    problems = _state_violations(copy / "src")
    assert sum("ReverseDiffAdjoint accepts ['vector'] states" in p for p in problems) == len(FAMILIES), problems
    assert any("cnf.jl: solve(...; u0 = vcat(xx, pad))" in p for p in problems), problems
    assert any("latent.jl: solve(...; u0 = z0)" in p for p in problems), problems
