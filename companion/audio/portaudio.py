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
