"""Comma-separated lists, as every option that takes several values spells them (``"1,16"``, ``"native,0.5"``).

One reading for all of them: items stripped, empty ones dropped, a Python
sequence taken as it is.
"""

from __future__ import annotations

from typing import Sequence

from .errors import ConfigError, param


def comma_items(value: str | int | Sequence[str | int]) -> list[str]:
    """``" a, b,,c"`` -> ``["a", "b", "c"]``; a sequence (or one int) item by item."""
    parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else list(value)
    return [s for s in (str(p).strip() for p in parts) if s]


def positive_ints(value: str | int | Sequence[str | int], name: str, example: str) -> tuple[int, ...]:
    """Integers >= 1, duplicates dropped, order kept; else a ``ConfigError`` naming parameter ``name``."""
    items = comma_items(value)
    try:
        ints = [int(s) for s in items]
    except ValueError:
        ints = []
    if not ints or min(ints) < 1:
        raise ConfigError(f"{param(name)} {','.join(items)!r}: expected comma-separated integers >= 1, e.g. {example}")
    return tuple(dict.fromkeys(ints))
