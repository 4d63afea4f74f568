"""Unknown keyword options are pyneuralode errors: :class:`pyneuralode.UnknownOptionError`, which is both a
``SpecError`` and a ``TypeError``, names the option, the closest known one and the list of known ones.

Classes get it from the :class:`CheckedOptions` metaclass (set once on each public base, so every subclass and
every dataclass ``__init__`` is covered); functions and methods from the :func:`checked_options` decorator.
The check reads the keyword names only — one set lookup per keyword, nothing on the positional path.
"""

from __future__ import annotations

import abc
import difflib
import functools
import inspect

from ._errors import UnknownOptionError


@functools.lru_cache(maxsize=None)
def _accepted(fn) -> frozenset[str] | None:
    """The keyword names ``fn`` accepts, or ``None`` if it takes ``**kwargs`` (anything goes)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let Python check
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)) - {"self"}


def check_keywords(name: str, fn, kwargs) -> None:
    """Raise :class:`pyneuralode.UnknownOptionError` if ``kwargs`` has a name that ``fn`` does not accept."""
    accepted = _accepted(fn)
    if accepted is None:
        return
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            known = f"its options are {', '.join(sorted(accepted))}" if accepted else "it takes no options"
            raise UnknownOptionError(f"{name} got an unknown option {key!r}: {hint}{known}.")


@functools.lru_cache(maxsize=None)
def _positional(fn) -> tuple[int, tuple[str, ...]] | None:
    """``(how many positional arguments fn takes, its keyword-only names)``, or ``None`` if it takes ``*args``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
    return len(positional), tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def check_positional(name: str, fn, args) -> None:
    """Raise :class:`pyneuralode.UnknownOptionError` (also a ``TypeError``) naming the keywords when ``args`` holds
    more positional values than ``fn`` takes (``pn.CosineDecay(1e-2, 100)`` for ``init_value=, decay_steps=``)."""
    shape = _positional(fn)
    if shape is None or len(args) <= shape[0]:
        return
    count, keywords = shape
    if not (count or keywords):
        raise UnknownOptionError(f"{name} takes no arguments, got {len(args)}: {name}().")
    by_name = ", ".join(f"{k}=..." for k in keywords)
    raise UnknownOptionError(f"{name} takes {count or 'no'} positional argument{'s' if count != 1 else ''} but got "
                             f"{len(args)}: pass its options by name, {name}({'..., ' * count}{by_name}).")


class CheckedOptions(abc.ABCMeta):
    """Metaclass of the public bases: constructing a class with an unknown keyword, or with options given by
    position where they are keyword-only, raises :class:`pyneuralode.UnknownOptionError` before ``__init__`` runs
    (an ``ABCMeta``, so abstract bases keep working)."""

    def __call__(cls, *args, **kwargs):
        if kwargs:
            check_keywords(cls.__name__, cls.__init__, kwargs)
        if args:
            check_positional(cls.__name__, cls.__init__, args)
        return super().__call__(*args, **kwargs)


def checked_options(fn):
    """Decorator: unknown keywords passed to ``fn`` raise :class:`pyneuralode.UnknownOptionError`."""
    name = fn.__qualname__.replace(".<locals>", "")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if kwargs:
            check_keywords(name, fn, kwargs)
        return fn(*args, **kwargs)

    return wrapper
