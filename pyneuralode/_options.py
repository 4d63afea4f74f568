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


class CheckedOptions(abc.ABCMeta):
    """Metaclass of the public bases: constructing a class with an unknown keyword raises
    :class:`pyneuralode.UnknownOptionError` before ``__init__`` runs (an ``ABCMeta``, so abstract bases keep
    working)."""

    def __call__(cls, *args, **kwargs):
        if kwargs:
            check_keywords(cls.__name__, cls.__init__, kwargs)
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
