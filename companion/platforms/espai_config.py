"""Editing an ESP-AI agent's `config` (the JSON object the platform stores as a string) key by key.

The platform's `equipment/update` replaces `config` whole, so every edit here starts from the agent's
current config and returns a complete new one: keys that are not named survive. Secrets inside the config
(`llm_config.api_key`, ...) are masked for display only; a config that still holds a masked value is
refused before it can overwrite the real secret.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from .errors import PlatformError

# Keys whose values are secrets: api_key, apiKey, secret_key, apiSecret, access_token, password, ...
SECRET_KEY = re.compile(r"key|secret|token|passw|pwd", re.IGNORECASE)
MASK_MARK = "…"


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def mask_value(secret: str) -> str:
    """A secret shown by its first four characters only (as the other `show` commands do)."""
    return secret[:4] + MASK_MARK if len(secret) > 6 else MASK_MARK


def masked(value: Any) -> Any:
    """A copy of `value` with every string under a secret-looking key masked (for display only)."""
    if isinstance(value, dict):
        return {
            k: mask_value(v) if isinstance(v, str) and v and is_secret_key(k) else masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def masked_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of secret-looking keys whose value looks masked ("7b13…"): pasted display output."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}{k}"
            if isinstance(v, str) and is_secret_key(k) and v.endswith(MASK_MARK) and len(v) <= 5:
                found.append(path)
            else:
                found.extend(masked_paths(v, path + "."))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(masked_paths(item, f"{prefix}{index}."))
    return found


def refuse_masked(config: Any, source: str) -> None:
    """Raise if `config` holds masked secrets: sending it would replace the real keys with "7b13…"."""
    paths = masked_paths(config)
    if paths:
        raise PlatformError(
            f"{source}: {', '.join(paths)} hold(s) a masked value (from `config get` without --output); "
            "nothing was sent. Use `companion espai config get AGENT --output FILE` for the real values"
        )


def parse_value(text: str) -> Any:
    """VALUE of KEY=VALUE: JSON when it parses (1.5, true, null, {"a":1}, "quoted"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` as (["a", "b", "c"], value); a clear error for anything else."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not key.strip() or any(not part for part in path):
        raise PlatformError(
            f"expected KEY=VALUE with a dotted KEY (e.g. tts_config.voice_type=…), got {text!r}"
        )
    return path, parse_value(raw)


def assign(config: dict[str, Any], assignments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(a copy of `config` with each KEY=VALUE set, the dotted keys whose value changed).

    Missing objects along a path are created; a number indexes an existing list
    (`llm_init_messages.0.content=…`); a path through a string or number is refused.
    """
    result = copy.deepcopy(config)
    changed: list[str] = []
    for text in assignments:
        path, value = parse_assignment(text)
        node: Any = result
        for depth, part in enumerate(path[:-1]):
            node = _step(node, part, ".".join(path[: depth + 1]))
        last = path[-1]
        dotted = ".".join(path)
        if isinstance(node, list):
            index = _index(node, last, dotted)
            before = node[index]
            node[index] = value
        else:
            before = node.get(last, _MISSING)
            node[last] = value
        if before is _MISSING or before != value:
            changed.append(dotted)
    return result, list(dict.fromkeys(changed))


_MISSING = object()


def _step(node: Any, part: str, dotted: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, dotted)]
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    if not isinstance(child, dict | list):
        raise PlatformError(
            f"config key {dotted} holds {json.dumps(child, ensure_ascii=False)}, not an object"
        )
    return child


def _index(node: list[Any], part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise PlatformError(
            f"config key {dotted}: the list has {len(node)} item(s); use an index 0-{len(node) - 1}"
        )
    return int(part)


def to_document(config: dict[str, Any]) -> str:
    """The config as a readable JSON document (what `config get` prints and `config edit` opens)."""
    return json.dumps(config, ensure_ascii=False, indent=2) + "\n"


def from_document(text: str, source: str) -> dict[str, Any]:
    """An edited document back to a config object; a clear error when it is not a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise PlatformError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PlatformError(f"{source}: the config must be a JSON object, not {type(value).__name__}")
    return value
