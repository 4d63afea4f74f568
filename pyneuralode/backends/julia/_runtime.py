"""Starting Julia: the only module of pyneuralode that imports ``juliacall``.

Julia starts once per process, on the first use of ``backend="julia"`` (or an explicit :func:`start`):

1. :func:`pyneuralode.backends.julia._detect.find_julia` must find a Julia, else
   :class:`pyneuralode.BackendUnavailable` — no ``import juliacall``, so nothing is downloaded;
2. :func:`check_import_order`: torch must not be loaded yet (juliacall's documented crash);
3. environment defaults in the manner of PySR's ``julia_import.py`` are set (never overriding the user's);
4. ``import juliacall`` (juliapkg resolves pyneuralode/juliapkg.json: installs and precompiles
   PyNeuralODEJL and its SciML dependencies the first time), then ``using PyNeuralODEJL`` in a fresh module
   (``juliacall.newmodule``, not ``Main``).

Any failure is cached and re-raised as the same ``BackendUnavailable``: juliacall cannot be initialised
twice in one process.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

from ..._errors import BackendUnavailable
from ._detect import find_julia

_LOCK = threading.Lock()
_STATE: dict = {"module": None, "jl": None, "error": None}

IMPORT_ORDER_HELP = (
    "torch was imported before Julia started. juliacall documents that loading PyTorch first can crash the "
    "process (segfault: pytorch#78829; heap corruption and libstdc++ clashes: PythonCall.jl FAQ, issues "
    "#215 and #255), so pyneuralode refuses to start Julia now. Start Julia first: call "
    "`pyneuralode.backends.julia.start()` (or use backend='julia' once) before anything imports torch. "
    "To try anyway, set PYNEURALODE_JULIA_ALLOW_TORCH_FIRST=yes"
)


def check_import_order() -> None:
    """Raise (or, if allowed, warn) when torch is already loaded and Julia is about to start."""
    if "torch" not in sys.modules:
        return
    if os.environ.get("PYNEURALODE_JULIA_ALLOW_TORCH_FIRST", "").strip().lower() in ("yes", "true", "1"):
        warnings.warn(IMPORT_ORDER_HELP.split(" To try anyway")[0] + " (continuing: "
                      "PYNEURALODE_JULIA_ALLOW_TORCH_FIRST is set).", RuntimeWarning, stacklevel=3)
        return
    raise BackendUnavailable(f"Backend 'julia' cannot start: {IMPORT_ORDER_HELP}.")


def _set_env_defaults() -> None:
    """PySR-style defaults, set only where the user has not chosen.

    - one Julia thread (juliacall's own default since 0.9.32; stated so runs are reproducible);
    - with more than one thread, ``PYTHON_JULIACALL_HANDLE_SIGNALS=yes``: Julia's GC uses signals across
      threads, and juliacall warns that without it multi-threaded runs may segfault (Ctrl-C then stops
      raising KeyboardInterrupt). With one thread the default (``no``) keeps Python's Ctrl-C.
    - no ``-O``/``--check-bounds`` overrides: precompiled package images are keyed on those flags, and a
      mismatch with juliapkg's precompile run would recompile everything on each start.
    """
    threads = os.environ.setdefault("PYTHON_JULIACALL_THREADS", os.environ.get("JULIA_NUM_THREADS", "1"))
    if threads.strip() != "1":
        os.environ.setdefault("PYTHON_JULIACALL_HANDLE_SIGNALS", "yes")


def started() -> bool:
    """Whether Julia and PyNeuralODEJL are running in this process."""
    return _STATE["module"] is not None


def start():
    """Start Julia and load PyNeuralODEJL (once per process); return the Julia module ``PyNeuralODEJL``.

    Raises :class:`pyneuralode.BackendUnavailable` with instructions when Julia is missing, when torch was
    imported first, or when juliacall/juliapkg/the Julia packages fail to load.
    """
    with _LOCK:
        if _STATE["module"] is not None:
            return _STATE["module"]
        if _STATE["error"] is not None:
            raise BackendUnavailable(_STATE["error"])
        probe = find_julia()
        if not probe.found:
            raise BackendUnavailable(probe.unavailable_message())
        check_import_order()
        _set_env_defaults()
        try:
            import juliacall  # noqa: PLC0415 — the one place juliacall is imported, on purpose lazily
        except ImportError as err:
            raise BackendUnavailable(
                f"Backend 'julia' needs juliacall, which is not installed: pip install \"pyneuralode[julia]\" "
                f"({err}).") from err
        except Exception as err:  # juliapkg resolve / Julia start-up failures are plain Exceptions
            where = probe.how + (f", {probe.exe}" if probe.exe else "")
            detail = str(err).rstrip(".")
            _STATE["error"] = (f"Backend 'julia' could not start Julia ({where}): {type(err).__name__}: "
                               f"{detail}. If Julia is missing or offline installs are impossible: "
                               f"{_detect_help()}.")
            raise BackendUnavailable(_STATE["error"]) from err
        try:
            jl = juliacall.newmodule("PyNeuralODE")
            jl.seval("using PyNeuralODEJL")
            module = jl.seval("PyNeuralODEJL")
        except Exception as err:  # juliacall.JuliaError: package missing, failed precompile, ...
            detail = str(err).rstrip(".")
            _STATE["error"] = (
                "Backend 'julia' started Julia but could not load the Julia package PyNeuralODEJL: "
                f"{type(err).__name__}: {detail}. It is installed from pyneuralode/juliapkg.json by juliapkg on "
                "first start (this needs network access to the Julia package registry; with "
                "PYTHON_JULIAPKG_OFFLINE=yes nothing is installed). Retry online, or run "
                "`python -c \"import juliapkg; juliapkg.resolve(force=True)\"` to see the installer's output.")
            raise BackendUnavailable(_STATE["error"]) from err
        _STATE.update(module=module, jl=jl)
        return module


def _detect_help() -> str:
    from ._detect import INSTALL_HELP

    return INSTALL_HELP


def julia_main():
    """juliacall's ``Main`` module (Julia must be started)."""
    start()
    import juliacall  # noqa: PLC0415

    return juliacall.Main


def juliacall_version() -> str | None:
    """The installed juliacall version, read from package metadata (imports nothing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("juliacall")
    except PackageNotFoundError:
        return None
