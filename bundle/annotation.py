"""The annotation loop: which slices to annotate next, and slices out to an editor and back into training.

The model's uncertainty map (entropy / log C, uint8 x255) ranks every plane normal to z, y and
x; voxels the model calls porosity count `rare_weight` times, so the few planes with pores are
not drowned by the matrix. Picks are spread out: no two on the same axis closer than `spacing`.
Exported slices are TIFF pairs (image, labels seeded with the prediction) that napari and Fiji
open as they are; corrected labels come back into one sparse label volume (255 = not
annotated) beside the scan, and `dataset.json` gains or updates one entry for it, with the
annotated planes listed so that training draws its crops from them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.description import IGNORE_LABEL, SPLITS, DatasetError, load_dataset_description
from .io import RawInfo, Volume, atomic_output, format_sidecar, open_volume, sidecar_path, write_atomically

__all__ = ["AXES", "even_planes", "export_slices", "import_slices", "pick_slices", "ranges_outside", "read_plane", "slice_scores"]

AXES = ("z", "y", "x")
MANIFEST = "slices.json"
HOW_TO = """Correcting these slices
=======================

Each slice is a pair of TIFF files of the same size: `<name>.image.tif` (grey values) and
`<name>.labels.tif` (uint8: 0 matrix, 1 fibre, 2 porosity; the model's prediction as a start).

napari:  napari <name>.image.tif, then File > Open as labels <name>.labels.tif; paint with the
         label values, use 255 for voxels you cannot decide, then File > Save Selected Layer
         over the same labels file.
Fiji:    open both, correct the labels image with the pencil (value = class), save as TIFF
         under the same name.

Keep the file names, the size and uint8. Then bring them back into training:

    python scripts/annotate.py import --export_dir {export_dir} --dataset_dir DATASET_DIR
"""


def read_plane(volume: Volume, axis: str, index: int, slab: int = 64) -> np.ndarray:
    """The plane normal to `axis` at `index`, read slab by slab along z for y and x planes."""
    if axis == "z":
        return volume.read(index, index + 1)[0]
    sel = slice(index, index + 1)
    parts = [volume.read(z, min(z + slab, volume.shape[0]), *((sel, slice(None)) if axis == "y" else (slice(None), sel))) for z in range(0, volume.shape[0], slab)]
    return np.concatenate(parts)[:, 0, :] if axis == "y" else np.concatenate(parts)[:, :, 0]


def slice_scores(
    uncertainty: Volume,
    segmentation: Volume | None = None,
    rare_class: int = 2,
    rare_weight: float = 5.0,
    z_range: Sequence[int] | None = None,
    slab: int = 32,
) -> dict[str, np.ndarray]:
    """Per axis, the weighted mean uncertainty of each plane ([0, 1]; NaN for z planes outside `z_range`).

    One pass over the volume, slab by slab. Planes normal to y and x are scored over `z_range` only.
    """
    depth, height, width = uncertainty.shape
    z0, z1 = (0, depth) if z_range is None else (int(z_range[0]), int(z_range[1]))
    if not 0 <= z0 < z1 <= depth:
        raise ValueError(f"{uncertainty.path}: z range [{z0}, {z1}) is outside the volume's depth {depth}.")
    sums = {"z": np.zeros(depth), "y": np.zeros(height), "x": np.zeros(width)}
    weights = {axis: np.zeros_like(v) for axis, v in sums.items()}
    for s in range(z0, z1, slab):
        e = min(s + slab, z1)
        u = uncertainty.read(s, e).astype(np.float64) / 255.0
        w = np.ones_like(u) if segmentation is None else np.where(segmentation.read(s, e) == rare_class, float(rare_weight), 1.0)
        uw = u * w
        for axis, reduce in (("z", (1, 2)), ("y", (0, 2)), ("x", (0, 1))):
            if axis == "z":
                sums[axis][s:e] += uw.sum(reduce)
                weights[axis][s:e] += w.sum(reduce)
            else:
                sums[axis] += uw.sum(reduce)
                weights[axis] += w.sum(reduce)
    return {axis: np.where(weights[axis] > 0, sums[axis] / np.maximum(weights[axis], 1e-12), np.nan) for axis in AXES}


def even_planes(z_range: Sequence[int], n: int, exclude: dict[str, Sequence[int]] | None = None) -> list[dict]:
    """`n` z-planes of [z0, z1), each in turn the free plane farthest from every annotated or chosen one (the
    strategy the simulated annotation study found best; see docs/annotation.md)."""
    chosen = [int(z) for z in (exclude or {}).get("z", [])]
    free = [z for z in range(int(z_range[0]), int(z_range[1])) if z not in chosen]
    picks = []
    for _ in range(min(int(n), len(free))):
        z = max(free, key=lambda c: min(abs(c - t) for t in chosen)) if chosen else free[len(free) // 2]
        chosen.append(z)
        free.remove(z)
        picks.append({"axis": "z", "index": int(z)})
    return picks


def pick_slices(
    scores: dict[str, np.ndarray], n: int, spacing: int = 8, exclude: dict[str, Sequence[int]] | None = None, border: int = 8
) -> list[dict]:
    """The `n` best-scored planes over all axes, no two on one axis closer than `spacing`, none in `exclude`, none
    within `border` planes of the volume's faces (where the model is unsure because the volume ends, not because
    the material is hard: labels there teach little)."""
    candidates = sorted(
        (
            (float(v), axis, int(i))
            for axis, values in scores.items()
            for i, v in enumerate(values)
            if np.isfinite(v) and border <= i < len(values) - border
        ),
        key=lambda c: (-c[0], AXES.index(c[1]), c[2]),
    )
    taken: dict[str, list[int]] = {axis: list((exclude or {}).get(axis, [])) for axis in AXES}
    picks = []
    for score, axis, index in candidates:
        if len(picks) == n:
            break
        if index in taken[axis] or any(abs(index - t) < spacing for t in taken[axis]):
            continue
        taken[axis].append(index)
        picks.append({"axis": axis, "index": index, "score": round(score, 6)})
    return picks


def export_slices(image_path: str | os.PathLike, segmentation: Volume, picks: Sequence[dict], export_dir: str | os.PathLike) -> Path:
    """Write each picked plane as `<stem>.<axis><index>.image.tif` + `.labels.tif` (the prediction), a manifest and how-to."""
    import tifffile

    image = open_volume(image_path)
    if segmentation.shape != image.shape:
        raise ValueError(f"{segmentation.path}: segmentation shape {segmentation.shape} differs from the image's {image.shape}.")
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(str(image.path)).name.split(".")[0]
    slices = []
    for pick in picks:
        axis, index = pick["axis"], int(pick["index"])
        name = f"{stem}.{axis}{index:05d}"
        for suffix, volume in (("image", image), ("labels", segmentation)):
            with atomic_output(export_dir / f"{name}.{suffix}.tif") as tmp:
                tifffile.imwrite(tmp, read_plane(volume, axis, index))
        slices.append({"axis": axis, "index": index, "labels": f"{name}.labels.tif"})
    manifest = {"image": str(Path(image_path).resolve()), "shape_zyx": list(image.shape), "slices": slices}
    write_atomically(export_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    write_atomically(export_dir / "HOW_TO_CORRECT.txt", HOW_TO.format(export_dir=export_dir))
    return export_dir / MANIFEST


def _plane_index(axis: str, index: int) -> tuple:
    return {"z": (index, slice(None), slice(None)), "y": (slice(None), index, slice(None)), "x": (slice(None), slice(None), index)}[axis]


def _read_corrections(export_dir: Path, manifest: dict, num_classes: int) -> list[tuple[str, int, np.ndarray]]:
    """Every corrected slice, checked for size and classes before anything is written."""
    import tifffile

    depth, height, width = manifest["shape_zyx"]
    expected = {"z": (height, width), "y": (depth, width), "x": (depth, height)}
    out = []
    for item in manifest["slices"]:
        path = export_dir / item["labels"]
        if not path.is_file():
            raise DatasetError(f"{path}: corrected labels not found (keep the exported file names).")
        labels = np.squeeze(tifffile.imread(path))
        if labels.shape != expected[item["axis"]]:
            raise DatasetError(f"{path}: labels of shape {labels.shape}, but a {item['axis']}-plane of this scan is {expected[item['axis']]}.")
        values = np.unique(labels)
        bad = [int(v) for v in values if not (0 <= v < num_classes or v == IGNORE_LABEL)]
        if labels.dtype.kind not in "ui" or bad:
            raise DatasetError(f"{path}: label values {bad or labels.dtype.name} are not classes 0..{num_classes - 1} or {IGNORE_LABEL}.")
        out.append((item["axis"], int(item["index"]), labels.astype(np.uint8)))
    return out


def import_slices(export_dir: str | os.PathLike, dataset_dir: str | os.PathLike, num_classes: int = 3, slab: int = 64) -> dict:
    """Write corrected slices into `<image stem>.annotations.raw` beside `dataset.json` and list them in `dataset.json`.

    The annotation volume is rewritten under a temporary name and renamed, so an import that
    fails leaves the earlier annotations whole. The entry of that volume (added if new) trains
    on every z range that no other entry of the same image uses for validation or testing; an
    annotated z-plane inside such a range is refused.
    """
    export_dir, dataset_dir = Path(export_dir), Path(dataset_dir)
    manifest = json.loads((export_dir / MANIFEST).read_text())
    corrections = _read_corrections(export_dir, manifest, num_classes)
    image_path = Path(manifest["image"])
    shape = tuple(manifest["shape_zyx"])
    document = json.loads((dataset_dir / "dataset.json").read_text())
    entries = load_dataset_description(dataset_dir, check_files=False)
    held_out = sorted(r for e in entries if e.image_path == image_path.resolve() for s in SPLITS[1:] for r in e.ranges(s))
    for axis, index, _ in corrections:
        if axis == "z" and any(z0 <= index < z1 for z0, z1 in held_out):
            raise DatasetError(f"{export_dir}: z-plane {index} lies in a validation or test range {held_out} of {image_path.name}; annotate another.")
    target = dataset_dir / f"{image_path.name.split('.')[0]}.annotations.raw"
    previous = open_volume(target) if target.exists() else None
    if previous is not None and previous.shape != shape:
        raise DatasetError(f"{target}: annotations of shape {previous.shape}, but {image_path.name} is {shape}.")
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as f:
            for z in range(0, shape[0], slab):
                block = previous.read(z, min(z + slab, shape[0])) if previous is not None else np.full((min(slab, shape[0] - z),) + shape[1:], IGNORE_LABEL, np.uint8)
                f.write(block.astype(np.uint8).tobytes())
        volume = np.memmap(tmp, np.uint8, "r+", shape=shape)
        for axis, index, labels in corrections:
            volume[_plane_index(axis, index)] = labels
        volume.flush()
        del volume
    write_atomically(sidecar_path(target), format_sidecar(RawInfo(shape, np.dtype(np.uint8), "<", {})))
    planes = _record_entry(document, dataset_dir, image_path, target, shape, held_out, corrections)
    return {"annotations": str(target), "annotated_planes": planes}


def ranges_outside(depth: int, held_out: list[tuple[int, int]]) -> list[list[int]]:
    """The z-ranges of [0, depth) that no range of `held_out` (sorted) covers: where training may look."""
    ranges, z = [], 0
    for z0, z1 in held_out:
        if z0 > z:
            ranges.append([z, z0])
        z = max(z, z1)
    if z < depth:
        ranges.append([z, depth])
    return ranges


def _record_entry(document: dict, dataset_dir: Path, image_path: Path, target: Path, shape: tuple, held_out, corrections) -> dict:
    """Add the annotated planes to the entry of `target` in dataset.json (created if new); other entries are untouched."""
    label = os.path.relpath(target, dataset_dir)
    entry = next((v for v in document["volumes"] if v.get("label") == label), None)
    if entry is None:
        entry = {"image": os.path.relpath(image_path, dataset_dir), "label": label, "splits": {"train": ranges_outside(shape[0], held_out)}}
        document["volumes"].append(entry)
    planes = {axis: sorted(set(entry.get("annotated_planes", {}).get(axis, [])) | {i for a, i, _ in corrections if a == axis}) for axis in AXES}
    entry["annotated_planes"] = {axis: v for axis, v in planes.items() if v}
    write_atomically(dataset_dir / "dataset.json", json.dumps(document, indent=2) + "\n")
    return entry["annotated_planes"]
