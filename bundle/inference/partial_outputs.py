"""The output files of a streamed segmentation while they are written: raw files under temporary names, addressed
by z-slab, so each slab is one positioned write per output (per class for probabilities) and can be read back to
check what an earlier session left."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ..io import RawInfo, atomic_path
from ..io.atomic import WRITE_ERRNOS, write_failure
from .resume import digest, pwrite_all

__all__ = ["PartialOutputs"]


class PartialOutputs:
    """`paths` ("seg", "prob", "uncertainty" -> final path) of a `shape` (z, y, x) box starting at slice `z_start`.

    Labels and uncertainty are uint8, one byte per voxel; probabilities hold `num_classes` blocks of
    `prob_dtype`, classes as the slowest axis. The bytes live at `atomic_path(path)` until `publish`.
    """

    def __init__(self, paths: Mapping[str, Path], shape: tuple[int, int, int], z_start: int, num_classes: int, prob_dtype: np.dtype) -> None:
        self.paths = dict(paths)
        self.shape = tuple(int(s) for s in shape)
        self.z_start = int(z_start)
        self.num_classes = int(num_classes)
        self.prob_dtype = np.dtype(prob_dtype)

    def partial(self, name: str) -> Path:
        return atomic_path(self.paths[name])

    def sizes(self) -> dict[str, int]:
        """Bytes of each output when complete."""
        voxels = int(np.prod(self.shape))
        return {name: voxels * (self.num_classes * self.prob_dtype.itemsize if name == "prob" else 1) for name in self.paths}

    def intact(self) -> bool:
        """Every partial file is there at its full size (what an interrupted session leaves)."""
        sizes = self.sizes()
        return all(self.partial(n).is_file() and self.partial(n).stat().st_size == sizes[n] for n in self.paths)

    def create(self) -> None:
        """Empty partial files at full size (sparse where the file system allows)."""
        for name, size in self.sizes().items():
            with open(self.partial(name), "wb") as f:
                f.truncate(size)

    def regions(self, name: str, z0: int, z1: int) -> list[tuple[int, int]]:
        """(byte offset, byte count) of slices z0..z1 in output `name`: one region, or one per class for probabilities."""
        plane = self.shape[1] * self.shape[2]
        size = self.prob_dtype.itemsize if name == "prob" else 1
        total = self.shape[0] * plane
        offset = (z0 - self.z_start) * plane
        return [((c * total + offset) * size, (z1 - z0) * plane * size) for c in range(self.num_classes if name == "prob" else 1)]

    def digests(self, z0: int, z1: int) -> dict[str, str]:
        """Digests of what the partial files hold at slices z0..z1 now."""
        found = {}
        for name in self.paths:
            with open(self.partial(name), "rb") as f:
                chunks = []
                for offset, count in self.regions(name, z0, z1):
                    f.seek(offset)
                    chunks.append(np.frombuffer(f.read(count), np.uint8))
            found[name] = digest(np.concatenate(chunks))
        return found

    def write(self, z0: int, z1: int, planes: Mapping[str, np.ndarray], still_needed: Callable[[], int]) -> dict[str, str]:
        """Write slices z0..z1 of each output with positioned writes and flush them; returns their digests.

        Plain `pwrite` + `fsync` (no memory map of the outputs) and `POSIX_FADV_DONTNEED` afterwards keep
        written pages out of this process and out of the page cache it would otherwise fill. A full disk
        or an I/O error becomes an `OutputError` naming the file and `still_needed()` bytes.
        """
        digests = {}
        for name, data in planes.items():
            blocks = data if name == "prob" else data[None]
            regions = self.regions(name, z0, z1)
            partial = self.partial(name)
            try:
                fd = os.open(partial, os.O_WRONLY)
                try:
                    for block, (offset, _) in zip(blocks, regions):
                        pwrite_all(fd, block, offset)
                    os.fsync(fd)
                    for offset, count in regions:
                        os.posix_fadvise(fd, offset, count, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
            except OSError as err:
                if err.errno not in WRITE_ERRNOS:
                    raise
                raise write_failure(partial, err, still_needed=still_needed(), resumes=True) from err
            digests[name] = digest(np.concatenate([np.frombuffer(np.ascontiguousarray(b).data, np.uint8) for b in blocks]))
        return digests

    def infos(self, meta: Mapping) -> dict[str, RawInfo]:
        """The `.raw.info` of each output, carrying the input's scalar and list metadata (voxel size, ...)."""
        extra = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, list))}
        infos = {}
        for name in self.paths:
            prob = name == "prob"
            shape = (self.shape[0] * self.num_classes,) + self.shape[1:] if prob else self.shape
            info_extra = {**extra, **({"NUM_CLASSES": self.num_classes, "CLASS_AXIS": "slowest (z blocks per class)"} if prob else {})}
            dtype = self.prob_dtype if prob else np.dtype(np.uint8)
            infos[name] = RawInfo(shape, dtype.newbyteorder("<"), "<", info_extra)
        return infos
