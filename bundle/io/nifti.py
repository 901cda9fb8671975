"""NIfTI volumes through nibabel's lazy array proxy; NIfTI stores (x, y, z), the bundle reads (z, y, x)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Volume, VolumeError, process_handle

__all__ = ["NIFTI_SUFFIXES", "NiftiVolume"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _load(path: Path):
    import nibabel

    try:
        return nibabel.load(str(path))
    except Exception as err:
        raise VolumeError(f"{path}: not a readable NIfTI file ({err}).") from err


class NiftiVolume(Volume):
    """A 3D NIfTI file, transposed from (x, y, z) to (z, y, x); its zooms are the voxel size."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VolumeError(f"{self.path}: NIfTI file not found.")
        image = _load(self.path)
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise VolumeError(f"{self.path}: expected a 3D grey volume, got NIfTI shape {image.shape}.")
        self.shape = tuple(int(s) for s in shape[::-1])
        self.dtype = np.dtype(image.get_data_dtype())
        self.meta = {"voxel_size": [float(z) for z in image.header.get_zooms()[:3]]}

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        proxy = process_handle("nifti", self.path, lambda: _load(self.path)).dataobj
        index = (xs, ys, slice(z0, z1)) + ((0,) if len(proxy.shape) == 4 else ())
        return np.asarray(proxy[index]).transpose(2, 1, 0)
