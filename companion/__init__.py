"""companion: an edge voice runtime (microphone → VAD → Opus → voice agent → ordered speech and LEDs)."""

__version__ = "0.1.0"
