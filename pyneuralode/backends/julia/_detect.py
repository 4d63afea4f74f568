"""Is a usable Julia here? Answered cheaply, before ``juliacall`` is ever imported.

``import juliacall`` runs juliapkg's resolve, which — unless ``PYTHON_JULIAPKG_OFFLINE=yes`` — downloads a
Julia when it finds none (``juliapkg/find_julia.py``: ``install=True, upgrade=True``). pyneuralode never
lets that happen behind a user's back: this module looks for Julia the way juliapkg would, without
importing juliacall or juliapkg and without touching the network, and the backend raises
:class:`pyneuralode.BackendUnavailable` with instructions when there is none. Downloading is opt-in
(``PYNEURALODE_JULIA_INSTALL=yes``).

Places looked at, in juliapkg's order of preference:

1. a juliacall that is already initialised in this process;
2. ``PYTHON_JULIACALL_EXE`` (with ``PYTHON_JULIACALL_PROJECT``: juliacall then bypasses juliapkg);
3. ``PYTHON_JULIAPKG_EXE``;
4. the executable recorded by an earlier juliapkg resolve (``<project>/pyjuliapkg/meta.json``) and a Julia
   juliapkg installed itself (``<project>/pyjuliapkg/install/bin/julia``);
5. ``julia`` on ``PATH`` (its version must satisfy pyneuralode/juliapkg.json: 1.10.x or 1.11.x);
6. ``juliaup`` on ``PATH`` (juliapkg asks it for a matching version).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

SUPPORTED = ((1, 10), (1, 11))
"""Julia minor versions pyneuralode/juliapkg.json accepts (``"~1.10, ~1.11"``)."""

JULIA_UUID_CUDA = "052768ef-5323-5732-b1bb-66c8b64840ba"

INSTALL_HELP = (
    'pip install "pyneuralode[julia]" (juliacall + juliapkg), then get Julia 1.10 or 1.11 in one of these '
    "ways: install juliaup (https://julialang.org/downloads) and run `juliaup add 1.10`; or point "
    "PYTHON_JULIAPKG_EXE at an existing julia executable; or set PYNEURALODE_JULIA_INSTALL=yes to let "
    "juliapkg download Julia on first use (never with PYTHON_JULIAPKG_OFFLINE=yes). The first start then "
    "installs and precompiles the SciML packages once (several minutes)"
)


@dataclasses.dataclass(frozen=True)
class JuliaProbe:
    """The outcome of :func:`find_julia`: where Julia is (``found``) or why it cannot be used."""

    found: bool
    how: str
    exe: str | None = None
    version: str | None = None
    problem: str | None = None

    def unavailable_message(self) -> str:
        return (f"Backend 'julia' cannot start: {self.problem} To use it: {INSTALL_HELP}.")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("yes", "true", "1")


def offline() -> bool:
    """``PYTHON_JULIAPKG_OFFLINE=yes``: juliapkg must neither download Julia nor install packages."""
    return _flag("PYTHON_JULIAPKG_OFFLINE")


def juliapkg_project() -> str:
    """The Julia project juliapkg uses (the logic of ``juliapkg/state.py``, without importing juliapkg)."""
    project = os.environ.get("PYTHON_JULIAPKG_PROJECT")
    if project:
        return project
    if sys.prefix != sys.base_prefix:
        prefix = sys.prefix
    else:
        prefix = os.environ.get("CONDA_PREFIX")
    if prefix is not None:
        return os.path.abspath(os.path.join(prefix, "julia_env"))
    depot = os.environ.get("JULIA_DEPOT_PATH", "").split(os.pathsep)[0] or os.path.join(
        os.path.expanduser("~"), ".julia")
    return os.path.join(os.path.abspath(depot), "environments", "pyjuliapkg")


_VERSION_RE = re.compile(r"julia version (\d+)\.(\d+)\.(\d+)", re.IGNORECASE)


def julia_version(exe: str, timeout: float = 30.0) -> tuple[int, int, int] | None:
    """``julia --version`` parsed, or ``None`` if ``exe`` is not a working Julia."""
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=timeout,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def _fmt(version) -> str:
    return ".".join(map(str, version))


def _supported(version) -> bool:
    return tuple(version[:2]) in SUPPORTED


def _initialised_juliacall() -> bool:
    module = sys.modules.get("juliacall")
    config = getattr(module, "CONFIG", None) if module is not None else None
    return bool(isinstance(config, dict) and config.get("inited"))


def find_julia() -> JuliaProbe:
    """Look for a usable Julia without importing juliacall/juliapkg and without any download."""
    if _initialised_juliacall():
        return JuliaProbe(True, "juliacall is already running in this process")

    for var in ("PYTHON_JULIACALL_EXE", "PYTHON_JULIAPKG_EXE"):
        value = os.environ.get(var)
        if value:
            exe = shutil.which(value)
            if exe is None:
                return JuliaProbe(False, var, problem=f"{var}={value!r} is not an executable.")
            version = julia_version(exe)
            if version is None:
                return JuliaProbe(False, var, exe=exe, problem=f"{var}={value!r} is not a Julia executable "
                                  "(`julia --version` failed).")
            # juliapkg uses an explicitly configured executable whatever its version (it only warns).
            return JuliaProbe(True, var, exe, _fmt(version))

    prefix = os.path.join(juliapkg_project(), "pyjuliapkg")
    candidates = []
    try:
        with open(os.path.join(prefix, "meta.json")) as fp:
            recorded = json.load(fp).get("executable")
        if recorded:
            candidates.append(("an earlier juliapkg resolve", recorded))
    except (OSError, ValueError, AttributeError):
        pass
    candidates.append(("juliapkg's own install", os.path.join(prefix, "install", "bin",
                                                              "julia.exe" if os.name == "nt" else "julia")))
    for how, path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            version = julia_version(path)
            if version is not None and _supported(version):
                return JuliaProbe(True, how, path, _fmt(version))

    on_path = shutil.which("julia")
    if on_path:
        version = julia_version(on_path)
        if version is not None and _supported(version):
            return JuliaProbe(True, "julia on PATH", on_path, _fmt(version))
        if not shutil.which("juliaup") and not _install_allowed():
            found = "an unknown version" if version is None else f"Julia {_fmt(version)}"
            return JuliaProbe(False, "julia on PATH", on_path, None if version is None else _fmt(version),
                              problem=f"found {found} at {on_path}, but pyneuralode needs 1.10.x or 1.11.x "
                                      "(and will not let juliapkg download another one unasked).")
    juliaup = shutil.which("juliaup")
    if juliaup:
        return JuliaProbe(True, "juliaup on PATH", juliaup)
    if _install_allowed():
        return JuliaProbe(True, "PYNEURALODE_JULIA_INSTALL=yes (juliapkg will download Julia)")
    reason = ("no Julia was found (looked at PYTHON_JULIACALL_EXE, PYTHON_JULIAPKG_EXE, juliapkg's project "
              f"{juliapkg_project()}, and `julia`/`juliaup` on PATH)")
    if offline():
        reason += " and PYTHON_JULIAPKG_OFFLINE=yes forbids downloading one"
    return JuliaProbe(False, "nothing found", problem=reason + ".")


def _install_allowed() -> bool:
    return _flag("PYNEURALODE_JULIA_INSTALL") and not offline()
