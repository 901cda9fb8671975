"""HDF5 / NeXus volumes as beamline pipelines write them (tomopy/dxchange, nabu, savu), read slab by slab.

A file holds many datasets, so the volume is named `scan.h5::/entry/data/data`; without a
name the file's `/exchange/data` (dxchange) is taken, else its only 3D dataset. Compressed
datasets (Blosc, bitshuffle-LZ4, Zstd ...) read through the filters `hdf5plugin` registers. A
read costs the chunks it touches, so chunks that span the whole depth make every slab read
the whole file; that layout is reported once with a hint.
"""

from __future__ import annotations

import os

import numpy as np

from .base import Volume, VolumeError, split_inner_path

__all__ = ["HDF5_SUFFIXES", "Hdf5Volume"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5")
def _datasets_3d(handle) -> list[str]:
    import h5py

    found = []
    handle.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
    return found

class Hdf5Volume(Volume):
    """A 3D (z, y, x) dataset of an HDF5 file, opened per read (no handle kept across processes)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import h5py
        import hdf5plugin  # noqa: F401 - registers the compression filters beamline files use

        self.path, inner = split_inner_path(path)
        if not self.path.is_file():
            raise VolumeError(f"{self.path}: HDF5 file not found.")
        try:
            with h5py.File(self.path, "r") as f:
                self.key = inner or self._default_key(f)
                if self.key not in f:
                    raise VolumeError(f"{self.path}: no dataset {self.key}; its 3D datasets: {', '.join(_datasets_3d(f)) or 'none'}.")
                dataset = f[self.key]
                if not isinstance(dataset, h5py.Dataset):
                    raise VolumeError(f"{self.path}: {self.key} is a group, not a dataset; its 3D datasets: {', '.join(_datasets_3d(f)) or 'none'}.")
                if dataset.ndim != 3:
                    raise VolumeError(f"{self.path}: dataset {self.key} has shape {dataset.shape}; a (z, y, x) volume has 3 axes.")
                self.shape = tuple(int(s) for s in dataset.shape)
                self.dtype = np.dtype(dataset.dtype)
                self.chunks = dataset.chunks
                self.meta = {k: v.item() if isinstance(v, np.generic) else v for k, v in dataset.attrs.items() if isinstance(v, (int, float, str, np.generic))}
        except OSError as err:
            raise VolumeError(f"{self.path}: not a readable HDF5 file ({err}).") from err
        self._check_chunked(self.chunks, f"rechunk {self.key} along z (e.g. h5repack -l {self.key}:CHUNK=8x{self.shape[1]}x{self.shape[2]}).")

    def _default_key(self, handle) -> str:
        if "/exchange/data" in handle:
            return "/exchange/data"
        found = _datasets_3d(handle)
        if len(found) == 1:
            return found[0]
        if not found:
            raise VolumeError(f"{self.path}: holds no 3D dataset.")
        raise VolumeError(f"{self.path}: holds several 3D datasets ({', '.join(found)}); name one as {self.path}::/path/to/data.")

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        import h5py
        import hdf5plugin  # noqa: F401

        try:
            with h5py.File(self.path, "r") as f:
                return f[self.key][z0:z1, ys, xs]
        except OSError as err:
            raise VolumeError(f"{self.path}: cannot read {self.key} z {z0}-{z1} ({err}); a compressed dataset needs its filter (pip install hdf5plugin).") from err
