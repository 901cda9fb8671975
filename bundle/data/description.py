"""`dataset.json`: which volumes, which labels, which z-ranges train, validate and test.

Format (paths relative to the file; half-open z ranges; a split is one range or a list of
ranges; a volume may omit splits; extra keys are kept)::

    {"volumes": [{"image": "pa66.raw", "label": "pa66.ground_truth.raw",
                  "splits": {"train": [0, 1300], "val": [1386, 1514], "test": [1600, 1900]}}]}

Label value 255 means "not annotated" and is ignored by losses and metrics.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import Volume, VolumeError, open_volume, write_atomically
from ..io.base import split_inner_path

__all__ = [
    "IGNORE_LABEL",
    "SPLITS",
    "DatasetError",
    "VolumeEntry",
    "check_label_values",
    "combine_dataset_descriptions",
    "load_dataset_description",
    "paper_split",
    "write_dataset_description",
]

IGNORE_LABEL = 255
SPLITS = ("train", "val", "test")
PAPER_DEPTH = 1900
PAPER_SEGMENTS = (("train", 1300), (None, 86), ("val", 128), (None, 86), ("test", 300))


class DatasetError(ValueError):
    """A dataset description that cannot be used, naming the file and the problem."""


@dataclass
class VolumeEntry:
    """One volume of a dataset: its image, optional label, and z-ranges per split."""

    image_path: Path
    label_path: Path | None
    splits: dict[str, list[tuple[int, int]]]
    extra: dict = field(default_factory=dict)

    def image(self) -> Volume:
        return open_volume(self.image_path)

    def label(self) -> Volume:
        if self.label_path is None:
            raise DatasetError(f"{self.image_path}: this volume has no 'label' in its dataset.json.")
        return open_volume(self.label_path)

    def ranges(self, split: str) -> list[tuple[int, int]]:
        return self.splits.get(split, [])


def paper_split(depth: int) -> dict[str, list[int]]:
    """The paper's sequential split (train 1300 / margin 86 / val 128 / margin 86 / test 300 of 1900) scaled to `depth`."""
    if depth < 1:
        raise ValueError(f"depth must be positive, got {depth}.")
    splits, z = {}, 0
    for name, length in PAPER_SEGMENTS:
        n = length * depth // PAPER_DEPTH
        if name is not None:
            if n < 1:
                raise ValueError(f"a volume of depth {depth} is too thin for the paper's split: '{name}' would be empty.")
            splits[name] = [z, z + n]
        z += n
    return splits


def _ranges(value, where: str) -> list[tuple[int, int]]:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: a split must be [z0, z1] or a list of such ranges, got {value!r}.")
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise DatasetError(f"{where}: a z range must be two integers [z0, z1], got {item!r}.")
        if item[0] >= item[1]:
            raise DatasetError(f"{where}: empty or reversed z range {item} (ranges are half-open [z0, z1)).")
        out.append((item[0], item[1]))
    return out


def load_dataset_description(path: str | os.PathLike, check_files: bool = True) -> list[VolumeEntry]:
    """Parse and validate `dataset.json` (or the directory holding it).

    With `check_files`, every named file is opened (sidecars parsed, sizes checked), image and
    label shapes compared, and split ranges checked against the depth and for overlaps.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: dataset description not found; create it (see docs/data_format.md) or run scripts/phantom.py make.")
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err}).") from err
    volumes = document.get("volumes") if isinstance(document, dict) else None
    if not isinstance(volumes, list) or not volumes:
        raise DatasetError(f"{path}: expected {{\"volumes\": [{{\"image\": ..., \"label\": ..., \"splits\": ...}}]}}.")
    entries = []
    for index, item in enumerate(volumes):
        where = f"{path}: volumes[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise DatasetError(f"{where}: each volume needs an 'image' path.")
        image_path = (path.parent / item["image"]).resolve()
        label_path = (path.parent / item["label"]).resolve() if item.get("label") else None
        raw_splits = item.get("splits", {})
        if not isinstance(raw_splits, dict) or any(k not in SPLITS for k in raw_splits):
            raise DatasetError(f"{where}: 'splits' must map some of {SPLITS} to z ranges, got {raw_splits!r}.")
        splits = {name: _ranges(value, f"{where}.splits.{name}") for name, value in raw_splits.items()}
        extra = {k: v for k, v in item.items() if k not in ("image", "label", "splits")}
        entry = VolumeEntry(image_path, label_path, splits, extra)
        if check_files:
            _check_entry(entry, where)
        entries.append(entry)
    return entries


def _check_entry(entry: VolumeEntry, where: str) -> None:
    for role, file in (("image", entry.image_path), ("label", entry.label_path)):
        if file is not None and not split_inner_path(file)[0].exists():
            raise DatasetError(f"{where}: {role} file {split_inner_path(file)[0]} not found.")
    try:
        image = entry.image()
        label = entry.label() if entry.label_path else None
    except VolumeError as err:
        raise DatasetError(f"{where}: {err}") from err
    if label is not None and label.shape != image.shape:
        raise DatasetError(
            f"{where}: image {entry.image_path.name} has shape (z, y, x) {image.shape} but label "
            f"{entry.label_path.name} has {label.shape}."
        )
    depth = image.shape[0]
    spans = []
    for name, ranges in entry.splits.items():
        for z0, z1 in ranges:
            if z0 < 0 or z1 > depth:
                raise DatasetError(f"{where}: split '{name}' range [{z0}, {z1}) is outside the volume's depth {depth}.")
            spans.append((z0, z1, name))
    spans.sort()
    for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:]):
        if b0 < a1:
            raise DatasetError(f"{where}: split '{an}' [{a0}, {a1}) overlaps split '{bn}' [{b0}, {b1}).")


def check_label_values(label: Volume, num_classes: int, ranges: list[tuple[int, int]], slab: int = 64) -> np.ndarray:
    """Per-class voxel counts over `ranges`, raising if a value is neither a class nor 255."""
    counts = np.zeros(256, np.int64)
    for z0, z1 in ranges:
        for s in range(z0, z1, slab):
            for plane in label.read(s, min(s + slab, z1)):
                if plane.dtype.kind not in "ui" or (plane.size and plane.max() > IGNORE_LABEL):
                    raise DatasetError(f"{label.path}: labels must be integers in 0..{IGNORE_LABEL}, got {plane.dtype.name} values.")
                counts += np.bincount(plane.ravel(), minlength=256)
    bad = [int(v) for v in np.nonzero(counts)[0] if v >= num_classes and v != IGNORE_LABEL]
    if bad:
        raise DatasetError(
            f"{label.path}: label values {bad} found; expected 0..{num_classes - 1} (0 matrix, 1 fibre, 2 porosity) "
            f"or {IGNORE_LABEL} for 'not annotated'."
        )
    return counts[:num_classes]


def write_dataset_description(directory: str | os.PathLike, volumes: list[dict]) -> Path:
    """Write `dataset.json` atomically."""
    return write_atomically(Path(directory) / "dataset.json", json.dumps({"volumes": volumes}, indent=2) + "\n")


def combine_dataset_descriptions(directory: str | os.PathLike, sources: list[str | os.PathLike]) -> Path:
    """One `dataset.json` in `directory` listing every volume of the `sources` (dataset folders or files), paths
    rewritten relative to `directory`: a training set made of several folders without copying a byte. Every source is
    checked as `load_dataset_description` checks it; an image listed twice is refused."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    volumes, seen = [], {}
    for source in sources:
        for entry in load_dataset_description(source):
            if entry.image_path in seen:
                raise DatasetError(f"{entry.image_path}: listed by both {seen[entry.image_path]} and {source}.")
            seen[entry.image_path] = source
            item = {"image": os.path.relpath(entry.image_path, directory.resolve())}
            if entry.label_path is not None:
                item["label"] = os.path.relpath(entry.label_path, directory.resolve())
            item["splits"] = {name: [list(r) for r in ranges] for name, ranges in entry.splits.items()}
            volumes.append({**item, **entry.extra})
    return write_dataset_description(directory, volumes)
