"""The bridge firmware's loop: host bytes in, LEDs, button presses and microphone audio out.

All protocol and animation logic lives in firmware_bridge.device (shared with the emulator); this file
only joins it to the hardware. App takes its hardware as objects, so the tests can run the very same
loop under MicroPython with stand-ins for the pins.
"""

import time

from firmware_bridge import protocol
from firmware_bridge.button import ButtonClassifier, elapsed
from firmware_bridge.device import DeviceCore

LOG_ERROR = 40


class ConsolePort:
    """The REPL's port (USB-CDC, or UART0 behind a USB-serial chip), raw, with Ctrl-C disabled."""

    def __init__(self, baudrate: "int | None" = None) -> None:
        import select
        import sys

        import micropython

        self._micropython = micropython
        self._uart0 = None
        if baudrate:
            from machine import UART

            self._uart0 = UART(0)
            self._uart0.init(baudrate=baudrate)
        micropython.kbd_intr(-1)  # 0x03 is data now; a REPL frame (or safe boot) gets the REPL back
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(sys.stdin, select.POLLIN)

    def read(self) -> bytes:
        """What has arrived (up to 512 bytes), without waiting."""
        data = bytearray()
        while len(data) < 512 and self._poll.poll(0):
            chunk = self._in.read(1)
            if not chunk:
                break
            data.extend(chunk)
        return bytes(data)

    def write(self, data: bytes) -> None:
        """Send bytes to the host."""
        self._out.write(data)

    def close(self) -> None:
        """Give the port back to the REPL (Ctrl-C and mpremote work again)."""
        if self._uart0 is not None:
            self._uart0.init(baudrate=115200)
        self._micropython.kbd_intr(3)


class UartPort:
    """A separate UART (e.g. wired to a Raspberry Pi's GPIO UART)."""

    def __init__(self, uart_id: int, baudrate: int, tx: int, rx: int) -> None:
        from machine import UART

        self._uart = UART(uart_id, baudrate=baudrate, tx=tx, rx=rx, rxbuf=2048, txbuf=4096)

    def read(self) -> bytes:
        """What has arrived, without waiting."""
        n = self._uart.any()
        return self._uart.read(n) if n else b""

    def write(self, data: bytes) -> None:
        """Send bytes to the host."""
        self._uart.write(data)

    def close(self) -> None:
        """Release the UART."""
        self._uart.deinit()


class NeoPixels:
    """WS2812/SK6812 through `neopixel`; skips the write when the frame has not changed."""

    def __init__(self, pin: int, count: int) -> None:
        import neopixel
        from machine import Pin

        self.count = count
        self.np = neopixel.NeoPixel(Pin(pin, Pin.OUT), count)
        self._last = b""

    def show(self, rgb: bytearray) -> None:
        """Put one RGB frame (3 bytes per pixel) on the strip."""
        frame = bytes(rgb)
        if frame == self._last:
            return
        self._last = frame
        np = self.np
        for i in range(self.count):
            j = 3 * i
            np[i] = (frame[j], frame[j + 1], frame[j + 2])
        np.write()


class ButtonPin:
    """A push button to ground (or to 3V3 when not active low)."""

    def __init__(self, pin: int, active_low: bool = True) -> None:
        from machine import Pin

        self.active_level = 0 if active_low else 1
        self.pin = Pin(pin, Pin.IN, Pin.PULL_UP if active_low else Pin.PULL_DOWN)

    def pressed(self) -> bool:
        """True while held down."""
        return self.pin.value() == self.active_level


class App:
    """One pass of `step(now)` reads the host, samples the button and microphone, writes frames and
    refreshes the LEDs at `fps`."""

    def __init__(self, core: DeviceCore, port, pixels=None, button=None, mic=None, fps: int = 50) -> None:
        self.core = core
        self.port = port
        self.pixels = pixels
        self.button = button
        self.mic = mic
        self.classifier = ButtonClassifier()
        self.frame_ms = 1000 // fps
        self._last_frame = -1
        self._errors: dict = {}

    def step(self, now: int) -> bool:
        """Do one round of work; False once the host asked for the REPL."""
        data = self.port.read()
        if data:
            self.core.receive(data, now)
        self.core.tick(now)
        if self.button is not None:
            kind = self.classifier.update(self.button.pressed(), now)
            if kind:
                self.core.press(kind)
        if self.mic is not None and self.core.mic_wanted:
            self.core.mic(self.mic.read())
        out = self.core.take_output()
        if out:
            self.port.write(out)
        due = self._last_frame < 0 or elapsed(now, self._last_frame) >= self.frame_ms
        if self.pixels is not None and due:
            self._last_frame = now
            self.pixels.show(self.core.pixels(now))
        return not self.core.repl_requested

    def report(self, error: Exception) -> None:
        """Tell the host about an unexpected error, once per distinct message."""
        text = repr(error)
        if text not in self._errors and len(self._errors) < 20:
            self._errors[text] = 1
            self.core.log(LOG_ERROR, "firmware: " + text)

    def run(self, loops: int = -1) -> None:
        """Loop until the host asks for the REPL (or `loops` rounds, for tests)."""
        while loops != 0:
            loops -= 1
            try:
                if not self.step(time.ticks_ms()):
                    break
            except Exception as exc:  # keep the LEDs alive; the host sees the error as a LOG line
                self.report(exc)
                time.sleep_ms(100)
            if self.mic is None or not self.core.mic_wanted:
                time.sleep_ms(2)
        self.shutdown()

    def shutdown(self) -> None:
        """LEDs off and the port back to the REPL."""
        if self.pixels is not None:
            self.pixels.show(bytearray(3 * self.core.led_count))
        out = self.core.take_output()
        if out:
            self.port.write(out)
        self.port.close()
        if self.mic is not None:
            self.mic.close()


SAFE_BOOT_WINDOW_MS = 1000
SAFE_BOOT_HOLD_MS = 300


def safe_boot(board) -> bool:
    """True when the button is held for 0.3 s within 1 s of start-up: stay in the REPL.

    (Holding BOOT *while* pressing RESET would start the ROM bootloader instead: press RESET first,
    then hold the button.)
    """
    if board.BUTTON_PIN is None:
        return False
    button = ButtonPin(board.BUTTON_PIN, board.BUTTON_ACTIVE_LOW)
    held = 0
    for _ in range(SAFE_BOOT_WINDOW_MS // 10):
        held = held + 10 if button.pressed() else 0
        if held >= SAFE_BOOT_HOLD_MS:
            return True
        time.sleep_ms(10)
    return False


def main() -> None:
    """Build the hardware from board.py and run."""
    import board

    if safe_boot(board):
        print("bridge: button held at boot; staying in the REPL")
        return
    if board.TRANSPORT == "uart":
        port = UartPort(board.UART_ID, board.BAUDRATE, board.UART_TX, board.UART_RX)
    else:
        port = ConsolePort(board.CONSOLE_BAUDRATE)
    problems = []  # a wrong pin must not take the rest down: the host hears about it as ERROR
    pixels = None
    if board.LED_PIN is not None:
        try:
            pixels = NeoPixels(board.LED_PIN, board.LED_COUNT)
        except Exception as exc:
            problems.append("LEDs on GPIO" + str(board.LED_PIN) + ": " + repr(exc))
    button = None
    if board.BUTTON_PIN is not None:
        try:
            button = ButtonPin(board.BUTTON_PIN, board.BUTTON_ACTIVE_LOW)
        except Exception as exc:
            problems.append("button on GPIO" + str(board.BUTTON_PIN) + ": " + repr(exc))
    mic = None
    if board.MIC_SD is not None:
        try:
            from mic import I2SMic

            mic = I2SMic(board.MIC_SCK, board.MIC_WS, board.MIC_SD, board.MIC_BITS, board.MIC_SHIFT)
        except Exception as exc:
            problems.append("microphone: " + repr(exc))
    core = DeviceCore(
        board.NAME,
        board.LED_COUNT if pixels is not None else 0,
        board.LED_TYPE if pixels is not None else 0,
        button=button is not None,
        mic_rate=16000 if mic is not None else 0,
    )
    for problem in problems:
        core.send_error(protocol.ERR_HARDWARE, problem)
    App(core, port, pixels, button, mic, board.FPS).run()
