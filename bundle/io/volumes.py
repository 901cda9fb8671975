"""The format registry: `open_volume` picks the reader by the file name, `write_volume` the writer.

Every reader returns a `Volume` indexed (z, y, x) whatever the format (NIfTI is transposed on
read and write); a volume is never loaded whole: `read(z0, z1, ys, xs)` returns only that box.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import WRITE_ERRNOS, atomic_path, durable_replace, write_failure
from .base import Volume, VolumeError, ensure_writable_dir, split_inner_path, usable_memory_bytes, volume_stem
from .hdf5 import HDF5_SUFFIXES, Hdf5Volume
from .nifti import NIFTI_SUFFIXES, NiftiVolume
from .raw import RawVolume
from .sidecar import RawInfo, SidecarError, format_sidecar, sidecar_path
from .tiff import TIFF_SUFFIXES, TiffVolume
from .zarr_store import ZarrVolume, is_zarr

__all__ = [
    "NIFTI_SUFFIXES",
    "TIFF_SUFFIXES",
    "Hdf5Volume",
    "NiftiVolume",
    "RawVolume",
    "TiffVolume",
    "Volume",
    "VolumeError",
    "ZarrVolume",
    "ensure_writable_dir",
    "open_volume",
    "usable_memory_bytes",
    "volume_stem",
    "write_volume",
]


def open_volume(path: str | os.PathLike) -> Volume:
    """Open a volume by its file name: `.raw` (+ `.raw.info`), `.tif`/`.tiff` or a TIFF folder, `.nii(.gz)`,
    HDF5 (`.h5`, `.hdf5`, `.nxs`; `scan.h5::/entry/data/data` names a dataset), Zarr / OME-Zarr (`.zarr`)."""
    outer, _ = split_inner_path(path)
    if outer.name.lower().endswith(HDF5_SUFFIXES):
        return Hdf5Volume(path)
    if is_zarr(path):
        return ZarrVolume(path)
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".raw"):
            return RawVolume(path)
        if name.endswith(NIFTI_SUFFIXES):
            return NiftiVolume(path)
        if name.endswith(TIFF_SUFFIXES) or path.is_dir():
            return TiffVolume(path)
    except SidecarError as err:
        raise VolumeError(str(err)) from err
    if not path.exists():
        raise VolumeError(f"{path}: volume not found.")
    raise VolumeError(f"{path}: unknown volume format; expected .raw (+ .raw.info), .tif/.tiff, a TIFF folder, .nii/.nii.gz, .h5 or .zarr.")


def write_volume(path: str | os.PathLike, array: np.ndarray, meta: dict | None = None) -> Path:
    """Write a (z, y, x) array as raw (+ sidecar), multi-page TIFF or NIfTI, atomically by rename."""
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise VolumeError(f"{path}: can only write 3D (z, y, x) volumes, got shape {array.shape}.")
    meta = dict(meta or {})
    tmp = atomic_path(path)
    name = path.name.lower()
    try:
        if name.endswith(".raw"):
            array = np.ascontiguousarray(array)
            array.tofile(tmp)
            sidecar_tmp = atomic_path(sidecar_path(path))
            sidecar_tmp.write_text(format_sidecar(RawInfo(array.shape, array.dtype, "<", meta)))
            durable_replace(sidecar_tmp, sidecar_path(path))
        elif name.endswith(TIFF_SUFFIXES):
            import tifffile

            tifffile.imwrite(tmp, array, photometric="minisblack", metadata=None)
        elif name.endswith(NIFTI_SUFFIXES):
            import nibabel

            voxel = meta.get("voxel_size", [1.0, 1.0, 1.0])
            voxel = voxel if isinstance(voxel, list) else [float(voxel)] * 3
            image = nibabel.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), np.diag(list(map(float, voxel)) + [1.0]))
            tmp = tmp.with_name(tmp.name.replace(".partial", "") + ".partial" + (".nii.gz" if name.endswith(".gz") else ".nii"))
            nibabel.save(image, str(tmp))
        else:
            raise VolumeError(f"{path}: unknown output format; use .raw, .tif/.tiff or .nii/.nii.gz.")
        durable_replace(tmp, path)
    except OSError as err:
        if err.errno in WRITE_ERRNOS:
            raise write_failure(path, err) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
