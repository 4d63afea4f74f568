"""mkdocs hooks of the pyneuralode site (loaded by ``hooks:`` in mkdocs.yml; not part of the package).

- Pages link to the repository's own files the way GitHub renders them (``../benchmarks/results/overhead.png``,
  ``../examples/spiral.py``). Such links leave ``docs/``, where mkdocs does not look, so the benchmark plots and
  results and the example scripts are added to the site under ``repo/`` and those links rewritten to point there.
  A link to any other file outside ``docs/`` is left as it is, and mkdocs reports it (a failure under --strict).
- ``<!-- repo-include: PATH -->`` on a line of its own is replaced by the repository file PATH (e.g. the
  benchmark summary that ``make bench`` regenerates), its first heading dropped, its repository-relative links
  made relative to the page and a link to a Markdown file outside ``docs/`` shown as code.
- ``<!-- examples: the rest -->`` lists every script in ``examples/`` that the page does not include yet (its
  docstring's first line as the heading, the script itself below), so a new example is on the site the day it lands.
- Every public name of ``pyneuralode`` and ``pyneuralode.datasets`` appears in the API reference: a name that no
  page lists in a ``::: pyneuralode.NAME`` block is added to ``api/more.md`` (so a new export is documented from
  its docstring the day it lands, and a missing docstring fails the strict build there).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))
from griffe_roles import _resolve  # noqa: E402  (the site's griffe extension, beside this file)

log = logging.getLogger("mkdocs.hooks.pyneuralode")

REPO = Path(__file__).resolve().parents[2]
REPO_FILES = ("benchmarks/results/*.png", "benchmarks/results/*.json", "examples/*.py")
REPO_PREFIX = "repo"
LINK = re.compile(r"(\]\()([^)\s#]+)([)#\s])")
REST_OF_EXAMPLES = "<!-- examples: the rest -->"
SNIPPET = re.compile(r'^--8<-- "(examples/[^"]+)"', re.M)
INCLUDE = re.compile(r"^<!-- repo-include: *(\S+) *-->$", re.M)
DIRECTIVE = re.compile(r"^::: *([\w.]+)", re.M)
PUBLIC_MODULES = ("pyneuralode", "pyneuralode.datasets", "pyneuralode.train")

MORE_PAGE = "api/more.md"


def on_files(files, config):
    for pattern in REPO_FILES:
        for path in sorted(REPO.glob(pattern)):
            rel = path.relative_to(REPO).as_posix()
            files.append(File.generated(config, f"{REPO_PREFIX}/{rel}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve()
    if page.file.src_uri == MORE_PAGE:
        markdown += _undocumented_names(docs)
    page_dir = (docs / page.file.src_uri).parent
    markdown = INCLUDE.sub(lambda m: _included(m.group(1), page_dir), markdown)
    if REST_OF_EXAMPLES in markdown:
        markdown = markdown.replace(REST_OF_EXAMPLES, _other_examples(set(SNIPPET.findall(markdown))))

    def rewrite(match):
        target = match.group(2)
        if "://" in target or target.startswith(("mailto:", "/")):
            return match.group(0)
        resolved = (page_dir / target).resolve()
        if docs in resolved.parents or REPO not in resolved.parents or not resolved.is_file():
            return match.group(0)
        rel = resolved.relative_to(REPO).as_posix()
        if not any(Path(rel).match(pattern) for pattern in REPO_FILES):
            return match.group(0)
        new = os.path.relpath(docs / REPO_PREFIX / rel, page_dir).replace(os.sep, "/")
        return f"{match.group(1)}{new}{match.group(3)}"

    return LINK.sub(rewrite, markdown)


def _included(rel: str, page_dir: Path) -> str:
    text = (REPO / rel).read_text(encoding="utf-8")
    text = re.sub(r"\A#+ [^\n]*\n+", "", text)                      # the page has its own heading
    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+\.md)\)", r"`\2`", text)   # Markdown files outside docs/: as code
    up = os.path.relpath(REPO, page_dir).replace(os.sep, "/")

    def relink(match):
        target = match.group(2)
        if "://" in target or target.startswith(("/", "#")):
            return match.group(0)
        return f"{match.group(1)}{up}/{target}{match.group(3)}"

    return LINK.sub(relink, text)


def _plain(line: str) -> str:
    """A docstring line as Markdown: indented lines stay code; elsewhere ``[`` outside code spans is escaped, so
    a usage such as ``[--iters 200]`` is not read as a cross-reference."""
    if line.startswith("    "):
        return line
    parts = line.split("`")
    return "`".join(part.replace("[", "\\[") if i % 2 == 0 else part for i, part in enumerate(parts))


def _other_examples(shown: set[str]) -> str:
    """A section per ``examples/*.py`` not in ``shown``: the docstring's first line, then the script."""
    import ast

    sections = []
    for path in sorted(REPO.glob("examples/*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in shown:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or path.stem
        title, _, rest = doc.partition("\n")
        body = "\n".join(_plain(line) for line in rest.strip("\n").splitlines())
        sections.append(f"## {title.rstrip('.')}\n\n{body}\n\n```python\n--8<-- \"{rel}\"\n```\n")
    return "\n".join(sections)


def _undocumented_names(docs: Path) -> str:
    """``::: NAME`` blocks for the public names no other page of ``docs`` lists."""
    listed = {name for page in docs.rglob("*.md") if page.relative_to(docs).as_posix() != MORE_PAGE
              for name in DIRECTIVE.findall(page.read_text(encoding="utf-8"))}
    listed_objects = [_resolve(name) for name in listed]
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in dir(module):
            obj = getattr(module, name)
            if name.startswith("_") or type(obj).__name__ == "module" or f"{module_name}.{name}" in listed:
                continue
            if callable(obj) and any(obj is other for other in listed_objects):
                continue                                  # a re-export of a name documented elsewhere
            missing.append(f"{module_name}.{name}")
    if not missing:
        return "\n(None at present: every public name is on the page of its topic.)\n"
    log.info("API reference: %d public names listed on %s only: %s", len(missing), MORE_PAGE, ", ".join(missing))
    return "".join(f"\n::: {name}\n" for name in missing)
