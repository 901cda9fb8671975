"""Finished partial outputs under their final names and in the format asked for: raw files renamed beside their
`.raw.info`; one OME-Zarr or HDF5 store written slab by slab; or NIfTI / TIFF files converted in memory.

The partial files (and the progress markers the caller keeps) stay until the final files are
complete, so a run killed while converting converts again when restarted, segmenting nothing again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import OutputError
from ..io import RawInfo, format_sidecar, open_volume, sidecar_path, write_volume
from ..io.atomic import WRITE_ERRNOS, write_failure
from ..io.chunked_writer import write_hdf5, write_ome_zarr
from ..io.raw import RawVolume
from .partial_outputs import PartialOutputs

__all__ = ["OUTPUT_EXTENSIONS", "publish_outputs"]

OUTPUT_EXTENSIONS = (".raw", ".nii.gz", ".nii", ".tif", ".tiff", ".zarr", ".h5")


def publish_outputs(
    outputs: PartialOutputs,
    infos: dict[str, RawInfo],
    output_ext: str,
    store_path: Path,
    class_names: Sequence[str],
    voxel_size: Sequence[float],
    still_needed: Callable[[], int],
) -> dict[str, Path]:
    """The final files of `outputs` ("store" -> `store_path` for .zarr / .h5, else one path per output)."""
    if output_ext in (".zarr", ".h5"):
        return {"store": _store(outputs, infos, output_ext, store_path, class_names, voxel_size, still_needed)}
    final = {}
    for name, path in outputs.paths.items():
        sidecar_path(path).write_text(format_sidecar(infos[name]))
        os.replace(outputs.partial(name), path)
        final[name] = path if output_ext == ".raw" else _convert(path, output_ext)
    return final


def _store(outputs, infos, output_ext, target, class_names, voxel_size, still_needed) -> Path:
    """One OME-Zarr or HDF5 store of the partial raws (under a temporary name, slab by slab), then the raws removed."""
    writer = write_ome_zarr if output_ext == ".zarr" else write_hdf5
    try:
        writer(target, {name: RawVolume(outputs.partial(name), infos[name]) for name in outputs.paths}, class_names, voxel_size)
    except OSError as err:
        if err.errno not in WRITE_ERRNOS or isinstance(err, OutputError):
            raise
        raise write_failure(target, err, still_needed=still_needed(), resumes=True) from err
    for name in outputs.paths:
        outputs.partial(name).unlink()
    return target


def _convert(raw_path: Path, output_ext: str) -> Path:
    """A finished raw output as NIfTI or TIFF beside it (in memory), then the raw and its sidecar removed."""
    volume = open_volume(raw_path)
    target = raw_path.with_name(raw_path.name[: -len(".raw")] + output_ext)
    write_volume(target, volume.read(), volume.meta)
    raw_path.unlink()
    sidecar_path(raw_path).unlink()
    return target
