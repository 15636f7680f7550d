"""Benchmarks of the real server against the stand-ins; `python -m bench` runs them all."""
