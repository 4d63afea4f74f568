"""Every script in ``examples/`` runs to the end (a smoke test users can rely on when they copy one).

Each example reads ``PYNEURALODE_EXAMPLE_SMOKE=1`` and shrinks its iteration counts and sizes so it finishes in
seconds beyond compilation; the numbers it prints are still computed, not faked. An example joins this test by
being a ``.py`` file in ``examples/`` — nothing to register.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


def test_examples_folder_is_not_empty():
    assert EXAMPLES, "examples/ holds no scripts: the README promises runnable examples there."


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path):
    env = {**os.environ, "PYNEURALODE_EXAMPLE_SMOKE": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": str(script.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
