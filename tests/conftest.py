"""Shared fixtures: one ``backend`` fixture parametrizes every contract test over every backend.

A backend whose dependencies are missing is skipped with the reason (its install command), never silently.
Adding a backend to ``pyneuralode.backends.BACKEND_NAMES`` makes it join every test that takes ``backend``.
"""

from __future__ import annotations

import pytest

import pyneuralode as pn
from pyneuralode.backends import BACKEND_NAMES


def _unavailable_reason(name: str) -> str | None:
    try:
        pn.backends.get_backend(name)
    except pn.BackendUnavailable as err:
        return str(err)
    return None


@pytest.fixture(params=BACKEND_NAMES, scope="session")
def backend(request) -> str:
    """The name of each backend in turn; skips (with the install command) where it cannot run here."""
    reason = _unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "julia":
            item.add_marker(pytest.mark.julia)
