"""Measurements the docs cite, importable and tested: `measure` takes them (JSON), `render` writes the docs tables
from them, `full_disk` fills a real disk mid-run. `scripts/benchmark.py` is their command-line face."""

import json

from ..runtime import machine_class
from .measure import (
    backends,
    big_volume,
    compare,
    edges,
    flops,
    formats,
    forward,
    full_disk,
    inference,
    matmul,
    memory,
    params,
    seamless,
    suite,
    tiff_pages,
    train_workflow,
)
from .render import render, rendered_docs, report

__all__ = ["COMMANDS", "render", "rendered_docs"]

COMMANDS = {
    "params": params,
    "flops": flops,
    "matmul": matmul,
    "forward": forward,
    "train-workflow": train_workflow,
    "machine": lambda: print(json.dumps(machine_class())),
    "inference": inference,
    "compare": compare,
    "big-volume": big_volume,
    "suite": suite,
    "edges": edges,
    "memory": memory,
    "report": report,
    "tiff-pages": tiff_pages,
    "seamless": seamless,
    "backends": backends,
    "formats": formats,
    "full-disk": full_disk,
}
