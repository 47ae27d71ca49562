"""Typed reads from loosely typed JSON objects: a wrong or missing field becomes None, never an exception.

The platforms send numbers as strings, nulls where lists were documented and extra fields at will; the
models read through these so a surprising reply still prints, and the raw object is kept for --json.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """`value` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def get_str(obj: Mapping[str, Any], key: str) -> str | None:
    """A string field; numbers are turned into their text, anything else is None."""
    value = obj.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def get_int(obj: Mapping[str, Any], key: str) -> int | None:
    """An integer field; digit strings are accepted (ESP-AI sends "99"), anything else is None."""
    value = obj.get(key)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def get_float(obj: Mapping[str, Any], key: str) -> float | None:
    """A number field, from a number or a numeric string."""
    value = obj.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def get_bool(obj: Mapping[str, Any], key: str) -> bool | None:
    """A boolean field; also "1"/"0", 1/0 and "true"/"false" as the platforms send them."""
    value = obj.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
    return None


def get_str_list(obj: Mapping[str, Any], key: str) -> list[str]:
    """A list of strings (other items dropped); empty when the field is missing or null."""
    return [item for item in as_list(obj.get(key)) if isinstance(item, str)]
