"""What every volume reader shares: the `Volume` interface, its error, paths, and per-process handles.

Axis convention (every reader, writer, transform and inferer of the bundle): arrays are
indexed (z, y, x), the C order of a raw file whose x varies fastest; MONAI tensors are
[C, Z, Y, X]; a 2D slice is an x-y plane at fixed z.

A reader holds only plain values (paths, shape, dtype, metadata): MONAI's DataLoader walks a
dataset's attributes to seed it (`set_rnd`), worker processes receive it pickled, and
`deepcopy` copies it. Library handles (an open TIFF, a Zarr array, a NIfTI proxy) live in a
cache of this process, keyed by the process id, and are opened on the first read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError

__all__ = [
    "Volume",
    "VolumeError",
    "ensure_writable_dir",
    "process_handle",
    "split_inner_path",
    "usable_memory_bytes",
    "volume_stem",
]

SEPARATOR = "::"
VOLUME_SUFFIXES = (".raw", ".nii.gz", ".nii", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".hdf5", ".h5", ".hdf", ".nxs", ".nx5", ".zarr")


class VolumeError(ValueError):
    """A volume file that cannot be used, with the file and the problem in the message."""


def split_inner_path(path: str | os.PathLike) -> tuple[Path, str]:
    """`scan.h5::/entry/data/data` -> (Path('scan.h5'), '/entry/data/data'); no '::' gives an empty inner path."""
    text = str(path)
    if SEPARATOR in text:
        outer, inner = text.split(SEPARATOR, 1)
        return Path(outer), "/" + inner.strip("/")
    return Path(text), ""


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without its volume suffix: `pa66.raw` -> `pa66`, `a.nii.gz` -> `a`, `scan.h5::/exchange/data` -> `scan`."""
    name = split_inner_path(path)[0].name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def usable_memory_bytes(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Memory this process may use: physical memory, capped by the cgroup limit (v2 `memory.max`, v1 `limit_in_bytes`)."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            value = (cgroup_root / name).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            limit = min(limit, int(value))
    return limit


_HANDLES: dict[tuple, Any] = {}


def process_handle(kind: str, path: Path, opener: Callable[[], Any]) -> Any:
    """The handle `opener()` gives for the file at `path`, opened once in this process (a forked worker opens
    its own); a file replaced since (other size or modification time) is opened again."""
    stat = path.stat()
    full = (os.getpid(), kind, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if full not in _HANDLES:
        for stale in [k for k in _HANDLES if k[0] != full[0] or k[1:3] == full[1:3]]:
            handle = _HANDLES.pop(stale)
            if stale[0] == full[0] and hasattr(handle, "close"):
                handle.close()
        _HANDLES[full] = opener()
    return _HANDLES[full]


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it writable, or raise an `OutputError` naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{path}: output folder is not writable ({err.strerror or err}); choose another --output_dir.") from err
    return path


class Volume:
    """A read-only volume: `shape` (z, y, x), `dtype`, `meta` (sidecar extras, voxel size)."""

    path: Path
    shape: tuple[int, int, int]
    dtype: np.dtype
    meta: dict

    def read(self, z0: int = 0, z1: int | None = None, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
        """The box [z0:z1, ys, xs] as a new native-endian array."""
        z1 = self.shape[0] if z1 is None else z1
        if not 0 <= z0 <= z1 <= self.shape[0]:
            raise VolumeError(f"{self.path}: z range [{z0}, {z1}) is outside the volume's depth {self.shape[0]}.")
        return np.ascontiguousarray(self._read(z0, z1, ys, xs), dtype=self.dtype.newbyteorder("="))

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        raise NotImplementedError

    def _check_chunked(self, chunks: tuple[int, ...] | None, hint: str) -> None:
        """Refuse non-grey dtypes and chunks too large to decompress; warn when chunks span the whole depth.

        A read decompresses every chunk it touches, so the smallest read of a full plane needs one
        z-row of chunks in memory; more than half of what this process may use is refused.
        """
        if self.dtype.kind not in "uif":
            raise VolumeError(f"{self.path}: holds {self.dtype}, not grey values (integers or floats).")
        if chunks:
            row = chunks[0] * -(-self.shape[1] // chunks[1]) * chunks[1] * -(-self.shape[2] // chunks[2]) * chunks[2] * self.dtype.itemsize
            limit = usable_memory_bytes()
            if row > limit / 2:
                raise VolumeError(
                    f"{self.path}: chunks {tuple(chunks)} (z, y, x) make each read decompress {row / 2**30:.2f} GiB, more than half "
                    f"of the {limit / 2**30:.2f} GiB this process may use; {hint}"
                )
        if chunks and chunks[0] == self.shape[0] and self.shape[0] > 64:
            logging.getLogger(__name__).warning(
                "%s: chunks %s span the full depth, so each slab reads the whole volume; %s", self.path, chunks, hint
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, shape(z,y,x)={self.shape}, dtype={self.dtype.name})"
