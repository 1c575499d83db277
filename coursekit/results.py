"""Record a notebook's headline numbers in one greppable form.

``record("test_accuracy", 0.9712)`` prints ``result: test_accuracy = 0.9712``
so a reader, the course build and CI all see the same line.
"""
from __future__ import annotations

import numbers
import re

_RECORDED: dict[str, object] = {}


def format_value(value: object, digits: int = 4) -> str:
    """Floats rounded to ``digits`` decimals; everything else as ``str``."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.{digits}f}"
    return str(value)


def record(name: str, value: object, digits: int = 4) -> object:
    """Print ``result: <name> = <value>`` and remember the value; returns ``value``."""
    if not name or any(ch.isspace() for ch in name):
        raise ValueError(f"result names are single words (got {name!r}); use underscores.")
    _RECORDED[name] = value
    print(f"result: {name} = {format_value(value, digits)}")
    return value


def recorded() -> dict[str, object]:
    """A copy of every value recorded in this process, by name."""
    return dict(_RECORDED)


_LINE = re.compile(r"^result: (\S+) = (.*)$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """The ``result:`` lines of printed ``text`` as ``{name: value}`` (values as printed, last one wins)."""
    return {name: value.strip() for name, value in _LINE.findall(text)}
