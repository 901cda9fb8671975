"""Lazy access to XCT volumes on disk, in (z, y, x) order whatever the format.

A volume is never loaded whole: `read(z0, z1, ys, xs)` returns only that box, and each call
maps or opens the file afresh so that pages touched by one slab do not pile up in memory.

Axis convention (every reader, writer, transform and inferer of the bundle): arrays are
indexed (z, y, x), the C order of a raw file whose x varies fastest; MONAI tensors are
[C, Z, Y, X]; a 2D slice is an x-y plane at fixed z. NIfTI files store (i, j, k) = (x, y, z):
they are transposed on read and write so the convention holds for them too.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .sidecar import RawInfo, SidecarError, format_sidecar, parse_sidecar, sidecar_path

__all__ = [
    "NiftiVolume",
    "RawVolume",
    "TiffVolume",
    "Volume",
    "VolumeError",
    "open_volume",
    "usable_memory_bytes",
    "volume_stem",
    "write_volume",
]

TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeError(ValueError):
    """A volume file that cannot be used, with the file and the problem in the message."""


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without its volume suffix: `pa66.raw` -> `pa66`, `a.nii.gz` -> `a`, `scan.h5::/exchange/data` -> `scan`."""
    name = Path(str(path).split("::", 1)[0]).name
    for suffix in (".raw", ".nii.gz", ".nii", ".tiff", ".tif", ".hdf5", ".h5", ".hdf", ".nxs", ".nx5", ".zarr"):
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


class RawVolume(Volume):
    """A `.raw` file described by its `.raw.info` sidecar (or by `info`), read through short-lived memory maps."""

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


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class TiffVolume(Volume):
    """A multi-page TIFF or a folder of single-slice TIFFs (natural sort order), read page by page.

    A multi-page file stays open (one handle per process): TIFF pages are a linked list, so a
    file reopened for every page would walk the list from the start each time, a cost that
    grows with the page index (`scripts/benchmark.py tiff-pages`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile

        self.path = Path(path)
        self._tifffile = tifffile
        if self.path.is_dir():
            self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES), key=_natural_key)
            if not self.files:
                raise VolumeError(f"{self.path}: folder holds no .tif/.tiff slice.")
            first, depth = self._page(self.files[0], 0), len(self.files)
        elif self.path.is_file():
            self.files = []
            try:
                with tifffile.TiffFile(self.path) as tif:
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
        self._handle = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_tifffile": None}

    def __setstate__(self, state: dict) -> None:
        import tifffile

        self.__dict__.update(state, _tifffile=tifffile)

    def _open(self):
        """This process's open handle of the multi-page file (reopened after a fork)."""
        if self._handle is None or self._handle[0] != os.getpid():
            try:
                self._handle = (os.getpid(), self._tifffile.TiffFile(self.path))
            except Exception as err:
                raise VolumeError(f"{self.path}: not a readable TIFF ({err}).") from err
        return self._handle[1]

    def _file_page(self, index: int) -> np.ndarray:
        try:
            return self._open().pages[index].asarray()
        except VolumeError:
            raise
        except Exception as err:
            raise VolumeError(f"{self.path}: cannot read TIFF page {index} ({err}).") from err

    def _page(self, file: Path, index: int) -> np.ndarray:
        try:
            return self._tifffile.imread(file, key=index)
        except Exception as err:
            raise VolumeError(f"{file}: cannot read TIFF page {index} ({err}).") from err

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        out = np.empty((z1 - z0,) + np.empty(self.shape[1:], dtype=np.uint8)[ys, xs].shape, self.dtype)
        for i, z in enumerate(range(z0, z1)):
            page = self._page(self.files[z], 0) if self.files else self._file_page(z)
            if page.shape != self.shape[1:]:
                raise VolumeError(f"{self.path}: slice {z} has shape {page.shape}, expected {self.shape[1:]}.")
            out[i] = page[ys, xs]
        return out


class NiftiVolume(Volume):
    """A 3D NIfTI file through nibabel's lazy array proxy, transposed from (x, y, z) to (z, y, x)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import nibabel

        self.path = Path(path)
        if not self.path.is_file():
            raise VolumeError(f"{self.path}: NIfTI file not found.")
        try:
            self._image = nibabel.load(str(self.path))
        except Exception as err:
            raise VolumeError(f"{self.path}: not a readable NIfTI file ({err}).") from err
        shape = self._image.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) != 3:
            raise VolumeError(f"{self.path}: expected a 3D grey volume, got NIfTI shape {self._image.shape}.")
        self.shape = tuple(int(s) for s in shape[::-1])
        self.dtype = np.dtype(self._image.get_data_dtype())
        zooms = self._image.header.get_zooms()[:3]
        self.meta = {"voxel_size": [float(z) for z in zooms]}

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        proxy = self._image.dataobj
        index = (xs, ys, slice(z0, z1)) + ((0,) if len(proxy.shape) == 4 else ())
        return np.asarray(proxy[index]).transpose(2, 1, 0)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it writable, or raise a PermissionError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"{path}: output folder is not writable ({err}); choose another --output_dir.") from err
    return path


def open_volume(path: str | os.PathLike) -> Volume:
    """Open a volume by its file name: `.raw` (+ `.raw.info`), `.tif`/`.tiff` or a TIFF folder, `.nii(.gz)`,
    HDF5 (`.h5`, `.hdf5`, `.nxs`; `scan.h5::/entry/data/data` names a dataset), Zarr / OME-Zarr (`.zarr`)."""
    from .hdf5 import HDF5_SUFFIXES, Hdf5Volume, split_inner_path
    from .zarr_store import ZarrVolume, is_zarr

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
            os.replace(sidecar_tmp, sidecar_path(path))
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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
