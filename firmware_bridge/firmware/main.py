"""Bridge firmware entry point (MicroPython runs main.py after boot)."""

import app

app.main()
