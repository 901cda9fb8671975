"""`.raw` volumes described by a `.raw.info` sidecar (the paper's data format), read through short-lived memory maps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Volume, VolumeError
from .sidecar import RawInfo, parse_sidecar, sidecar_path

__all__ = ["RawVolume"]


class RawVolume(Volume):
    """A `.raw` file described by its `.raw.info` sidecar (or by `info`).

    Each read maps the file afresh, so pages touched by one slab do not pile up in memory.
    """

    def __init__(self, path: str | os.PathLike, info: RawInfo | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VolumeError(f"{self.path}: raw volume not found.")
        info = (info or parse_sidecar(sidecar_path(self.path))).resolved(self.path)
        self.info = info
        self.shape = info.shape
        self.dtype = np.dtype(info.dtype)
        self.meta = dict(info.extra)

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        if z1 == z0:
            return np.zeros((0,) + self.shape[1:], self.dtype)[:, ys, xs]
        _, ny, nx = self.shape
        mapped = np.memmap(self.path, dtype=self.dtype, mode="r", offset=z0 * ny * nx * self.dtype.itemsize, shape=(z1 - z0, ny, nx))
        try:
            return np.array(mapped[:, ys, xs])
        finally:
            del mapped
