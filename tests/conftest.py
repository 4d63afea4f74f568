"""Shared fixtures: one ``backend`` fixture parametrizes every contract test over every backend.

A backend whose dependencies are missing is skipped with the reason (its install command), never silently.
Adding a backend to ``pyneuralode.backends.BACKEND_NAMES`` makes it join every test that takes ``backend``.
"""

from __future__ import annotations

import gc
import sys

import pytest

import pyneuralode as pn
from pyneuralode.backends import BACKEND_NAMES

from helpers import unavailable_reason


@pytest.fixture(params=BACKEND_NAMES, scope="session")
def backend(request) -> str:
    """The name of each backend in turn; skips (with the install command) where it cannot run here."""
    reason = unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "julia":
            item.add_marker(pytest.mark.julia)


@pytest.fixture(scope="module")
def jl():
    """The started Julia module (PyNeuralODEJL), once per test module; skip with the reason where it is missing."""
    from pyneuralode.backends.julia import julia_available, start

    ok, why = julia_available()
    if not ok:
        pytest.skip(why)
    try:
        return start()
    except pn.BackendUnavailable as err:
        if "torch was imported before Julia" in str(err):
            pytest.skip(str(err))
        raise


MAPPINGS_BEFORE_RELEASE = 30_000
"""Memory mappings of a test process past which the compiled XLA programs are released after a test module.
Every compiled program keeps a few mappings (~3 for a small one, measured); Linux refuses a process more than
``vm.max_map_count`` (65 530 by default), and XLA then crashes with a segmentation fault in its next compile. One
pytest worker of this suite reached 51 000 mappings 7 minutes into the run, then crashed (twice, reproducibly)."""


def _mappings() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux: no such limit to watch
        return None


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop JAX's compiled programs if the process holds many mappings (a later use
    compiles again); modules below the threshold keep sharing them, which saves compile time."""
    yield
    jax = sys.modules.get("jax")
    count = _mappings() if jax is not None else None
    if count is not None and count > MAPPINGS_BEFORE_RELEASE:
        jax.clear_caches()
        gc.collect()
