"""The README's links resolve (the documentation site's own links are checked by ``mkdocs build --strict``,
which ``make test`` runs before the suite)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


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
