"""Who this device is to a xiaozhi server: a persisted Client-Id (UUID v4) and a MAC-shaped Device-Id.

Servers bind a device by its Device-Id (xiaozhi-esp32-server's manager and Qiniu require the MAC to be
bound or pre-registered), so both ids are written once to the state directory and reused: changing the
network interface later does not make the device a stranger. `xiaozhi.device_id` overrides the MAC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from ...config import XiaozhiSettings
from ...errors import ConfigError
from ...service.state_dir import state_dir, write_private

log = logging.getLogger(__name__)

IDENTITY_FILE = "xiaozhi-identity.json"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SYS_NET = Path("/sys/class/net")
_ROUTES = Path("/proc/net/route")


@dataclass(frozen=True)
class Identity:
    """The ids sent as Device-Id / Client-Id headers and in the OTA body."""

    device_id: str
    client_id: str


def load_identity(settings: XiaozhiSettings, directory: Path | None = None) -> Identity:
    """The persisted identity, created on first use; `settings.device_id` wins over the stored MAC."""
    path = (directory or state_dir()) / IDENTITY_FILE
    stored = _read(path)
    client_id = stored.get("client_id", "")
    if not _is_uuid4(client_id):
        client_id = str(uuid.uuid4())
    stored_device_id = stored.get("device_id", "")
    device_id = stored_device_id
    if not device_id and not settings.device_id:  # a configured id needs no MAC (nor a warning without one)
        device_id = primary_mac() or _fallback_mac()
    if stored.get("client_id") != client_id or stored_device_id != device_id:
        record = {"client_id": client_id} | ({"device_id": device_id} if device_id else {})
        data = json.dumps(record, indent=1) + "\n"
        try:
            write_private(path, data.encode())
        except OSError as exc:
            raise ConfigError(f"cannot save the device identity in {path}: {exc.strerror or exc}") from exc
        log.info("device identity saved in %s: Client-Id %s, Device-Id %s", path, client_id,
                 device_id or "from xiaozhi.device_id")  # fmt: skip
    if settings.device_id:
        device_id = normalize_mac(settings.device_id)
        if not MAC_RE.match(device_id):
            log.warning(
                "xiaozhi.device_id %r is not MAC-shaped (aa:bb:cc:dd:ee:ff); some servers will refuse it",
                settings.device_id,
            )
    return Identity(device_id, client_id)


def normalize_mac(value: str) -> str:
    """Lower-case colon form of a MAC written with '-', ':' or nothing between the bytes."""
    raw = value.strip().lower()
    hexdigits = raw.replace(":", "").replace("-", "")
    if re.fullmatch(r"[0-9a-f]{12}", hexdigits):
        return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2))
    return raw


def primary_mac(sys_net: Path | None = None, routes: Path | None = None) -> str | None:
    """MAC of the interface holding the default route, else of the first physical-looking interface."""
    sys_net = sys_net or _SYS_NET
    routes = routes or _ROUTES
    candidates: list[str] = []
    try:
        for line in routes.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000":
                candidates.append(fields[0])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        candidates += sorted(p.name for p in sys_net.iterdir())
    for name in candidates:
        if name == "lo":
            continue
        try:
            mac = (sys_net / name / "address").read_text().strip().lower()
        except OSError:
            continue
        if MAC_RE.match(mac) and mac != "00:00:00:00:00:00":
            return mac
    return None


def _fallback_mac() -> str:
    """A random locally-administered MAC when the machine shows none (containers)."""
    node = uuid.getnode() | 0x020000000000  # the locally-administered bit
    node &= ~0x010000000000  # unicast
    mac = ":".join(f"{(node >> s) & 0xFF:02x}" for s in range(40, -8, -8))
    # Normal in containers and chroots; said once (the id is persisted), and not as a warning, so that
    # a command's one-line error stays the only thing it prints.
    log.info("no network interface MAC found; using %s as the Device-Id", mac)
    return mac


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s); a new identity is written", path, exc)
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _is_uuid4(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4
    except ValueError:
        return False
