"""Reading and writing XCT volumes: raw + sidecar, TIFF stacks, NIfTI, HDF5 / NeXus, Zarr / OME-Zarr."""

from .atomic import atomic_output, atomic_path, write_atomically
from .monai_reader import XCTVolumeReader
from .monai_writer import XCTVolumeWriter
from .sidecar import RawInfo, SidecarError, format_sidecar, parse_sidecar, sidecar_path
from .volumes import Volume, VolumeError, ensure_writable_dir, open_volume, volume_stem, write_volume

__all__ = [
    "RawInfo",
    "SidecarError",
    "Volume",
    "VolumeError",
    "XCTVolumeReader",
    "XCTVolumeWriter",
    "atomic_output",
    "atomic_path",
    "ensure_writable_dir",
    "format_sidecar",
    "open_volume",
    "parse_sidecar",
    "sidecar_path",
    "volume_stem",
    "write_atomically",
    "write_volume",
]
