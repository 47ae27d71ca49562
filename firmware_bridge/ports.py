"""Finding the board: `port = "auto"` picks an ESP32 by USB vendor/product id.

The stable name under /dev/serial/by-id/ is preferred over /dev/ttyACM0, which changes between plugs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BY_ID_DIR = Path("/dev/serial/by-id")

# (vendor, product or None for any product of that vendor): what is usually on the other end.
KNOWN_USB_IDS: tuple[tuple[int, int | None, str], ...] = (
    (0x303A, None, "Espressif native USB (ESP32-S2/S3/C3/C6)"),
    (0x10C4, 0xEA60, "Silicon Labs CP210x"),
    (0x1A86, 0x7523, "WCH CH340"),
    (0x1A86, 0x55D4, "WCH CH9102"),
    (0x1A86, 0x55D3, "WCH CH343"),
    (0x0403, 0x6001, "FTDI FT232R"),
    (0x0403, 0x6015, "FTDI FT231X"),
)


@dataclass(frozen=True)
class SerialPortInfo:
    """What the system says about one serial port."""

    device: str
    vid: int | None = None
    pid: int | None = None
    description: str = ""


def parse_usb_id(text: str) -> tuple[int, int | None]:
    """ "303a:1001" or "303a" (any product) → (vendor, product); ValueError with the expected form."""
    vendor, _, product = text.strip().partition(":")
    try:
        return int(vendor, 16), (int(product, 16) if product else None)
    except ValueError:
        raise ValueError(f"USB id {text!r}: expected VID:PID in hex, e.g. 303a:1001") from None


def matches(info: SerialPortInfo, ids: Iterable[tuple[int, int | None]]) -> bool:
    """True when the port's USB id is one of `ids`."""
    return info.vid is not None and any(
        info.vid == vid and (pid is None or info.pid == pid) for vid, pid in ids
    )


def system_ports() -> list[SerialPortInfo]:
    """The serial ports the system knows, with their USB ids (from sysfs, through pyserial)."""
    from serial.tools import list_ports

    return [SerialPortInfo(p.device, p.vid, p.pid, p.description or "") for p in list_ports.comports()]


def by_id_names(by_id_dir: Path = BY_ID_DIR) -> dict[str, str]:
    """Real device path → its stable /dev/serial/by-id/ name."""
    names: dict[str, str] = {}
    try:
        entries = sorted(os.listdir(by_id_dir))
    except OSError:
        return names
    for entry in entries:
        link = by_id_dir / entry
        names.setdefault(os.path.realpath(link), str(link))
    return names


def find_board(
    ports: Sequence[SerialPortInfo],
    extra_ids: Iterable[tuple[int, int | None]] = (),
    by_id: dict[str, str] | None = None,
) -> list[str]:
    """Candidate paths, best first: user-given ids, then Espressif, then USB-serial bridges."""
    ids = list(extra_ids) + [(vid, pid) for vid, pid, _ in KNOWN_USB_IDS]
    names = by_id if by_id is not None else {}

    def rank(info: SerialPortInfo) -> tuple[int, str]:
        for position, (vid, pid) in enumerate(ids):
            if info.vid == vid and (pid is None or info.pid == pid):
                return position, info.device
        return len(ids), info.device

    found = sorted((p for p in ports if matches(p, ids)), key=rank)
    return [names.get(os.path.realpath(p.device), p.device) for p in found]


def resolve_port(port: str, extra_ids: Iterable[tuple[int, int | None]] = ()) -> str | None:
    """The path to open for a configured port: itself, or for "auto" the best board found now."""
    if port != "auto":
        return port
    candidates = find_board(system_ports(), extra_ids, by_id_names())
    return candidates[0] if candidates else None


USB_TTY_PREFIXES = ("ttyACM", "ttyUSB")


def usb_tty_names(dev: str = "/dev") -> tuple[str, ...]:
    """The USB serial device nodes present now (a cheap directory listing)."""
    try:
        return tuple(sorted(n for n in os.listdir(dev) if n.startswith(USB_TTY_PREFIXES)))
    except OSError:
        return ()


class PortFinder:
    """resolve_port() for a link that asks ten times a second: for "auto" the sysfs scan (milliseconds
    on a Pi Zero) runs only when the set of USB serial nodes in /dev changes."""

    def __init__(
        self, port: str, extra_ids: Iterable[tuple[int, int | None]] = (), dev: str = "/dev"
    ) -> None:
        self.port = port
        self.extra_ids = list(extra_ids)
        self.dev = dev
        self.scans = 0
        self._seen: tuple[str, ...] | None = None
        self._found: str | None = None

    def resolve(self) -> str | None:
        """The path to open now, or None when no board is there."""
        if self.port != "auto":
            return self.port
        names = usb_tty_names(self.dev)
        if names != self._seen:
            self._seen = names
            self.scans += 1
            self._found = resolve_port("auto", self.extra_ids) if names else None
        return self._found
