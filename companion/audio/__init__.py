"""Capture, speaker, endpointer, codecs, resampling and device lookup; no network."""
