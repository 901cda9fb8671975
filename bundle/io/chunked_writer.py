"""The finished outputs of a segmentation as one OME-Zarr image (NGFF 0.5) or one HDF5 file, written slab by slab.

OME-Zarr: the uncertainty map is the image (or the labels, when no uncertainty was kept), the
labels an image-label under `labels/segmentation` with class names and colours, the
probabilities a multiscale image under `probabilities` (classes as the `c` axis); every image
has a pyramid halving z, y and x per level (nearest for labels, block mean for the rest) and
the input's voxel size. napari and the `ome-zarr` package open it with its labels.
HDF5: datasets `segmentation`, `uncertainty`, `probabilities` (chunked, gzip).
Only one slab of each output is in memory at a time; the store is written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_output, durable_replace
from .base import Volume

__all__ = ["COLOURS", "write_hdf5", "write_ome_zarr"]

COLOURS = ([200, 200, 200, 0], [255, 160, 0, 255], [0, 120, 255, 255], [220, 40, 40, 255], [40, 200, 80, 255])
NAMES = {"seg": "segmentation", "uncertainty": "uncertainty", "prob": "probabilities"}


def _depth(volume: Volume, name: str, num_classes: int) -> int:
    """Slices per class: the probability file holds the classes as consecutive blocks of z."""
    return volume.shape[0] // (num_classes if name == "prob" else 1)


def _slabs(volume: Volume, name: str, num_classes: int, slab: int):
    """(z0, block) over the volume; probabilities come as [C, z, y, x] blocks of the C-major file."""
    depth = _depth(volume, name, num_classes)
    for z0 in range(0, depth, slab):
        z1 = min(z0 + slab, depth)
        if name == "prob":
            yield z0, np.stack([volume.read(c * depth + z0, c * depth + z1) for c in range(num_classes)])
        else:
            yield z0, volume.read(z0, z1)


def _downsample(block: np.ndarray, labels: bool) -> np.ndarray:
    """Halve the last three axes (odd sizes round up): every second voxel for labels, the 2 x 2 x 2 mean otherwise."""
    if labels:
        return block[..., ::2, ::2, ::2]
    padded = np.pad(block, [(0, 0)] * (block.ndim - 3) + [(0, s % 2) for s in block.shape[-3:]], mode="edge").astype(np.float32)
    z, y, x = (s // 2 for s in padded.shape[-3:])
    mean = padded.reshape(*padded.shape[:-3], z, 2, y, 2, x, 2).mean(axis=(-5, -3, -1))
    return np.rint(mean).astype(block.dtype) if block.dtype.kind in "ui" else mean.astype(block.dtype)


def _multiscales(name: str, axes: str, levels: int, voxel: Sequence[float]) -> list[dict]:
    kinds = {"c": "channel", "z": "space", "y": "space", "x": "space"}
    return [{
        "name": name,
        "axes": [{"name": a, "type": kinds[a], **({"unit": "micrometer"} if a != "c" else {})} for a in axes],
        "datasets": [
            {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": ([1.0] if axes[0] == "c" else []) + [float(v) * 2**k for v in voxel]}]}
            for k in range(levels)
        ],
    }]


def write_ome_zarr(
    target: str | os.PathLike,
    outputs: dict[str, Volume],
    class_names: Sequence[str],
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    levels: int = 3,
    slab: int = 32,
    chunk: int = 256,
) -> Path:
    """Write `outputs` ("seg", optional "uncertainty", "prob") as one OME-Zarr 0.5 image at `target`."""
    import zarr

    target = Path(target)
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        num_classes = len(class_names)
        depth, height, width = outputs["seg"].shape
        slab = max(2**levels, slab // 2**levels * 2**levels)
        image = "uncertainty" if "uncertainty" in outputs else "seg"
        groups = {image: root, "seg": root.require_group("labels").require_group("segmentation")}
        if "prob" in outputs:
            groups["prob"] = root.require_group("probabilities")
        for name, group in groups.items():
            volume = outputs[name]
            lead = (num_classes,) if name == "prob" else ()
            for k in range(levels):
                shape = lead + tuple(-(-s // 2**k) for s in (depth, height, width))
                chunks = lead + (min(slab, shape[-3]), min(chunk, shape[-2]), min(chunk, shape[-1]))
                group.create_array(str(k), shape=shape, chunks=chunks, dtype=volume.dtype, fill_value=0)
            for z0, block in _slabs(volume, name, num_classes, slab):
                for k in range(levels):
                    if k:
                        block = _downsample(block, labels=name == "seg")
                    group[str(k)][..., z0 // 2**k : z0 // 2**k + block.shape[-3], :, :] = block
            axes = "czyx" if name == "prob" else "zyx"
            attrs = {"version": "0.5", "multiscales": _multiscales(NAMES[name], axes, levels, voxel_size)}
            if name == "seg":
                attrs["image-label"] = {
                    "version": "0.5",
                    "colors": [{"label-value": i, "rgba": COLOURS[i % len(COLOURS)]} for i in range(num_classes)],
                    "properties": [{"label-value": i, "class": n} for i, n in enumerate(class_names)],
                    "source": {"image": "../../"},
                }
            group.attrs["ome"] = attrs
        root["labels"].attrs["ome"] = {"version": "0.5", "labels": ["segmentation"]}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    durable_replace(tmp, target)
    return target


def write_hdf5(target: str | os.PathLike, outputs: dict[str, Volume], class_names: Sequence[str], voxel_size: Sequence[float] = (1.0, 1.0, 1.0), slab: int = 32) -> Path:
    """Write `outputs` as datasets `segmentation`, `uncertainty`, `probabilities` of one HDF5 file at `target`."""
    import h5py

    num_classes = len(class_names)
    with atomic_output(target) as tmp, h5py.File(tmp, "w") as f:
        for name, volume in outputs.items():
            depth = _depth(volume, name, num_classes)
            shape = ((num_classes,) if name == "prob" else ()) + (depth,) + volume.shape[1:]
            chunks = shape[:-3] + (min(slab, depth),) + volume.shape[1:]
            dataset = f.create_dataset(NAMES[name], shape=shape, dtype=volume.dtype, chunks=chunks, compression="gzip", compression_opts=1)
            dataset.attrs["voxel_size_zyx"] = [float(v) for v in voxel_size]
            if name == "seg":
                dataset.attrs["class_names"] = list(class_names)
            for z0, block in _slabs(volume, name, num_classes, slab):
                dataset[..., z0 : z0 + block.shape[-3], :, :] = block
    return Path(target)
