"""I2S microphone → 16 kHz s16le mono blocks for MIC_AUDIO (MicroPython `machine.I2S`)."""

RATE = 16000
BLOCK_MS = 20


def s32_to_s16(raw: bytearray, out: bytearray, shift: int = 16) -> None:
    """32-bit little-endian samples → 16-bit, keeping bits shift..shift+15 and clipping.

    The lowest byte is dropped first so every value stays a small int on MicroPython (no bigints).
    """
    down = shift - 8
    for i in range(len(raw) // 4):
        j = 4 * i
        v = raw[j + 1] | (raw[j + 2] << 8) | (raw[j + 3] << 16)
        if v & 0x800000:
            v -= 0x1000000
        v = v >> down if down >= 0 else v << -down
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        out[2 * i] = v & 0xFF
        out[2 * i + 1] = (v >> 8) & 0xFF


class I2SMic:
    """Blocking reads of BLOCK_MS of audio; each read paces the main loop while streaming."""

    def __init__(self, sck: int, ws: int, sd: int, bits: int = 16, shift: int = 16, i2s_id: int = 0) -> None:
        from machine import I2S, Pin

        samples = RATE * BLOCK_MS // 1000
        self.bits = bits
        self.shift = shift
        self.raw = bytearray(samples * bits // 8)
        self.pcm = self.raw if bits == 16 else bytearray(samples * 2)
        self.i2s = I2S(
            i2s_id,
            sck=Pin(sck),
            ws=Pin(ws),
            sd=Pin(sd),
            mode=I2S.RX,
            bits=bits,
            format=I2S.MONO,
            rate=RATE,
            ibuf=len(self.raw) * 8,
        )

    def read(self) -> bytes:
        """The next block of 16-bit PCM."""
        n = self.i2s.readinto(self.raw)
        if self.bits == 16:
            return bytes(self.raw[:n])
        s32_to_s16(self.raw, self.pcm, self.shift)
        return bytes(self.pcm[: n // 2])

    def close(self) -> None:
        """Release the I2S peripheral."""
        self.i2s.deinit()
