"""LED frames from the palette: state, emotion and time in, one RGB byte triple per pixel out.

Integer arithmetic only, so the firmware (MicroPython) and the emulator (CPython) compute the very
same pixels for the same inputs; the tests compare them byte for byte.
"""

from firmware_bridge import palette
from firmware_bridge.palette import (
    BLINK,
    BREATHE,
    CHASE,
    FLICKER,
    PULSE,
    RAINBOW,
    SOLID,
    TWINKLE,
    WAVE,
)
from firmware_bridge.protocol import EMOTIONS, STATES

SPEAKING = 4  # index of "speaking" in protocol.STATES
LISTENING = 2
IDLE = 0


def noise(a: int, b: int) -> int:
    """A deterministic 0..255 value from two small ints (twinkle, flicker); small-int math only."""
    h = (a * 251 + b * 163 + 17) & 0xFFFF
    h ^= h >> 5
    h = (h * 109) & 0xFFFF
    h ^= h >> 7
    h = (h * 37) & 0xFFFF
    return (h ^ (h >> 8)) & 0xFF


def triangle(phase: int, period: int) -> int:
    """0 -> 255 -> 0 over one period."""
    if period <= 0:
        return 255
    phase %= period
    half = period // 2 or 1
    if phase < half:
        return phase * 255 // half
    return (period - phase) * 255 // (period - half or 1)


def wheel(pos: int) -> tuple:
    """A fully saturated colour around the hue circle (0..255)."""
    pos &= 0xFF
    if pos < 85:
        return (255 - pos * 3, pos * 3, 0)
    if pos < 170:
        pos -= 85
        return (0, 255 - pos * 3, pos * 3)
    pos -= 170
    return (pos * 3, 0, 255 - pos * 3)


def level(kind: int, period: int, t: int, i: int, count: int) -> int:
    """Brightness 0..255 of pixel i (of count) at time t ms for one animation kind."""
    if kind == SOLID or period <= 0:
        return 255
    if kind == BLINK:
        return 255 if (t % period) < period // 2 else 0
    if kind == BREATHE:
        tri = triangle(t, period)
        floor = palette.BREATHE_FLOOR
        return floor + (255 - floor) * (tri * tri // 255) // 255
    if kind == PULSE:  # a heartbeat: two short beats, then rest
        p = (t % period) * 100 // period
        return 255 if p < 12 or 25 <= p < 37 else 60
    if kind == CHASE:
        if count < 3:
            return level(BREATHE, period, t, i, count)
        head = (t % period) * count // period
        distance = (i - head) % count
        return 255 if distance == 0 else 110 if distance in (1, count - 1) else 30
    if kind == TWINKLE:
        return 70 + noise(i, t // period) * 185 // 255
    if kind == WAVE:
        offset = period * i // count if count else 0
        return 30 + triangle(t + offset, period) * 225 // 255
    if kind == FLICKER:
        return 110 + noise(i + 97, t // period) * 145 // 255
    return 255


def mix(a: tuple, b: tuple, percent: int) -> tuple:
    """`percent` of colour b over colour a."""
    keep = 100 - percent
    return (
        (a[0] * keep + b[0] * percent) // 100,
        (a[1] * keep + b[1] * percent) // 100,
        (a[2] * keep + b[2] * percent) // 100,
    )


def render(
    count: int,
    t: int,
    state: int,
    voice: bool = False,
    emotion: int = 0,
    intensity: int = 100,
    brightness: int = 100,
    lamp: tuple = (0, 0, 0),
    volume: int = -1,
) -> bytearray:
    """RGB bytes (3 per pixel) for one frame.

    state/emotion are protocol wire indexes; `volume` >= 0 draws the volume bar instead (shown for
    palette.VOLUME_SHOW_MS after a VOLUME message); brightness 0..100 scales everything.
    """
    out = bytearray(3 * count)
    if count <= 0:
        return out
    scale = brightness if brightness < 100 else 100
    if scale <= 0:
        return out
    if volume >= 0:
        return _volume_bar(out, count, volume, scale)
    name = STATES[state] if 0 <= state < len(STATES) else ""
    look = palette.STATE_LOOKS.get(name, palette.UNKNOWN_STATE_LOOK)
    base = (look[0], look[1], look[2])
    kind = look[3]
    period = look[4]
    peak = look[5]
    rainbow = False
    if state == IDLE and (lamp[0] or lamp[1] or lamp[2]):
        base = (lamp[0], lamp[1], lamp[2])
        peak = 255
    elif state == LISTENING and voice:
        peak = palette.LISTENING_VOICE_LEVEL
    elif state == SPEAKING and 0 <= emotion < len(EMOTIONS):
        tint = palette.EMOTION_LOOKS[EMOTIONS[emotion]]
        base = mix(base, (tint[0], tint[1], tint[2]), palette.TINT_MAX * intensity // 100)
        kind = tint[3]
        period = tint[4]
        rainbow = kind == RAINBOW
    if peak <= 0:
        return out
    for i in range(count):
        if rainbow:
            colour = wheel((t * 256 // period if period else 0) + i * 256 // count)
            lvl = 255
        else:
            colour = base
            lvl = level(kind, period, t, i, count)
        factor = lvl * peak // 255 * scale  # 0..25500
        j = 3 * i
        out[j] = colour[0] * factor // 25500
        out[j + 1] = colour[1] * factor // 25500
        out[j + 2] = colour[2] * factor // 25500
    return out


def _volume_bar(out: bytearray, count: int, volume: int, scale: int) -> bytearray:
    if count == 1:  # a single pixel shows the volume as its brightness
        value = 255 * volume // 100 * scale // 100
        out[0] = out[1] = out[2] = value
        return out
    lit = (count * volume + 50) // 100
    value = 255 * scale // 100
    for i in range(lit):
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = value
    return out
