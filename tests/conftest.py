"""Shared fixtures: one ``backend`` fixture parametrizes every contract test over every backend.

A backend whose dependencies are missing is skipped with the reason (its install command), never silently.
Adding a backend to ``pyneuralode.backends.BACKEND_NAMES`` makes it join every test that takes ``backend``.
"""

from __future__ import annotations

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
