"""The package as users meet it: a numpy-only import, a re-export-only public API, the info command."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pyneuralode as pn


def test_import_loads_numpy_only():
    code = ("import sys, pyneuralode, pyneuralode.datasets, pyneuralode.train, pyneuralode.problems; "
            "print(sorted(m for m in ('jax', 'torch', 'juliacall', 'diffrax', 'torchdiffeq', 'matplotlib', "
            "'tqdm', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_have_docstrings():
    missing = [name for name in dir(pn) if not name.startswith("_")
               and (inspect.isclass(getattr(pn, name)) or inspect.isfunction(getattr(pn, name)))
               and not inspect.getdoc(getattr(pn, name))]
    assert missing == []


def test_init_only_reexports():
    import ast
    tree = ast.parse(inspect.getsource(pn))
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Expr", "ImportFrom", "Import", "Try"}


def test_info_command_lists_every_backend():
    out = subprocess.run([sys.executable, "-m", "pyneuralode.cli", "info"], capture_output=True, text=True,
                         check=True).stdout
    for name in ("jax", "torch", "julia"):
        assert f"  {name}" in out
    assert "installed" in out and "diffrax" in out
