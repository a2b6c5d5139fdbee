"""What the ``guards:`` section's checks need to be valid, which is to be able to run: the
patterns of a ``patterns`` check joined into the one expression ``guards/checks.py`` scans with,
and the code a ``custom`` check names, imported. Config validation calls both, so a config that
validates builds."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

#: Global inline flags at the start of a pattern, such as ``(?i)`` or ``(?ms)``.
LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
#: A backreference by number (``\1``, or ``(?(1)`` in a conditional).
NUMBERED_REFERENCE = re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]|\(\?\([1-9]")


def scoped(pattern: str) -> str:
    """``pattern`` as a group that keeps its own inline flags, so that it can stand beside
    others in one expression: a leading global ``(?i)`` becomes a scoped ``(?i:...)``."""
    flags, rest = "", pattern
    while (match := LEADING_FLAGS.match(rest)) is not None:
        flags, rest = flags + match.group(1), rest[match.end():]
    # in verbose mode a trailing comment would swallow the closing parenthesis
    end = "\n" if "x" in flags else ""
    return f"(?{flags}:{rest}{end})"


def combine(patterns: list[str], terms: list[str]) -> re.Pattern[str]:
    """One expression (so one scan of the text) matching any of ``patterns``, each with its
    own inline flags, or ``terms`` as whole words; any case. ValueError, naming the pattern,
    when one does not compile or they cannot be joined."""
    before = 0  # groups of the patterns before this one
    for pattern in patterns:
        try:
            own = re.compile(scoped(pattern), re.IGNORECASE).groups
        except re.error as error:
            raise ValueError(f"pattern {pattern!r} does not compile: {error}") from None
        if before and NUMBERED_REFERENCE.search(pattern):
            raise ValueError(f"pattern {pattern!r} refers to a group by number, but the "
                             "patterns before it have groups too: name it, (?P<name>...) "
                             "and (?P=name)")
        before += own
    alternatives = [*map(scoped, patterns), *(rf"(?:\b{re.escape(term)}\b)" for term in terms)]
    try:
        return re.compile("|".join(alternatives), re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"the patterns cannot be used together: {error.msg} (they are joined "
                         "into one expression, so their group names must differ)") from None


def load(path: str) -> Callable[..., Any]:
    """The callable at ``module:attribute`` (ValueError saying what is wrong otherwise)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not of the form module:attribute")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
        if isinstance(target, type):
            target = target()
    except Exception as error:  # the team's code can fail any way: say how, in the config's terms
        raise ValueError(f"cannot load {path!r}: {_failure(error)}") from error
    if not callable(target):
        raise ValueError(f"{path!r} is not callable")
    function: Callable[..., Any] = target
    return function


def _failure(error: Exception) -> str:
    """What went wrong, for a person: the error's message, with its kind when that says more."""
    if isinstance(error, (ImportError, AttributeError)):
        return str(error)
    return f"{type(error).__name__}: {error}"
