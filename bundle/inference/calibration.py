"""Network inputs for int8 calibration, read from a real volume the way inference reads it.

Calibration sets the int8 ranges of every activation, so it must see the grey levels and
structures the model will meet: evenly spaced slices (2D, 2.5D with their neighbours as
channels) or blocks (3D) of a volume, centred tiles of the inference tile size, grey-normalised
with the model's window.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..data.grey import normalise_grey
from ..io import open_volume

__all__ = ["calibration_batches"]


def calibration_batches(
    path: str | os.PathLike,
    grey_window: Sequence[float],
    in_channels: int,
    spatial_dims: int,
    roi_size: Sequence[int],
    batches: int = 10,
    batch_size: int = 4,
    size_multiple: int = 8,
) -> tuple[list[np.ndarray], dict]:
    """`batches` arrays of `batch_size` samples from `path`, and the facts that identify them (for the cache and provenance)."""
    volume = open_volume(path)
    depth, height, width = volume.shape
    tile = [min(int(r), s) // size_multiple * size_multiple for r, s in zip(roi_size[-2:], (height, width))]
    if min(tile) < size_multiple:
        raise ValueError(f"{volume.path}: planes of {height}x{width} are smaller than the network's {size_multiple}-voxel stride.")
    thick = in_channels if spatial_dims == 2 else min(int(roi_size[0]), depth) // size_multiple * size_multiple
    if thick < 1 or depth < thick:
        raise ValueError(f"{volume.path}: {depth} slices are too few for calibration samples {thick} slices thick.")
    ys = slice((height - tile[0]) // 2, (height - tile[0]) // 2 + tile[0])
    xs = slice((width - tile[1]) // 2, (width - tile[1]) // 2 + tile[1])
    starts = np.linspace(0, depth - thick, batches * batch_size).round().astype(int)
    samples = np.stack([normalise_grey(volume.read(int(z), int(z) + thick, ys, xs), grey_window) for z in starts])
    if spatial_dims == 3:
        samples = samples[:, None]
    stat = volume.path.stat()
    facts = {
        "calibration_volume": str(volume.path.resolve()) + (f"::{volume.key}" if getattr(volume, "key", "") else ""),
        "calibration_size": stat.st_size,
        "calibration_mtime": stat.st_mtime_ns,
        "calibration_starts_z": starts.tolist(),
        "calibration_tile_yx": [[ys.start, ys.stop], [xs.start, xs.stop]],
        "grey_window": [float(v) for v in grey_window],
    }
    return [np.ascontiguousarray(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)], facts
