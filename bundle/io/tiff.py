"""TIFF stacks: one multi-page file, or a folder of single-slice files in natural sort order."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .base import Volume, VolumeError, process_handle

__all__ = ["TIFF_SUFFIXES", "TiffVolume"]

TIFF_SUFFIXES = (".tif", ".tiff")


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _open_tiff(path: Path):
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except Exception as err:
        raise VolumeError(f"{path}: not a readable TIFF ({err}).") from err


class TiffVolume(Volume):
    """A multi-page TIFF or a folder of single-slice TIFFs, read page by page.

    A multi-page file stays open, one handle per process: TIFF pages are a linked list, so a
    file reopened for every page would walk the list from the start each time, a cost that
    grows with the page index (`scripts/benchmark.py tiff-pages`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=_natural_key)
            if not self.files:
                raise VolumeError(f"{self.path}: folder holds no .tif/.tiff slice.")
            first, depth = self._slice_file(self.files[0]), len(self.files)
        elif self.path.is_file():
            self.files = []
            with _open_tiff(self.path) as tif:
                try:
                    depth = len(tif.pages)
                    first = tif.pages[0].asarray()
                except Exception as err:
                    raise VolumeError(f"{self.path}: not a readable TIFF ({err}).") from err
        else:
            raise VolumeError(f"{self.path}: TIFF file or folder not found.")
        if first.ndim != 2:
            raise VolumeError(f"{self.path}: TIFF pages must be 2D grey images, got page shape {first.shape}.")
        self.shape = (depth,) + first.shape
        self.dtype = first.dtype
        self.meta = {}

    def _file_page(self, index: int) -> np.ndarray:
        tif = process_handle("tiff", self.path, lambda: _open_tiff(self.path))
        try:
            return tif.pages[index].asarray()
        except Exception as err:
            raise VolumeError(f"{self.path}: cannot read TIFF page {index} ({err}).") from err

    @staticmethod
    def _slice_file(file: Path) -> np.ndarray:
        import tifffile

        try:
            return tifffile.imread(file, key=0)
        except Exception as err:
            raise VolumeError(f"{file}: cannot read TIFF page 0 ({err}).") from err

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        out = np.empty((z1 - z0,) + np.empty(self.shape[1:], dtype=np.uint8)[ys, xs].shape, self.dtype)
        for i, z in enumerate(range(z0, z1)):
            page = self._slice_file(self.files[z]) if self.files else self._file_page(z)
            if page.shape != self.shape[1:]:
                raise VolumeError(f"{self.path}: slice {z} has shape {page.shape}, expected {self.shape[1:]}.")
            out[i] = page[ys, xs]
        return out
