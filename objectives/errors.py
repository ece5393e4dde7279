"""One line of an exception for a message: errors a user sees are one line, whatever raised them.
Imports nothing heavy, so the light commands (``tune pareto``, ``tune report``) can use it too."""
from __future__ import annotations


def first_line(error: BaseException, typed: bool = False) -> str:
    """The first line of ``error``'s message (its type's name when it has none); ``typed``: prefixed
    with the type's name (``ValueError: ...``), for errors raised by code that is not ours."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if typed:
        return f"{type(error).__name__}: {line}" if line else type(error).__name__
    return line or type(error).__name__
