"""Loading PortAudio (through sounddevice) with an error a user can act on, and device lookup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import AudioDeviceError

_sd: Any = None


def sounddevice() -> Any:
    """The sounddevice module; raises AudioDeviceError when libportaudio2 is missing."""
    global _sd
    if _sd is None:
        try:
            import sounddevice as sd
        except OSError as exc:
            raise AudioDeviceError(
                f"PortAudio is not available ({exc}); install it with: sudo apt-get install libportaudio2"
            ) from None
        _sd = sd
    return _sd


@dataclass(frozen=True)
class DeviceInfo:
    """One sound device as PortAudio sees it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio knows, in its index order."""
    sd = sounddevice()
    return [
        DeviceInfo(i, d["name"], d["max_input_channels"], d["max_output_channels"], d["default_samplerate"])
        for i, d in enumerate(sd.query_devices())
    ]


# Rates tried, in order, after the one asked for and the device's default: what I2S HATs, USB codecs
# and sound servers commonly take.
STANDARD_RATES = (16000, 48000, 44100, 32000, 24000, 22050, 8000)


def negotiate(device: DeviceInfo, kind: str, rate: int) -> tuple[int, int]:
    """The (rate, channels) to open `device` at: `rate` in mono when the device takes it, else the first
    format it does take (the asked-for rate in stereo, its default rate, a standard rate; 1, 2 or all
    its channels), so raw `hw:` devices of I2S HATs that take only stereo or only 48 kHz open too.

    Raises AudioDeviceError naming what was tried when the device takes none of it.
    """
    sd = sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    most = device.max_input_channels if kind == "input" else device.max_output_channels
    rates = list(dict.fromkeys([rate, int(device.default_samplerate), *STANDARD_RATES]))
    channel_counts = [c for c in dict.fromkeys([1, 2, most]) if 0 < c <= most]
    for candidate in rates:
        for channels in channel_counts:
            try:
                check(device=device.index, samplerate=candidate, channels=channels, dtype="int16")
            except Exception:
                continue
            return candidate, channels
    raise AudioDeviceError(
        f"{kind} device {device.name!r} takes none of the formats tried (16-bit, "
        f"{', '.join(str(r) for r in rates)} Hz, {' or '.join(map(str, channel_counts))} channels)"
    )


def supported_rates(device: DeviceInfo, kind: str) -> list[int]:
    """The standard rates the device opens at (with any channel count it has), lowest first."""
    sd = sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    most = device.max_input_channels if kind == "input" else device.max_output_channels
    found = []
    for rate in sorted({*STANDARD_RATES, int(device.default_samplerate)}):
        for channels in dict.fromkeys([1, 2, most]):
            if not 0 < channels <= most:
                continue
            try:
                check(device=device.index, samplerate=rate, channels=channels, dtype="int16")
            except Exception:
                continue
            found.append(rate)
            break
    return found


def default_index(kind: str) -> int | None:
    """PortAudio's default device for input or output, if it has one."""
    default = sounddevice().default.device[0 if kind == "input" else 1]
    return None if default is None or int(default) < 0 else int(default)


def find_device(spec: str, kind: str) -> DeviceInfo:
    """The device named or numbered by `spec` ('default', an index, or a name or part of one).

    kind is "input" or "output". A missing device raises AudioDeviceError naming those that exist.
    """
    devices = list_devices()
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    usable = [d for d in devices if getattr(d, channels) > 0]
    spec = spec.strip()
    if spec in ("", "default"):
        sd = sounddevice()
        default = sd.default.device[0 if kind == "input" else 1]
        if default is not None and 0 <= int(default) < len(devices):
            found = devices[int(default)]
            if getattr(found, channels) > 0:
                return found
        exact = [d for d in usable if d.name == "default"]
        if exact:
            return exact[0]
        if usable:
            return usable[0]
        raise AudioDeviceError(f"no sound {kind} device found; {_describe(devices)}")
    if spec.isdigit():
        idx = int(spec)
        for dev in usable:
            if dev.index == idx:
                return dev
        raise AudioDeviceError(f"no {kind} device with index {idx}; {_describe(usable, kind)}")
    exact = [d for d in usable if d.name == spec]
    if exact:
        return exact[0]
    partial = [d for d in usable if spec.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if len(partial) > 1:
        names = ", ".join(f"{d.index}: {d.name!r}" for d in partial)
        raise AudioDeviceError(f"{kind} device {spec!r} is ambiguous; it matches {names}")
    raise AudioDeviceError(f"no {kind} device named {spec!r}; {_describe(usable, kind)}")


def _describe(devices: list[DeviceInfo], kind: str = "") -> str:
    if not devices:
        server = " (is a sound server running? PULSE_SERVER=" + os.environ.get("PULSE_SERVER", "unset") + ")"
        next_step = "; `companion demo` needs no sound card, and `companion devices` lists what exists"
        return "there are no devices" + server + next_step
    label = f"{kind} devices" if kind else "devices"
    return f"{label} available: " + ", ".join(f"{d.index}: {d.name!r}" for d in devices)
