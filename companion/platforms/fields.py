"""Typed reads from loosely typed JSON objects, and reply models declared over them.

A wrong or missing field becomes None (or an empty value), never an exception, unless it is declared
required.

The platforms send numbers as strings, nulls where lists were documented and extra fields at will; the
models read through these so a surprising reply still prints, and the raw object is kept for --json.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, ClassVar, Self, TypeVar, cast, get_args, get_origin, get_type_hints

from .errors import PlatformError


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
    if isinstance(value, float) and not value.is_integer():
        return None
    return _number(value, int)


def get_float(obj: Mapping[str, Any], key: str) -> float | None:
    """A number field, from a number or a numeric string."""
    value = obj.get(key)
    return None if isinstance(value, bool) else _number(value, float)


N = TypeVar("N", int, float)


def _number(value: Any, kind: type[N]) -> N | None:
    if isinstance(value, int | float):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value.strip())
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


def set_fields(
    request: Any,
    rename: Callable[[str], str] | None = None,
    convert: Callable[[str, Any], Any] | None = None,
) -> dict[str, Any]:
    """A request dataclass as the API's JSON object: only the fields that are set (not None), each under
    `rename(name)` and as `convert(name, value)` when those are given."""
    body: dict[str, Any] = {}
    for f in fields(request):
        value = getattr(request, f.name)
        if value is not None:
            body[rename(f.name) if rename else f.name] = convert(f.name, value) if convert else value
    return body


# -- declared replies ------------------------------------------------------------------------------
#
# A reply model is a frozen dataclass that inherits ApiModel: each field's type says how it is read
# (with the lenient getters above), its name says which key (snake_case, or camelCase when the class
# sets `wire_case = "camel"`), and `wire(...)` declares the exceptions. A field named `raw` (the one
# RawReply declares) receives the object itself, so --json can print exactly what the server sent.


def wire(
    *keys: str,
    required: str | None = None,
    read: Callable[[dict[str, Any]], Any] | None = None,
    default: Any = MISSING,
    repr: bool = True,
) -> Any:
    """A reply field read from the first of `keys` that holds a usable value (default: its own name).

    `required` is the error raised when none does; `read` computes the value from the whole object
    instead (for fields the platform encodes oddly); `repr=False` keeps a secret out of the model's repr.
    """
    return field(default=default, repr=repr, metadata={"keys": keys, "required": required, "read": read})


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class ApiModel:
    """Mixin for reply dataclasses: `from_api` reads one JSON object by the field declarations."""

    wire_case: ClassVar[str] = "snake"

    @classmethod
    def from_api(cls, data: Any) -> Self:
        obj = as_dict(data)
        kwargs = {name: reader(obj) for name, reader in _readers(cast(type, cls))}
        return cls(**kwargs)


@dataclass(frozen=True)
class RawReply(ApiModel):
    """A reply model that also keeps the object the platform sent (`raw`, for --json).

    `raw` is keyword-only, so it comes after the subclass's own fields in the constructor.
    """

    raw: dict[str, Any] = field(default_factory=dict, repr=False, kw_only=True)


Reader = Callable[[dict[str, Any]], Any]


@cache
def _readers(cls: type) -> list[tuple[str, Reader]]:
    """How each field of `cls` is read, worked out once per class."""
    camel_case = getattr(cls, "wire_case", "snake") == "camel"
    hints = get_type_hints(cls)
    readers: list[tuple[str, Reader]] = []
    for f in fields(cls):
        if not f.init:
            continue
        if f.name == "raw":
            readers.append((f.name, lambda obj: obj))
            continue
        if f.metadata.get("read"):
            readers.append((f.name, f.metadata["read"]))
            continue
        keys = f.metadata.get("keys") or (camel(f.name) if camel_case else f.name,)
        readers.append((f.name, _field_reader(keys, hints[f.name], f.metadata.get("required"))))
    return readers


def _field_reader(keys: tuple[str, ...], hint: Any, required: str | None) -> Reader:
    optional = type(None) in get_args(hint)
    kind = next((arg for arg in get_args(hint) if arg is not type(None)), hint) if optional else hint
    read_one = _value_reader(kind)
    absent: Any = None if optional else _empty(kind)

    def read(obj: dict[str, Any]) -> Any:
        for key in keys:
            value = read_one(obj, key)
            if value is not None and value != "":
                return value
        if required:
            raise PlatformError(required)
        return absent

    return read


def _value_reader(kind: Any) -> Callable[[Mapping[str, Any], str], Any]:
    simple: dict[Any, Callable[[Mapping[str, Any], str], Any]] = {
        str: get_str,
        int: get_int,
        float: get_float,
        bool: get_bool,
    }
    if kind in simple:
        return simple[kind]
    origin, args = get_origin(kind), get_args(kind)
    if origin is list and args == (str,):
        return get_str_list
    if origin is list and isinstance(args[0], type) and issubclass(args[0], ApiModel):
        model = args[0]
        return lambda obj, key: [model.from_api(item) for item in as_list(obj.get(key))]
    if origin is dict:
        return lambda obj, key: obj.get(key) if isinstance(obj.get(key), dict) else None
    return lambda obj, key: obj.get(key)


def _empty(kind: Any) -> Any:
    if get_origin(kind) is list:
        return []
    return {str: "", int: 0, float: 0.0, bool: False}.get(kind)
