"""The Julia/SciML backend: specs compile to a Lux model solved by OrdinaryDiffEq and differentiated by
SciMLSensitivity, through juliacall (Julia package PyNeuralODEJL, shipped in ``pyneuralode/julia``).

Importing this package imports neither juliacall nor juliapkg: Julia is looked for cheaply when the backend
is created (:func:`julia_available`) and started on first compile (:func:`start`). Without a usable Julia
the backend raises :class:`pyneuralode.BackendUnavailable` saying how to get one — it never lets juliapkg
download Julia unasked. See docs/julia.md.
"""

from __future__ import annotations

from ..._errors import BackendUnavailable
from .._base import AbstractBackend
from ._detect import JULIA_UUID_CUDA, find_julia, offline
from ._runtime import check_import_order, juliacall_version, start, started

__all__ = ["JuliaBackend", "JuliaProgram", "add_cuda", "julia_available", "start", "started",
           "check_import_order"]


def julia_available() -> tuple[bool, str]:
    """``(True, where)`` if a usable Julia is here, else ``(False, why-and-how-to-get-one)``; imports nothing."""
    probe = find_julia()
    if probe.found:
        return True, probe.how + (f" ({probe.exe}, Julia {probe.version})" if probe.exe else "")
    return False, probe.unavailable_message()


def add_cuda() -> None:
    """Add CUDA.jl to the juliapkg environment (once; restart Python afterwards) for ``device="cuda"``.

    Goes through juliapkg (``juliapkg.add`` + ``resolve``) so the dependency is recorded in the environment's
    juliapkg.json and survives later re-resolves — not through a runtime ``Pkg.add``.
    """
    if offline():
        raise BackendUnavailable("add_cuda() installs CUDA.jl and needs network access, but "
                                 "PYTHON_JULIAPKG_OFFLINE=yes is set.")
    try:
        import juliapkg  # noqa: PLC0415
    except ImportError as err:
        raise BackendUnavailable('add_cuda() needs juliapkg: pip install "pyneuralode[julia]".') from err
    juliapkg.add("CUDA", JULIA_UUID_CUDA)
    juliapkg.resolve()


class JuliaBackend(AbstractBackend):
    """``backend="julia"``. Creating it only checks that Julia exists; :meth:`compile` starts Julia."""

    name = "julia"

    def __init__(self):
        probe = find_julia()
        if not probe.found:
            raise BackendUnavailable(probe.unavailable_message())
        self._probe = probe

    def compile(self, model):
        from ._runtime import _STATE  # noqa: PLC0415
        from ._program import JuliaProgram  # noqa: PLC0415

        module = start()
        return JuliaProgram(model, module, _STATE["jl"])

    def compile_network(self, network):
        """Compile a :class:`pyneuralode.Network` to PyNeuralODEJL's ``JuliaNetwork`` (Lux layers, ODE blocks)."""
        from ._network import JuliaNetworkProgram  # noqa: PLC0415

        return JuliaNetworkProgram(network)  # starts Julia after the checks that need none

    def describe(self) -> dict:
        """Versions and devices for ``pyneuralode info``; starts nothing (Julia details once it runs)."""
        probe = self._probe
        info = {
            "version": juliacall_version(),
            "julia": probe.version,
            "julia_executable": probe.exe,
            "found_via": probe.how,
            "started": started(),
            "devices": ["cpu"],
            "note": ("Julia starts on first use; the very first start installs and precompiles the SciML "
                     "packages (several minutes)."),
        }
        if started():
            module = start()
            try:
                from ._runtime import julia_main  # noqa: PLC0415

                main = julia_main()
                info["julia"] = str(main.seval("string(VERSION)"))
                info["PyNeuralODEJL"] = str(main.pkgversion(module))
                if bool(module.device_functional("cuda")):
                    info["devices"].append("cuda")
            except Exception as err:  # describing must never fail `pyneuralode info`
                info["error"] = f"{type(err).__name__}: {err}"
        return info


def __getattr__(name):
    if name == "JuliaProgram":
        from ._program import JuliaProgram  # noqa: PLC0415

        return JuliaProgram
    raise AttributeError(name)
