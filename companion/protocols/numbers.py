"""Numbers as JSON peers send them: a whole number may come as 3 or 3.0, and true is not 1."""

from __future__ import annotations

from typing import Any


def whole_number(value: Any) -> int | None:
    """`value` as an int when it is a whole JSON number (3 or 3.0, never a bool); otherwise None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
