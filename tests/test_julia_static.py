"""Static checks of the Julia package PyNeuralODEJL — they need no Julia, so they run everywhere (make test).

Julia cannot be installed on the development machines or in CI, so these checks are what guards the
Julia code there (docs/julia.md says which parts were never executed):

- every ``.jl`` file parses with tree-sitter-julia (no ERROR or MISSING node);
- ``fatou`` lints it clean with ``undefined-name`` and ``unused-import`` enabled, and provably catches an
  injected typo (so a silently non-checking linter cannot pass);
- Project.toml is well formed: UUIDs, every dependency has a [compat] entry, every ``using``/``import`` target
  is a declared dependency (stdlibs included: packages must declare them), no dependency is unused, the
  extension's triggers are weak dependencies and its file exists;
- pyneuralode/juliapkg.json points at this package (name, uuid, path, dev) and asks for Julia ~1.10/~1.11;
- pyproject's package data ships every Julia file in the wheel;
- the Python solver/adjoint tables and the Julia ``make_alg``/``make_sensealg`` cover each other, and each
  imported solver comes from the OrdinaryDiffEq sub-library that exports it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = __import__("pytest").importorskip("tomli", reason="Python 3.10 needs tomli to read TOML")

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pyneuralode" / "julia"
JL_FILES = sorted(PKG.rglob("*.jl"))
PROJECT = tomllib.loads((PKG / "Project.toml").read_text())
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
FATOU_CONFIG = '[lint]\nextend-select = ["undefined-name", "unused-import"]\n'

# Julia's standard libraries that a package may load (they still have to be listed in [deps]).
STDLIBS = {"Base64", "Dates", "Distributed", "InteractiveUtils", "LibGit2", "Libdl", "LinearAlgebra",
           "Logging", "Markdown", "Mmap", "Pkg", "Printf", "Random", "REPL", "Serialization", "SHA",
           "SparseArrays", "Statistics", "Test", "TOML", "UUIDs", "Unicode"}

# Which OrdinaryDiffEq sub-library exports which solver (their `export` lists; OrdinaryDiffEq NEWS.md v7).
SOLVER_HOME = {
    "Tsit5": "OrdinaryDiffEqTsit5", "Euler": "OrdinaryDiffEqLowOrderRK", "Heun": "OrdinaryDiffEqLowOrderRK",
    "Midpoint": "OrdinaryDiffEqLowOrderRK", "RK4": "OrdinaryDiffEqLowOrderRK", "BS3": "OrdinaryDiffEqLowOrderRK",
    "DP5": "OrdinaryDiffEqLowOrderRK", "DP8": "OrdinaryDiffEqHighOrderRK", "Vern7": "OrdinaryDiffEqVerner",
    **{n: "OrdinaryDiffEqSDIRK" for n in ("ImplicitEuler", "Kvaerno3", "Kvaerno4", "Kvaerno5", "KenCarp3",
                                          "KenCarp4", "KenCarp5")},
    "Rodas5P": "OrdinaryDiffEqRosenbrock",
    "QNDF": "OrdinaryDiffEqBDF", "FBDF": "OrdinaryDiffEqBDF",
}


def test_the_package_is_where_the_wheel_expects_it():
    assert (PKG / "Project.toml").is_file() and (PKG / "src" / "PyNeuralODEJL.jl").is_file()
    assert len(JL_FILES) >= 5, JL_FILES
    top = ROOT / "julia"  # the repository's documented location: a symlink into the Python package
    if top.exists():
        assert (top / "Project.toml").resolve() == (PKG / "Project.toml").resolve()


# ------------------------------------------------------------------------------------------------ tree-sitter
def _parser():
    tsj = pytest.importorskip("tree_sitter_julia", reason="pip install tree-sitter-julia (dev extra)")
    ts = pytest.importorskip("tree_sitter", reason="pip install tree-sitter (dev extra)")
    return ts.Parser(ts.Language(tsj.language()))


def _problems(node, out):
    if node.type == "ERROR" or node.is_missing:
        row, col = node.start_point
        out.append(f"{row + 1}:{col + 1} {'MISSING ' + node.type if node.is_missing else 'ERROR'}")
    for child in node.children:
        _problems(child, out)
    return out


@pytest.mark.parametrize("path", JL_FILES, ids=lambda p: str(p.relative_to(PKG)))
def test_julia_file_parses(path):
    tree = _parser().parse(path.read_bytes())
    problems = _problems(tree.root_node, [])
    assert not tree.root_node.has_error and not problems, f"{path}: {problems}"


def test_parser_rejects_broken_julia():
    parser = _parser()
    assert parser.parse(b"function f(x)\n  x + 1\n").root_node.has_error  # missing `end`
    assert parser.parse(b"y = [1, 2, 3\n").root_node.has_error


# ------------------------------------------------------------------------------------------------ fatou
def _fatou() -> str:
    exe = shutil.which("fatou") or str(Path(sys.executable).with_name("fatou"))
    if not os.path.exists(exe):
        pytest.skip("fatou is not installed (pip install fatou; part of the dev extra)")
    return exe


def _lint(target: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "fatou.toml"
    config.write_text(FATOU_CONFIG)
    return subprocess.run([_fatou(), "--config", str(config), "lint", "--julia-version", "1.10", "--output",
                           "concise", str(target)], capture_output=True, text=True, timeout=120)


def test_fatou_lint_clean(tmp_path):
    result = _lint(PKG, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def broken_copy(tmp_path: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    """A copy of the Julia package with text replaced, file by file (each ``old`` must be there: a check shown to
    catch a mistake must really have been given one)."""
    copy = tmp_path / "pkg"
    shutil.copytree(PKG, copy)
    for name, replacements in edits.items():
        path = copy / name
        text = path.read_text()
        for old, new in replacements:
            assert old in text, f"{name} no longer contains {old!r}: update the injected mistake"
            text = text.replace(old, new)
        path.write_text(text)
    return copy


def test_fatou_catches_injected_mistakes(tmp_path):
    copy = broken_copy(tmp_path, {"src/solve.jl": [("return Tsit5()", "return Tsit5x()")],
                                  "src/PyNeuralODEJL.jl": [("using Zygote: Zygote", "using Zygote: Zygote, pullback")]})
    result = _lint(copy, tmp_path)
    report = result.stdout + result.stderr  # fatou prints its diagnostics on stderr
    assert result.returncode != 0
    assert "undefined-name" in report and "Tsit5x" in report, report
    assert "unused-import" in report and "pullback" in report, report


# ------------------------------------------------------------------------------------------------ Project.toml
def _root_name(node) -> str | None:
    text = node.text.decode()
    if text.startswith("."):
        return None  # relative import (..Parent): not a package
    if node.type == "identifier":
        return text
    named = [c for c in node.children if c.is_named]
    return _root_name(named[0]) if named else None


def _import_targets(path: Path) -> set[str]:
    tree = _parser().parse(path.read_bytes())
    targets: set[str] = set()

    def visit(node):
        if node.type in ("using_statement", "import_statement"):
            for child in node.children:
                if child.is_named:
                    name = _root_name(child)
                    if name:
                        targets.add(name)
            return
        for child in node.children:
            visit(child)

    visit(tree.root_node)
    return targets


def test_project_metadata_and_uuids():
    assert PROJECT["name"] == "PyNeuralODEJL"
    assert UUID_RE.match(PROJECT["uuid"])
    assert re.match(r"^\d+\.\d+\.\d+$", PROJECT["version"])
    for table in ("deps", "weakdeps"):
        for name, uuid in PROJECT.get(table, {}).items():
            assert UUID_RE.match(uuid), f"[{table}] {name} = {uuid!r} is not a UUID"
    uuids = list(PROJECT["deps"].values()) + list(PROJECT.get("weakdeps", {}).values())
    assert len(set(uuids)) == len(uuids), "duplicate UUIDs"


def test_every_dependency_has_compat():
    compat = PROJECT["compat"]
    assert "julia" in compat and compat["julia"].startswith("1.10")
    for name in list(PROJECT["deps"]) + list(PROJECT.get("weakdeps", {})):
        assert name in compat, f"{name} has no [compat] entry"
    assert not set(compat) - set(PROJECT["deps"]) - set(PROJECT.get("weakdeps", {})) - {"julia"}


def test_compat_covers_ordinarydiffeq_v6_and_v7():
    compat = PROJECT["compat"]
    for name in PROJECT["deps"]:
        if name.startswith("OrdinaryDiffEq") and name != "OrdinaryDiffEqCore":
            majors = {part.strip().split(".")[0] for part in compat[name].split(",")}
            assert {"1", "2"} <= majors, f"{name} = {compat[name]!r} must allow sub-library majors 1 (v6) and 2 (v7)"
    assert {"2", "3"} <= {p.strip().split(".")[0] for p in compat["SciMLBase"].split(",")}
    assert "OrdinaryDiffEq" not in PROJECT["deps"], "import solvers from the sub-libraries, not the umbrella"


def test_imports_are_declared_and_deps_are_used():
    deps, weak = set(PROJECT["deps"]), set(PROJECT.get("weakdeps", {}))
    own = {PROJECT["name"], "Base", "Core"}
    used: set[str] = set()
    for path in JL_FILES:
        targets = _import_targets(path)
        in_ext = "ext" in path.relative_to(PKG).parts
        allowed = deps | own | (weak if in_ext else set())
        undeclared = targets - allowed
        assert not undeclared, f"{path.name} loads {sorted(undeclared)}, not in [deps]" + (
            "/[weakdeps]" if in_ext else "") + " (stdlibs such as Logging/Random must be declared too)"
        stdlib_undeclared = (targets & STDLIBS) - deps
        assert not stdlib_undeclared, stdlib_undeclared
        used |= targets
    assert not deps - used, f"declared but never loaded: {sorted(deps - used)}"


def test_extensions_match_weakdeps():
    weak = set(PROJECT.get("weakdeps", {}))
    for ext, triggers in PROJECT.get("extensions", {}).items():
        triggers = [triggers] if isinstance(triggers, str) else list(triggers)
        assert set(triggers) <= weak, (ext, triggers)
        path = PKG / "ext" / f"{ext}.jl"
        assert path.is_file(), path
        assert re.search(rf"^module {ext}\b", path.read_text(), re.M)


def test_solvers_come_from_their_sublibraries():
    main = (PKG / "src" / "PyNeuralODEJL.jl").read_text()
    for solver, home in SOLVER_HOME.items():
        match = re.search(rf"^using {home}: (.+)$", main, re.M)
        assert match and solver in [s.strip() for s in match.group(1).split(",")], (solver, home)


# ------------------------------------------------------------------------------------------------ juliapkg.json
def test_juliapkg_json_matches_the_project():
    spec = json.loads((ROOT / "pyneuralode" / "juliapkg.json").read_text())
    assert spec["julia"] == "~1.10, ~1.11"
    (name, entry), = spec["packages"].items()
    assert name == PROJECT["name"] and entry["uuid"] == PROJECT["uuid"]
    assert entry["dev"] is True
    assert (ROOT / "pyneuralode" / entry["path"]).resolve() == PKG.resolve()
    compat = pytest.importorskip("juliapkg.compat", reason="juliapkg not installed")
    parsed = compat.Compat.parse(spec["julia"])
    assert compat.Version.parse("1.10.4") in parsed and compat.Version.parse("1.11.2") in parsed
    assert compat.Version.parse("1.12.0") not in parsed


def test_package_data_ships_every_julia_file():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["pyneuralode"]
    assert "juliapkg.json" in patterns
    for path in [PKG / "Project.toml", *JL_FILES]:
        rel = path.relative_to(ROOT / "pyneuralode").as_posix()
        assert any(fnmatch.fnmatchcase(rel, pat) and rel.count("/") == pat.count("/") for pat in patterns), rel


# ------------------------------------------------------------------------------------------------ Python <-> Julia
def test_python_tables_match_julia_dispatch():
    from pyneuralode.backends._registry import REGISTRY
    from pyneuralode.backends.julia._program import SOLVERS

    solve_jl = (PKG / "src" / "solve.jl").read_text()
    assert set(REGISTRY["julia"].solvers) <= set(SOLVERS)
    for key in SOLVERS.values():
        assert f'name == "{key}"' in solve_jl, key
    for kind in ("backsolve", "interpolating", "quadrature", "gauss", "reversediff"):
        assert f'kind == "{kind}"' in solve_jl, kind
    for vjp in ("zygote", "reversediff", "enzyme"):
        assert f'vjp == "{vjp}"' in solve_jl, vjp
    layers_jl = (PKG / "src" / "layers.jl").read_text()
    import pyneuralode as pn

    for act in pn.ACTIVATIONS:
        assert f'"{act}" =>' in layers_jl, act


def test_cnf_and_network_tables_match_julia():
    """The CNF trace needs each activation's derivative (ACTIVATION_DERIVATIVES, by the same names), and every
    item kind the Python network/field describers write has a branch in the Julia parsers."""
    import pyneuralode as pn
    from pyneuralode.backends.julia._network import NETWORK_LAYERS

    layers_jl = (PKG / "src" / "layers.jl").read_text()
    derivatives = layers_jl[layers_jl.index("const ACTIVATION_DERIVATIVES"):]
    derivatives = derivatives[:derivatives.index(")\n")]
    for act in pn.ACTIVATIONS:
        assert f'"{act}" =>' in derivatives, act
    network_jl = (PKG / "src" / "network.jl").read_text()
    for kind in NETWORK_LAYERS.values():
        assert f'kind == "{kind}"' in network_jl, kind
    for kind in ("linear", "squash", "act"):
        assert f'kind == "{kind}"' in layers_jl, kind


def test_julia_step_watch_uses_the_python_constants():
    """solve.jl's StepWatch applies pyneuralode._stepwatch's rule: the constants must not drift apart."""
    from pyneuralode import _stepwatch

    source = (PKG / "src" / "solve.jl").read_text()
    patience = re.search(r"^const WATCH_PATIENCE = (\d+)$", source, re.M)
    growth = re.search(r"^const WATCH_GROWTH = ([0-9.]+)$", source, re.M)
    assert patience and int(patience.group(1)) == _stepwatch.PATIENCE
    assert growth and float(growth.group(1)) == _stepwatch.GROWTH
    starvation = re.search(r"^const WATCH_STARVATION = ([0-9.]+)$", source, re.M)
    assert starvation and float(starvation.group(1)) == _stepwatch.STARVATION
    margin = re.search(r"^const WATCH_FIRST_STEP_MARGIN = ([0-9.]+)$", source, re.M)
    assert margin and float(margin.group(1)) == _stepwatch.FIRST_STEP_MARGIN
