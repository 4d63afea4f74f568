"""Griffe extension of the pyneuralode site (named in mkdocs.yml; not part of the package).

The package's docstrings are Markdown with a few reStructuredText roles (``:class:`pyneuralode.ODEModel```). Before
mkdocstrings renders them:

- a role naming a public object (``pyneuralode.X``, ``pyneuralode.datasets.X``, ``pyneuralode.backends.torch.X``,
  no private part) becomes a cross-reference, so a reference to a name that does not exist fails the strict
  build; any other role (a private helper) becomes plain code;
- a Markdown list written straight under its heading line (``**Fields:**`` then ``- ...``) gets the blank line
  Markdown needs to see it as a list;
- a public method that overrides a documented one (``Adam.to_optax``) inherits its docstring, and an exported name
  built at run time (the solver classes come from one factory) gets the docstring it has at run time;
- every public name the package exports, and every public method and property of an exported class, must then
  have a docstring: one without is reported as a warning (a failure under --strict).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re

import griffe

log = logging.getLogger("mkdocs.plugins.pyneuralode.docstrings")

ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):`(~?)([^`]+)`")
LINKABLE = ("pyneuralode.",)
EXPORTED_MODULES = ("pyneuralode", "pyneuralode.datasets", "pyneuralode.train")


def _reference(match: re.Match) -> str:
    short, target = match.group(1), match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else re.sub(r"^pyneuralode\.", "pn.", target)
    parts = target.split(".")
    if target.startswith(LINKABLE) and not any(p.startswith("_") for p in parts):
        # A name that the top level re-exports (pyneuralode.train.Trainer) is documented there (pyneuralode.Trainer).
        top = importlib.import_module("pyneuralode")
        exported = getattr(top, parts[-1], None)
        if len(parts) > 2 and exported is not None and exported is _resolve(target):
            target = f"pyneuralode.{parts[-1]}"
        return f"[`{shown}`][{target}]"
    return f"`{shown}`"


def _resolve(path: str):
    """The object at the dotted ``path`` (None when there is none)."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None


def _blank_line_before_lists(text: str) -> str:
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        prev = lines[i - 1].strip() if i else ""
        if stripped.startswith(("- ", "* ")) and prev and not prev.startswith(("- ", "* ")) \
                and not lines[i - 1].startswith((" ", "\t")):
            out.append("")
        out.append(line)
    return "\n".join(out)


def _inherited_docstring(cls, name: str):
    """The docstring of ``name`` on the nearest base class of ``cls`` that documents it (or None)."""
    try:
        bases = cls.mro()
    except Exception:  # noqa: BLE001 - an unresolvable base: nothing to inherit
        return None
    for base in bases:
        member = base.members.get(name)
        if member is not None and not member.is_alias and member.docstring is not None:
            return griffe.Docstring(member.docstring.value, parent=member)
    return None


class PyNeuralODEDocstrings(griffe.Extension):
    """Rewrites reST roles into cross-references and checks that the public API is documented."""

    def on_object(self, *, obj, loader, **kwargs) -> None:  # noqa: ARG002
        if obj.docstring is not None and obj.path.startswith("pyneuralode"):
            obj.docstring.value = _blank_line_before_lists(ROLE.sub(_reference, obj.docstring.value))

    def on_package(self, *, pkg, loader, **kwargs) -> None:  # noqa: ARG002
        if pkg.path != "pyneuralode":
            return
        for module_path in EXPORTED_MODULES:
            module = pkg if module_path == pkg.path else pkg.get_member(module_path.split(".", 1)[1])
            for name, member in module.members.items():
                if name.startswith("_") or member.is_module:
                    continue
                try:
                    target = member.final_target if member.is_alias else member
                except griffe.AliasResolutionError:
                    continue
                if target.docstring is None and not target.is_alias:
                    runtime = inspect.getdoc(getattr(importlib.import_module(module_path), name, None))
                    if runtime and not isinstance(getattr(importlib.import_module(module_path), name), (str, int,
                                                                                                        float)):
                        target.docstring = griffe.Docstring(runtime, parent=target)
                self._check(f"{module_path}.{name}", target)
                if target.is_class:
                    for attr_name, attr in target.all_members.items():
                        if not attr_name.startswith("_") and (attr.is_function or "property" in attr.labels):
                            if attr.docstring is None and not attr.is_alias:
                                attr.docstring = _inherited_docstring(target, attr_name)
                            self._check(f"{module_path}.{name}.{attr_name}", attr)

    @staticmethod
    def _check(path: str, obj) -> None:
        if obj.is_alias:
            return
        if obj.docstring is None or not obj.docstring.value.strip():
            log.warning(f"{path} has no docstring: every public name of pyneuralode is documented.")
