"""Benchmarks that print figures (JSON); run with `python -m bench`."""
