"""napari reader (npe2 manifest `bundle/napari.yaml`) for `.raw` + `.raw.info` volumes and the bundle's outputs.

`napari scan.raw out/scan.seg.raw` shows the scan in grey and the labels with the class names
and colours of the OME-Zarr output; `.uncertainty.raw` opens as an image, `.prob.raw` as one
image per class. Files are memory-mapped, so napari reads only the slices it shows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .io.chunked_writer import COLOURS
from .io.sidecar import parse_sidecar, sidecar_path

__all__ = ["get_reader", "read_raw"]

CLASS_NAMES = ("matrix", "fibre", "porosity")
LABEL_SUFFIXES = (".seg.raw", ".ground_truth.raw", ".annotations.raw")


def get_reader(path: str | list[str]) -> Callable | None:
    """napari's reader hook: `read_raw` for a `.raw` file with its sidecar, None for anything else."""
    if isinstance(path, list):
        path = path[0] if len(path) == 1 else ""
    path = str(path)
    return read_raw if path.endswith(".raw") and sidecar_path(path).is_file() else None


def read_raw(path: str | list[str]) -> list[tuple]:
    """Layer data tuples of one raw volume: labels, per-class probabilities, an uncertainty map or a grey image."""
    path = Path(path[0] if isinstance(path, list) else path)
    info = parse_sidecar(sidecar_path(path)).resolved(path)
    data = np.memmap(path, dtype=np.dtype(info.dtype), mode="r", shape=info.shape)
    scale = [float(info.extra.get("VOXEL_SIZE", 1.0))] * 3
    name = path.name[: -len(".raw")]
    if path.name.endswith(LABEL_SUFFIXES):
        colours = {i: np.array(COLOURS[i % len(COLOURS)]) / 255 for i in range(len(CLASS_NAMES))}
        colours[None] = np.zeros(4)
        features = {"class": [*CLASS_NAMES, *(["not annotated"] if path.name.endswith(".annotations.raw") else [])]}
        return [(data, {"name": name, "scale": scale, "colormap": colours, "features": features}, "labels")]
    if path.name.endswith(".prob.raw"):
        classes = int(info.extra.get("NUM_CLASSES", len(CLASS_NAMES)))
        data = data.reshape(classes, -1, *info.shape[1:])
        high = 255 if data.dtype == np.uint8 else 1
        names = [f"{name} {c}" for c in CLASS_NAMES[:classes]]
        return [(data, {"name": names, "scale": scale, "channel_axis": 0, "contrast_limits": [0, high], "colormap": "magma"}, "image")]
    if path.name.endswith(".uncertainty.raw"):
        return [(data, {"name": name, "scale": scale, "contrast_limits": [0, 255], "colormap": "inferno"}, "image")]
    return [(data, {"name": name, "scale": scale, "colormap": "gray"}, "image")]
