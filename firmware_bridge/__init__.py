"""firmware_bridge: a framed serial protocol, host link, emulator and MicroPython firmware for an
ESP32 that shows a voice assistant's state and emotions on LEDs, reports button presses and can be
its microphone.

Stands alone: it never imports `companion`. The modules copied to the board (protocol, palette,
animation, button, device) run unchanged under CPython and MicroPython; link, ports, emulator and
flash are host-only.
"""

PORTABLE_MODULES = ("protocol", "palette", "animation", "button", "device")
"""The modules of this package that the firmware uses; `companion bridge flash` copies them."""
