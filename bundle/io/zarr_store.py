"""Zarr (v2 / v3) arrays and OME-Zarr images (NGFF 0.4 and 0.5), read slab by slab with `zarr`.

An OME-Zarr group is read at its full resolution (the first multiscale dataset), its axes put
in (z, y, x) order from the metadata (channel or time axes must have one entry), and the voxel
size taken from its scale transform. A plain array is taken as (z, y, x). `scan.zarr::labels/0`
names an array inside a group.
"""

from __future__ import annotations

import os

import numpy as np

from .base import Volume, VolumeError, process_handle, split_inner_path

__all__ = ["ZarrVolume", "is_zarr"]

def is_zarr(path: str | os.PathLike) -> bool:
    """A folder with Zarr metadata (v3 `zarr.json`, v2 `.zarray` / `.zgroup`) or named `*.zarr`."""
    outer, _ = split_inner_path(path)
    return outer.name.lower().endswith(".zarr") or any((outer / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))

def _multiscales(attrs: dict) -> list | None:
    return (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales")


def _open_node(path, inner: str):
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
        return node[inner.strip("/")] if inner else node
    except Exception as err:  # zarr raises several types for a folder it cannot read
        raise VolumeError(f"{path}: not a readable Zarr store{' at ' + inner if inner else ''} ({type(err).__name__}: {err}).") from err


class ZarrVolume(Volume):
    """A 3D (z, y, x) view of a Zarr array or of an OME-Zarr image's full-resolution level.

    The array is named by `array_path` inside the store and opened on the first read in each process.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import zarr

        self.path, inner = split_inner_path(path)
        if not self.path.exists():
            raise VolumeError(f"{self.path}: Zarr store not found.")
        node = _open_node(self.path, inner)
        self.array_path = inner.strip("/")
        self.meta: dict = {}
        axes = "zyx"
        if isinstance(node, zarr.Group):
            multiscales = _multiscales(dict(node.attrs))
            if not multiscales:
                arrays = [name for name, _ in node.arrays()]
                raise VolumeError(f"{self.path}: a Zarr group without OME-Zarr multiscales; name an array as {self.path}::NAME ({', '.join(arrays) or 'none'}).")
            scale = multiscales[0]
            level = scale["datasets"][0]
            axes = "".join(a["name"] if isinstance(a, dict) else a for a in scale.get("axes", [])) or "zyx"
            node = node[level["path"]]
            self.array_path = f"{self.array_path}/{level['path']}".strip("/")
            for transform in level.get("coordinateTransformations", []):
                if transform.get("type") == "scale":
                    voxel = dict(zip(axes, transform["scale"]))
                    self.meta["voxel_size"] = [float(voxel.get(a, 1.0)) for a in "zyx"]
        if len(axes) != node.ndim or not set("zyx") <= set(axes):
            raise VolumeError(f"{self.path}: array of shape {node.shape} with axes {axes!r}; a (z, y, x) volume needs z, y and x axes.")
        extra = {a: n for a, n in zip(axes, node.shape) if a not in "zyx"}
        if any(n != 1 for n in extra.values()):
            raise VolumeError(f"{self.path}: axes {', '.join(f'{a} of {n}' for a, n in extra.items())}; a grey volume has one channel and one time point.")
        self.axes = axes
        self.shape = tuple(int(node.shape[axes.index(a)]) for a in "zyx")
        self.dtype = np.dtype(node.dtype)
        self.chunks = tuple(int(node.chunks[axes.index(a)]) for a in "zyx")
        self._check_chunked(self.chunks, "rechunk along z for streamed reading.")

    def _metadata_file(self):
        """The file whose change means the store was rewritten: the array's metadata."""
        folder = self.path / self.array_path
        return next((folder / n for n in ("zarr.json", ".zarray") if (folder / n).is_file()), folder)

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        index = tuple({"z": slice(z0, z1), "y": ys, "x": xs}.get(a, 0) for a in self.axes)
        kept = [a for a in self.axes if a in "zyx"]
        array = process_handle(f"zarr:{self.array_path}", self._metadata_file(), lambda: _open_node(self.path, self.array_path))
        try:
            data = np.asarray(array[index])
        except Exception as err:
            raise VolumeError(f"{self.path}: cannot read z {z0}-{z1} ({type(err).__name__}: {err}).") from err
        return data.transpose([kept.index(a) for a in "zyx"])
