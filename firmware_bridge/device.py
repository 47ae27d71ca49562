"""The board's side of the protocol, without I/O: the firmware and the emulator both run this.

Bytes from the host go to `receive()`, button kinds to `press()`, microphone PCM to `mic()`; frames to
send come out of `take_output()` and the pixels to show out of `pixels()`. Time is passed in (ms on a
clock that wraps at 2**30, like time.ticks_ms). Runs under CPython and MicroPython.
"""

from firmware_bridge import animation, palette, protocol
from firmware_bridge.button import elapsed

OFFLINE = 5  # index of "offline" in protocol.STATES

HOST_TIMEOUT_MS = 3000
"""With no frame from the host for this long the board shows "offline" and stops the microphone."""


class DeviceCore:
    """What the board knows: the host's state, emotion, volume, brightness, lamp colour, raw pixels."""

    def __init__(
        self,
        name: str,
        led_count: int,
        led_type: int = protocol.LED_WS2812,
        button: bool = True,
        mic_rate: int = 0,
        host_timeout_ms: int = HOST_TIMEOUT_MS,
        version: int = protocol.VERSION,
    ) -> None:
        self.hello = protocol.Hello(name, led_count, led_type, button, mic_rate > 0, mic_rate, version)
        self.hello.request = True  # at boot: a host that is already there answers with its HELLO
        self.led_count = led_count
        self.host_timeout_ms = host_timeout_ms
        self.decoder = protocol.Decoder()
        self.encoder = protocol.Encoder()
        self._out: list = []
        self.state = OFFLINE
        self.voice = False
        self.emotion = protocol.NO_EMOTION
        self.intensity = 100
        self.brightness = 50
        self.lamp = (0, 0, 0)
        self.volume = 70
        self._volume_at = -1
        self.raw: bytearray | None = None
        self.host: protocol.Hello | None = None
        self.host_ok = False
        self._host_seen = 0
        self.mic_wanted = False
        self.mic_block = 0
        self.repl_requested = False
        self.last_error = ""
        self._standing: list = []
        self.changes = 0  # bumped whenever what is shown may have changed (the emulator redraws)
        self._out.append(protocol.DELIMITER)  # ends whatever partial frame the host had
        self._send(self.hello)
        self.hello.request = False

    # ------------------------------------------------------------ input
    def receive(self, data: bytes, now: int) -> list:
        """Handle bytes from the host; returns the messages they completed (for logs and monitors)."""
        messages = self.decoder.feed(data)
        for message in messages:
            self._handle(message, now)
        return messages

    def _handle(self, message: protocol.Message, now: int) -> None:
        self._host_seen = now
        if isinstance(message, protocol.Hello):
            self._hello(message)
            return
        if isinstance(message, protocol.Ping):
            self._send(protocol.Pong(message.token))
            return
        if isinstance(message, protocol.Error):
            self.last_error = message.text
            return
        if not self.host_ok:
            return  # no settings from a host we have not shaken hands with (or of another version)
        if isinstance(message, protocol.State):
            self.state = message.state
            self.voice = message.voice
            self.raw = None
        elif isinstance(message, protocol.Emotion):
            self.emotion = message.emotion
            self.intensity = message.intensity
        elif isinstance(message, protocol.Volume):
            self.volume = message.percent
            self._volume_at = now
        elif isinstance(message, protocol.Brightness):
            self.brightness = message.percent
        elif isinstance(message, protocol.Color):
            self.lamp = (message.r, message.g, message.b)
        elif isinstance(message, protocol.LedFrame):
            self._led_frame(message)
        elif isinstance(message, protocol.Repl):
            self.repl_requested = True
        else:
            return
        self.changes += 1

    def _hello(self, hello: protocol.Hello) -> None:
        self.host = hello
        self.changes += 1
        if hello.version != self.hello.version:
            self.host_ok = False
            self.mic_wanted = False
            self.last_error = (
                f"host speaks bridge protocol v{hello.version}, this firmware v{self.hello.version}"
            )
            self._send(protocol.Error(protocol.ERR_VERSION, self.last_error + ": update one of them"))
            self._send(self.hello)
            return
        self.host_ok = True
        self.mic_wanted = bool(hello.mic) and self.hello.mic
        if hello.request:
            self._send(self.hello)
        for error in self._standing:
            self._send(error)

    def _led_frame(self, frame: protocol.LedFrame) -> None:
        size = 3 * self.led_count
        if self.raw is None:
            self.raw = bytearray(size)
        start = 3 * frame.start
        rgb = frame.rgb[: max(0, size - start)]
        self.raw[start : start + len(rgb)] = rgb

    def press(self, kind: int) -> bool:
        """Report a button press to the host; False when no host is listening."""
        if not self.host_ok:
            return False
        self._send(protocol.Button(kind))
        return True

    def mic(self, pcm: bytes) -> bool:
        """Send microphone PCM (16 kHz s16le mono) if the host asked for it; True when queued."""
        if not self.mic_wanted:
            return False
        step = protocol.MAX_PAYLOAD - 2
        for start in range(0, len(pcm), step):
            self._send(protocol.MicAudio(self.mic_block, pcm[start : start + step]))
            self.mic_block = (self.mic_block + 1) & 0xFFFF
        return True

    def log(self, level: int, text: str) -> None:
        """Send a log line to the host (level as in Python logging)."""
        self._send(protocol.Log(level, text))

    def send_error(self, code: int, text: str) -> None:
        """Tell the host something is wrong (code: protocol.ERR_*). A hardware problem is told again
        to every host that says HELLO, since it lasts."""
        self.last_error = text
        if code == protocol.ERR_HARDWARE:
            self._standing.append(protocol.Error(code, text))
        self._send(protocol.Error(code, text))

    def tick(self, now: int) -> None:
        """Notice a silent host: after host_timeout_ms show offline and stop the microphone."""
        if self.host_ok and elapsed(now, self._host_seen) > self.host_timeout_ms:
            self.host_ok = False
            self.mic_wanted = False
            self.changes += 1

    # ------------------------------------------------------------ output
    def _send(self, message: protocol.Message) -> None:
        self._out.append(self.encoder.encode(message))

    def take_output(self) -> bytes:
        """Frames waiting to be written to the host."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out = []
        return data

    def shown_state(self) -> int:
        """The state on the LEDs: the host's, or offline while no host is talking to us."""
        return self.state if self.host_ok else OFFLINE

    def volume_showing(self, now: int) -> bool:
        """True while the volume bar is on after a VOLUME message."""
        return self._volume_at >= 0 and elapsed(now, self._volume_at) < palette.VOLUME_SHOW_MS

    def pixels(self, now: int) -> bytearray:
        """RGB bytes for every LED at time `now`."""
        if self.raw is not None and self.host_ok:
            return self.raw
        if self._volume_at >= 0 and not self.volume_showing(now):
            self._volume_at = -1
        return animation.render(
            self.led_count,
            now,
            self.shown_state(),
            self.voice,
            self.emotion,
            self.intensity,
            self.brightness,
            self.lamp,
            self.volume if self._volume_at >= 0 else -1,
        )
