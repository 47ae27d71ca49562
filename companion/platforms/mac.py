"""MAC addresses in the forms the platforms want: one canonical spelling, compared without case.

Qiniu's OTA wants upper case, its management docs show lower case (`1a:2b:3c:4d:5e:6f`); users type
dashes, dots or bare hex. Everything is parsed once here.
"""

from __future__ import annotations

import re

from .errors import PlatformError

_HEX12 = re.compile(r"[0-9a-f]{12}")


def parse_mac(text: str) -> str:
    """`text` as 12 lower-case hex digits; accepts `aa:bb:..`, `aa-bb-..`, `aabb.ccdd.eeff` and bare hex."""
    cleaned = re.sub(r"[\s:.\-]", "", text.strip().lower())
    if not _HEX12.fullmatch(cleaned):
        raise PlatformError(f"not a MAC address: {text!r} (expected six hex pairs, e.g. 1a:2b:3c:4d:5e:6f)")
    return cleaned


def is_mac(text: str) -> bool:
    """Whether `text` is a MAC address in one of the spellings `parse_mac` accepts."""
    try:
        parse_mac(text)
    except PlatformError:
        return False
    return True


def normalise_mac(text: str, *, upper: bool = False) -> str:
    """`text` in colon form, lower case (management API) or upper case (`upper=True`, OTA headers)."""
    digits = parse_mac(text)
    joined = ":".join(digits[i : i + 2] for i in range(0, 12, 2))
    return joined.upper() if upper else joined


def same_mac(a: str, b: str) -> bool:
    """Whether two spellings name the same MAC (False if either is not a MAC)."""
    try:
        return parse_mac(a) == parse_mac(b)
    except PlatformError:
        return a.strip().lower() == b.strip().lower()
