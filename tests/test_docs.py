"""The README and the documentation as a user meets them: their links resolve, every Python block that is a whole
program runs as written, every ``pn.NAME`` a block uses exists, and every ``pyneuralode CMD --flag`` they show is
a flag of that command. (The site's own links are checked by ``mkdocs build --strict``, which ``make test`` runs
before the suite.)

A block is a whole program when it imports pyneuralode; the rest are fragments that continue the page's story
(``model``, ``params``, ``y0`` from the text around them). A whole program that cannot run here says so on the
line before its fence: ``<!-- test_docs: not run (reason) -->`` — needs Julia, a second process, ``torchrun``.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

import pyneuralode as pn

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!-- test_docs: not run \(([^)]+)\) -->\s*$")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(markdown: str) -> list[str]:
    """The link targets of ``markdown`` that point into the repository (no scheme, no bare anchor)."""
    return [t for t in LINK.findall(markdown) if "://" not in t and not t.startswith(("#", "mailto:"))]


def test_relative_links_finds_links_and_images():
    text = "see [a](docs/a.md#x), ![p](docs/p.png), [web](https://x.org) and [here](#top)"
    assert relative_links(text) == ["docs/a.md#x", "docs/p.png"]


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = relative_links(readme)
    assert links, "the README links into the documentation"
    missing = [t for t in links if not (ROOT / t.split("#", 1)[0]).exists()]
    assert missing == [], f"README links to files that do not exist: {missing}"


def code_blocks(markdown: str, language: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, why_not_run)`` of each fenced ``language`` block; ``why_not_run`` is the reason given by a
    ``<!-- test_docs: not run (...) -->`` line right before the fence, else ``None``."""
    blocks = []
    for match in FENCE.finditer(markdown):
        if match.group(1) != language:
            continue
        before = markdown[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        blocks.append((markdown[:match.start()].count("\n") + 1, match.group(2), marker and marker.group(1)))
    return blocks


def _python_blocks():
    for page in PAGES:
        for line, code, why in code_blocks(page.read_text(encoding="utf-8"), "python"):
            if "--8<--" not in code:  # an included example script: tests/test_examples.py runs those
                yield pytest.param(page, line, code, why, id=f"{page.relative_to(ROOT)}:{line}")


PYTHON_BLOCKS = list(_python_blocks())


def test_code_blocks_reads_fences_and_markers():
    text = ("x\n```python\na = 1\n```\n<!-- test_docs: not run (needs Julia) -->\n```python\nb = 2\n```\n"
            "```bash\nls\n```\n")
    assert code_blocks(text, "python") == [(2, "a = 1\n", None), (6, "b = 2\n", "needs Julia")]


def test_whole_programs_are_found():
    """The runner sees the README's ten lines and the pages' programs (a broken fence pattern would skip all)."""
    whole = [p for p in PYTHON_BLOCKS if "import pyneuralode" in p.values[2] and p.values[3] is None]
    assert len(whole) >= 4 and any(p.values[0].name == "README.md" for p in whole)


@pytest.mark.parametrize("page, line, code, why", PYTHON_BLOCKS)
def test_python_block(page, line, code, why, tmp_path, monkeypatch):
    """Every ``pn.NAME`` exists; a whole program runs as written (in a scratch directory)."""
    tree = ast.parse(re.sub(r"^>>> ", "", code, flags=re.M) if code.startswith(">>>") else code)
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pn"}
    assert [name for name in sorted(used) if not hasattr(pn, name)] == []
    if "import pyneuralode" not in code:
        return  # a fragment of the page's story: its names are checked above
    if why is not None:
        pytest.skip(f"{page.name}:{line} is marked not run here: {why}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), {"__name__": "__doc_snippet__"})


def _command_flags() -> dict[str, set[str]]:
    from pyneuralode.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


def test_every_command_line_shown_uses_real_flags():
    """``pyneuralode CMD ... --flag`` anywhere in the README, the docs or the examples: CMD has --flag (``bench``
    passes its options on to the benchmark suite)."""
    flags, wrong = _command_flags(), []
    for path in [*PAGES, *sorted((ROOT / "examples").glob("*.py"))]:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(r"pyneuralode (\w+)((?: [^`|#]*)?)", text):
                command = match.group(1)
                if command not in flags or command == "bench":
                    continue
                wrong += [f"{path.relative_to(ROOT)}:{number}: {command} {flag}"
                          for flag in re.findall(r"(--[a-z][a-z0-9-]*)", match.group(2))
                          if flag not in flags[command]]
    assert wrong == []
