"""xct-modular-unet: Modular U-Net segmentation of XCT volumes as a MONAI bundle.

`BUNDLE_ROOT` is the folder holding `configs/` and `models/`; the configs use it so that
`initialize` does not depend on the working directory.
"""

from pathlib import Path

from . import (
    backends,
    batch_norm_statistics,
    checkpoints,
    data,
    errors,
    inference,
    io,
    losses,
    metrics,
    networks,
    runtime,
    schedules,
)

BUNDLE_ROOT = str(Path(__file__).resolve().parent.parent)
errors.install_cause_hook()

__all__ = ["BUNDLE_ROOT", "backends", "batch_norm_statistics", "checkpoints", "data", "errors", "inference", "io", "losses", "metrics", "networks", "runtime", "schedules"]
