"""Board configuration for the bridge firmware: edit the pins here, or let
`companion bridge flash --board ... --led-pin ...` write this file for you.

Defaults: ESP32-S3-DevKitC-1 (one WS2812 on GPIO48, BOOT button on GPIO0, native USB).
"""

NAME = "esp32s3-devkitc"

# "console": the port MicroPython's REPL uses (native USB-CDC on S2/S3/C3, or UART0 behind the
# USB-serial chip on a classic ESP32). "uart": a separate UART on UART_TX/UART_RX (e.g. wired to a
# Raspberry Pi's GPIO UART).
TRANSPORT = "console"
UART_ID = 1
UART_TX = 17
UART_RX = 18
BAUDRATE = 921600
# Classic ESP32 console on UART0 runs at 115200; set e.g. 921600 here to switch it after boot (and
# set [bridge] baudrate to match). None leaves it alone.
CONSOLE_BAUDRATE = None

LED_PIN = 48  # None: no LEDs
LED_COUNT = 1
LED_TYPE = 1  # 1 = WS2812/SK6812 (GRB), the only kind this firmware drives

BUTTON_PIN = 0  # None: no button
BUTTON_ACTIVE_LOW = True

# I2S microphone (INMP441, SPH0645 …), L/R pin to GND; None: no microphone.
MIC_SCK = None
MIC_WS = None
MIC_SD = None
MIC_BITS = 16  # 16 reads the top 16 bits directly; 32 reads full slots and shifts by MIC_SHIFT
MIC_SHIFT = 16  # with MIC_BITS = 32: 16 = unity, 14 = +12 dB

FPS = 50
