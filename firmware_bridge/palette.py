"""The one palette: colour, animation and speed for every device state and every emotion.

The firmware and the emulator both render from these tables (through animation.py), so what a maker
sees in the terminal is what the LEDs do. Runs under CPython and MicroPython.

States follow the xiaozhi firmware's single-LED conventions where it has them (idle off, connecting
blue, listening red and brighter while voice is detected, speaking green, activating green 500 ms
blink); error, thinking and offline are ours. Emotions tint and animate the speaking state only.
"""

# Animation kinds (ints are cheap on a microcontroller; KINDS names them for people).
SOLID = 0
BLINK = 1
BREATHE = 2
PULSE = 3
CHASE = 4
TWINKLE = 5
WAVE = 6
FLICKER = 7
RAINBOW = 8
KINDS = ("solid", "blink", "breathe", "pulse", "chase", "twinkle", "wave", "flicker", "rainbow")

# state name: (r, g, b, kind, period_ms, level 0..255)
STATE_LOOKS = {
    "idle": (0, 0, 0, SOLID, 0, 0),  # off; a lamp colour (COLOR) shows here instead
    "connecting": (0, 0, 255, SOLID, 0, 255),
    "listening": (255, 0, 0, SOLID, 0, 70),  # LISTENING_VOICE_LEVEL while voice is detected
    "thinking": (140, 0, 255, BREATHE, 1200, 255),
    "speaking": (0, 255, 0, SOLID, 0, 255),  # the emotion below decides tint and animation
    "offline": (255, 140, 0, SOLID, 0, 50),  # dim amber: no cloud, or no host for a while
    "error": (255, 0, 0, BLINK, 500, 255),
    "activating": (0, 255, 0, BLINK, 1000, 255),  # 500 ms on, 500 ms off
}
LISTENING_VOICE_LEVEL = 255
UNKNOWN_STATE_LOOK = STATE_LOOKS["idle"]

# emotion name: (r, g, b, kind, period_ms) of the tint mixed into speaking green
EMOTION_LOOKS = {
    "neutral": (0, 255, 0, SOLID, 0),
    "happy": (255, 200, 0, BREATHE, 1500),
    "laughing": (255, 170, 0, TWINKLE, 250),
    "funny": (255, 90, 200, TWINKLE, 350),
    "sad": (0, 60, 255, BREATHE, 4000),
    "angry": (255, 0, 0, FLICKER, 120),
    "crying": (0, 120, 255, WAVE, 2500),
    "loving": (255, 0, 110, PULSE, 1100),
    "embarrassed": (255, 70, 120, BREATHE, 2500),
    "surprised": (255, 255, 255, BLINK, 300),
    "shocked": (255, 255, 255, FLICKER, 80),
    "thinking": (120, 0, 255, CHASE, 1200),
    "confident": (255, 180, 0, SOLID, 0),
    "confused": (170, 0, 255, WAVE, 1500),
    "winking": (0, 255, 200, BLINK, 1400),
    "cool": (0, 190, 255, WAVE, 3000),
    "relaxed": (0, 255, 130, BREATHE, 5000),
    "delicious": (255, 110, 0, BREATHE, 1200),
    "kissy": (255, 0, 170, PULSE, 900),
    "sleepy": (70, 50, 255, BREATHE, 6000),
    "silly": (255, 0, 255, RAINBOW, 2000),
}

TINT_MAX = 70
"""Percent of the emotion colour mixed into speaking green at intensity 100."""

VOLUME_SHOW_MS = 1500
"""How long a VOLUME change shows as a white bar."""

BREATHE_FLOOR = 40
"""Lowest level of a breathing animation (0..255), so it never looks switched off."""
