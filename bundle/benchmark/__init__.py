"""Measurements the docs cite, importable and tested; `scripts/benchmark.py` is their command-line face."""
