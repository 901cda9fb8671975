"""Datasets over memory-mapped volumes: random training crops and whole z-slabs for validation.

Items are read box by box from disk (`Volume.read`), so a crop costs its own bytes and
DataLoader workers receive file paths, never a memory map. Grey normalisation and
augmentation are MONAI transforms applied afterwards (`transform`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Randomizable

from ..io import Volume
from ..planning import PlannedOnFirstUse
from .description import IGNORE_LABEL, DatasetError, VolumeEntry, check_label_values, load_dataset_description
from .grey import volume_window, windowed

__all__ = ["PlanAtStart", "RandomCropDataset", "SlabDataset", "read_with_halo"]

logger = logging.getLogger(__name__)


def read_with_halo(volume: Volume, z0: int, z1: int, halo: int, ys: slice = slice(None), xs: slice = slice(None)) -> np.ndarray:
    """Slices z0-halo..z1+halo: real neighbours where the volume has them, mirrored (numpy 'reflect') past its ends."""
    depth = volume.shape[0]
    if halo and depth < 2:
        raise DatasetError(f"{volume.path}: a volume of depth {depth} cannot give {halo} neighbour slice(s) of context.")
    lo, hi = max(0, z0 - halo), min(depth, z1 + halo)
    data = volume.read(lo, hi, ys, xs)
    before, after = lo - (z0 - halo), (z1 + halo) - hi
    if before or after:
        if max(before, after) >= depth:
            raise DatasetError(f"{volume.path}: a volume of depth {depth} is too thin for {halo} slices of context.")
        index = np.arange(z0 - halo, z1 + halo)
        index = np.abs(index)
        index = np.where(index >= depth, 2 * (depth - 1) - index, index)
        data = data[index - lo]
    return data


def _split_entries(dataset_dir: str | os.PathLike, split: str, needs_label: bool) -> list[VolumeEntry]:
    entries = [e for e in load_dataset_description(dataset_dir) if e.ranges(split)]
    if not entries:
        raise DatasetError(f"{dataset_dir}/dataset.json: no volume has a '{split}' split.")
    if needs_label:
        missing = [str(e.image_path) for e in entries if e.label_path is None]
        if missing:
            raise DatasetError(f"{dataset_dir}/dataset.json: volumes {missing} take part in '{split}' but have no 'label'.")
    return entries


class RandomCropDataset(PlannedOnFirstUse, Randomizable, torch.utils.data.Dataset):
    """`num_samples` random crops of the `split` z-ranges, each a dict {"image": [C, ...], "label": [1, ...]}.

    2D crops are planes normal to z by default; with `planes` ("z", "y", "x") they are drawn
    from all three orientations (a model then fit for multi-axis inference, as
    volume-segmantics does), the neighbours of a y- or x-plane given as channels the same way.
    With `rare_fraction`, that share of crops is centred on a voxel of `rare_class`
    (over-sampling the porosity). A volume whose `dataset.json` entry lists `annotated_planes`
    (sparse slice annotations, `bundle.annotation`) gives crops only on those planes, each plane
    weighing as much as one slice of a densely labelled volume. The files are read and checked on
    first use (`bundle.planning`).

    Args:
        dataset_dir: folder of `dataset.json`.
        crop_size: (h, w) for 2D/2.5D or (z, y, x) for 3D.
        z_context: neighbour planes each side stacked as channels (2 for the paper's 2.5D).
        num_samples: crops per epoch (batch size x batches per epoch).
        split: which z-ranges to draw from.
        num_classes: labels must be 0..num_classes-1 or 255.
        max_slices: keep only the first `max_slices` slices of the split (the learning curve).
        transform: MONAI transform applied to each item.
        planes: 2D only, plane normals to draw from.
        rare_class: class to over-sample.
        rare_fraction: share of crops centred on a `rare_class` voxel (0 disables).
        grey_percentiles: map each volume's own [low, high] percentiles to [0, 1] before `transform` (`bundle.data.grey`).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        crop_size: Sequence[int],
        z_context: int = 0,
        num_samples: int = 100,
        split: str = "train",
        num_classes: int = 3,
        max_slices: int | None = None,
        transform: Callable | None = None,
        planes: Sequence[str] = ("z",),
        rare_class: int = 2,
        rare_fraction: float = 0.0,
        grey_percentiles: Sequence[float] | None = None,
    ) -> None:
        self._defer(locals())
        self.crop_size = tuple(int(c) for c in crop_size)
        if len(self.crop_size) not in (2, 3):
            raise ValueError(f"crop_size must be (h, w) or (z, y, x), got {crop_size}.")
        if len(self.crop_size) == 3 and (z_context or tuple(planes) != ("z",)):
            raise ValueError("z_context and planes are for 2D crops; 3D crops take their context from their own depth.")
        self.planes = tuple(planes)
        if not self.planes or any(p not in ("z", "y", "x") for p in self.planes):
            raise ValueError(f"planes must be a non-empty subset of ('z', 'y', 'x'), got {planes}.")
        self.z_context = int(z_context)
        self.num_samples = int(num_samples)
        self.transform = transform
        self.rare_fraction = float(rare_fraction)

    PLANNED = frozenset(("entries", "boxes", "plane_picks", "sparse_boxes", "rare_points", "class_counts", "_box_p"))

    def _plan(self, dataset_dir, split, num_classes, max_slices, rare_class, grey_percentiles, **_) -> None:
        """Open the split's volumes, check crops fit and labels are in range, find the rare-class voxels."""
        self.entries = _split_entries(dataset_dir, split, needs_label=True)
        self.boxes: list[tuple[Volume, Volume, int, int]] = []
        self.plane_picks: list[tuple[int, str, int]] = []
        self.sparse_boxes: set[int] = set()
        counts = np.zeros(num_classes, np.int64)
        rare_points = []
        for entry in self.entries:
            image, label = windowed(entry.image(), grey_percentiles), entry.label()
            ranges = _first_slices(entry.ranges(split), max_slices)
            for plane in self.planes:
                extent = self._extent(plane)
                if any(c > s for c, s in zip(extent, image.shape)):
                    raise DatasetError(
                        f"{entry.image_path}: crop (z, y, x) {extent} of {plane}-planes is larger than the volume {image.shape}; "
                        "lower crop_size."
                    )
                for z0, z1 in ranges:
                    if z1 - z0 < extent[0]:
                        raise DatasetError(
                            f"{entry.image_path}: '{split}' range [{z0}, {z1}) has {z1 - z0} slices, fewer than the crop depth "
                            f"{extent[0]}; widen the range in dataset.json or lower the crop depth."
                        )
            annotated = entry.extra.get("annotated_planes")
            entry_picks = []
            for z0, z1 in ranges:
                self.boxes.append((image, label, z0, z1))
                if annotated is not None:
                    entry_picks += self._picks(entry, annotated, len(self.boxes) - 1, z0, z1)
            self.plane_picks += entry_picks
            counts += check_label_values(label, num_classes, ranges)
            if annotated is not None:
                self.sparse_boxes.update(range(len(self.boxes) - len(ranges), len(self.boxes)))
                self._warn_unused(entry, annotated, ranges, entry_picks, split)
            elif self.rare_fraction > 0:
                rare_points += [(len(self.boxes) - len(ranges) + i, *p) for i, r in enumerate(ranges) for p in _class_voxels(label, [r], rare_class)]
        absent = [c for c in range(num_classes) if counts[c] == 0]
        if absent:
            logger.warning("classes %s are absent from the '%s' labels of %s; the model cannot learn them.", absent, split, dataset_dir)
        if self.rare_fraction > 0 and not rare_points:
            logger.warning("no voxel of class %d in the '%s' labels: rare-class over-sampling is off.", rare_class, split)
        self.rare_points = np.array(rare_points, np.int64).reshape(-1, 4)
        self.class_counts = counts
        weights = np.array([0.0 if i in self.sparse_boxes else b[3] - b[2] for i, b in enumerate(self.boxes)] + [1.0] * len(self.plane_picks))
        if not weights.sum():
            raise DatasetError(f"{dataset_dir}: no annotated plane of the '{split}' ranges can hold a crop of {self.crop_size}.")
        self._box_p = weights / weights.sum()

    def _picks(self, entry, annotated: dict, box: int, z0: int, z1: int) -> list[tuple[int, str, int]]:
        """The annotated planes a crop can be drawn on in box [z0, z1): z-planes inside it, y/x planes if it is deep enough."""
        if len(self.crop_size) == 3:
            raise DatasetError(f"{entry.label_path}: annotated planes train 2D and 2.5D models; a 3D model needs densely labelled ranges.")
        picks = [(box, "z", int(i)) for i in annotated.get("z", []) if z0 <= int(i) < z1]
        if z1 - z0 >= self.crop_size[0]:
            picks += [(box, axis, int(i)) for axis in ("y", "x") for i in annotated.get(axis, [])]
        return picks

    def _warn_unused(self, entry, annotated: dict, ranges, picks: list[tuple[int, str, int]], split: str) -> None:
        """Name the annotated planes no crop can be drawn on (a y/x plane needs a range as deep as the crop height)."""
        used = {(axis, index) for _, axis, index in picks}
        unused = [f"{axis}={i}" for axis in ("z", "y", "x") for i in annotated.get(axis, []) if (axis, int(i)) not in used]
        if unused:
            logger.warning(
                "%s: annotated planes %s give no crop: y/x planes need a '%s' range at least %d slices deep (the deepest has %d); "
                "lower crop_size or annotate z-planes.", entry.label_path, ", ".join(unused), split, self.crop_size[0],
                max(z1 - z0 for z0, z1 in ranges),
            )

    def _extent(self, plane: str) -> tuple[int, int, int]:
        """Crop size along (z, y, x), neighbour planes included."""
        if len(self.crop_size) == 3:
            return self.crop_size
        h, w = self.crop_size
        thick = 2 * self.z_context + 1
        return {"z": (1, h, w), "y": (h, thick, w), "x": (h, w, thick)}[plane]

    def __len__(self) -> int:
        return self.num_samples

    def randomize(self, data=None) -> tuple[int, str, int, int, int]:
        plane = self.planes[self.R.randint(len(self.planes))]
        extent = self._extent(plane)
        if len(self.rare_points) and self.R.random_sample() < self.rare_fraction:
            box, *centre = self.rare_points[self.R.randint(len(self.rare_points))]
            image, _, z_lo, z_hi = self.boxes[box]
            lows = [z_lo, 0, 0]
            highs = [z_hi - extent[0], image.shape[1] - extent[1], image.shape[2] - extent[2]]
            start = [int(np.clip(c - e // 2, lo, hi)) for c, e, lo, hi in zip(centre, extent, lows, highs)]
            return (int(box), plane, *start)
        choice = int(self.R.choice(len(self._box_p), p=self._box_p))
        if choice >= len(self.boxes):
            return self._on_plane(*self.plane_picks[choice - len(self.boxes)])
        box = choice
        image, _, z_lo, z_hi = self.boxes[box]
        if plane == "z" and len(self.crop_size) == 2:
            z = self.R.randint(z_lo, z_hi)
        else:
            z = self.R.randint(z_lo, z_hi - extent[0] + 1)
        y = self.R.randint(0, image.shape[1] - extent[1] + 1)
        x = self.R.randint(0, image.shape[2] - extent[2] + 1)
        return box, plane, z, y, x

    def _on_plane(self, box: int, plane: str, index: int) -> tuple[int, str, int, int, int]:
        """A crop whose labelled plane is the annotated plane `index` normal to `plane` (its neighbours as context)."""
        image, _, z_lo, z_hi = self.boxes[box]
        extent = self._extent(plane)
        start = [self.R.randint(z_lo, z_hi - extent[0] + 1), self.R.randint(0, image.shape[1] - extent[1] + 1), self.R.randint(0, image.shape[2] - extent[2] + 1)]
        axis = "zyx".index(plane)
        start[axis] = index if plane == "z" else int(np.clip(index - self.z_context, 0, image.shape[axis] - extent[axis]))
        return (box, plane, *start)

    def __getitem__(self, index: int) -> dict:
        box, plane, z, y, x = self.randomize()
        image, label, _, _ = self.boxes[box]
        extent = self._extent(plane)
        ys, xs = slice(y, y + extent[1]), slice(x, x + extent[2])
        c = self.z_context
        if len(self.crop_size) == 3:
            img = image.read(z, z + extent[0], ys, xs)[None]
            lab = label.read(z, z + extent[0], ys, xs)[None]
        elif plane == "z":
            img = read_with_halo(image, z, z + 1, c, ys, xs)
            lab = label.read(z, z + 1, ys, xs)
        else:
            axis = 1 if plane == "y" else 2
            img = np.moveaxis(image.read(z, z + extent[0], ys, xs), axis, 0)
            lab = np.moveaxis(label.read(z, z + extent[0], ys, xs), axis, 0)[c : c + 1]
        item = {"image": torch.from_numpy(img.astype(np.float32)), "label": torch.from_numpy(lab.astype(np.int64))}
        return self.transform(item) if self.transform is not None else item


def _class_voxels(label: Volume, ranges: list[tuple[int, int]], cls: int, limit: int = 200_000, slab: int = 32) -> list[tuple[int, int, int]]:
    """Up to `limit` (z, y, x) voxels of class `cls` in `ranges`, evenly thinned."""
    points = []
    for z0, z1 in ranges:
        for s in range(z0, z1, slab):
            zz, yy, xx = np.nonzero(label.read(s, min(s + slab, z1)) == cls)
            points.append(np.stack([zz + s, yy, xx], 1))
    found = np.concatenate(points) if points else np.zeros((0, 3), np.int64)
    step = max(1, len(found) // limit)
    return [tuple(p) for p in found[::step].tolist()]


def _first_slices(ranges: list[tuple[int, int]], max_slices: int | None) -> list[tuple[int, int]]:
    if max_slices is None:
        return list(ranges)
    out, left = [], int(max_slices)
    for z0, z1 in ranges:
        if left <= 0:
            break
        out.append((z0, min(z1, z0 + left)))
        left -= out[-1][1] - z0
    return out


class SlabDataset(PlannedOnFirstUse, torch.utils.data.Dataset):
    """Whole z-slabs of a split, `slab` slices at a time, with `z_halo` context slices each side.

    Items: {"image": [1, slab + 2*halo, Y, X] float32, "label": [1, slab, Y, X] int64 (if labelled),
    "volume": index, "z0": first slice}. Context comes from the real neighbours outside the
    range where they exist, mirrored only past the volume's ends.

    With `prediction_path`, "image" is instead the one-hot [C, slab, Y, X] of a segmentation
    file (of the whole volume's depth, or of the split's slices only, as the published
    `pa66.test.prediction.raw`), so another tool's output is scored by the same workflow
    through an identity network. With `grey_percentiles`, each volume is windowed by its own percentiles
    before `transform` (`bundle.data.grey`). The files are read and checked on first use (`bundle.planning`).
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike,
        split: str = "val",
        slab: int = 16,
        z_halo: int = 0,
        transform: Callable | None = None,
        with_label: bool = True,
        prediction_path: str | os.PathLike | None = None,
        num_classes: int = 3,
        grey_percentiles: Sequence[float] | None = None,
    ) -> None:
        self._defer(locals())
        self.grey_percentiles = grey_percentiles
        self.z_halo = int(z_halo)
        self.transform = transform
        self.with_label = with_label
        self.num_classes = num_classes

    PLANNED = frozenset(("entries", "windows", "items", "prediction", "_offsets"))

    def _plan(self, dataset_dir, split, slab, with_label, prediction_path, grey_percentiles, **_) -> None:
        """Open the split's volumes (and the prediction file), take each volume's window, list the slabs."""
        self.entries = _split_entries(dataset_dir, split, needs_label=with_label)
        self.windows = [None if grey_percentiles is None or prediction_path else volume_window(e.image(), grey_percentiles) for e in self.entries]
        self.items = [
            (i, s, min(s + slab, z1)) for i, e in enumerate(self.entries) for z0, z1 in e.ranges(split) for s in range(z0, z1, slab)
        ]
        self.prediction = None
        if prediction_path:
            from ..io import open_volume

            self.prediction = open_volume(prediction_path)
            if len(self.entries) != 1:
                raise DatasetError(f"{prediction_path}: a prediction file can be scored against a dataset of one volume only.")
            image_shape = self.entries[0].image().shape
            split_depth = sum(z1 - z0 for z0, z1 in self.entries[0].ranges(split))
            if self.prediction.shape[1:] != image_shape[1:] or self.prediction.shape[0] not in (image_shape[0], split_depth):
                raise DatasetError(
                    f"{prediction_path}: prediction of shape {self.prediction.shape} matches neither the volume {image_shape} "
                    f"nor its {split_depth} '{split}' slices."
                )
            self._offsets = {}
            if self.prediction.shape[0] != image_shape[0]:
                position = 0
                for z0, z1 in self.entries[0].ranges(split):
                    self._offsets[(z0, z1)] = position - z0
                    position += z1 - z0

    def __len__(self) -> int:
        if not self.planned:  # MONAI's Workflow asks at construction; without a length it leaves the epoch to Ignite
            raise TypeError("the slabs are listed once the files are read (plan(), when the run starts)")
        return len(self.items)

    def _prediction_slab(self, z0: int, z1: int) -> np.ndarray:
        shift = next((off for (a, b), off in self._offsets.items() if a <= z0 < b), 0)
        classes = self.prediction.read(z0 + shift, z1 + shift).astype(np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= self.num_classes):
            raise DatasetError(f"{self.prediction.path}: prediction values must be 0..{self.num_classes - 1}.")
        return np.moveaxis(np.eye(self.num_classes, dtype=np.float32)[classes], -1, 0)

    def __getitem__(self, index: int) -> dict:
        volume_index, z0, z1 = self.items[index]
        entry = self.entries[volume_index]
        if self.prediction is not None:
            item = {"image": torch.from_numpy(self._prediction_slab(z0, z1)), "volume": volume_index, "z0": z0}
        else:
            image = read_with_halo(windowed(entry.image(), self.grey_percentiles, self.windows[volume_index]), z0, z1, self.z_halo)
            item = {"image": torch.from_numpy(image.astype(np.float32))[None], "volume": volume_index, "z0": z0}
        if self.with_label:
            label = entry.label().read(z0, z1)
            if label.size and label.max() > IGNORE_LABEL:
                raise DatasetError(f"{entry.label_path}: label values above {IGNORE_LABEL}.")
            item["label"] = torch.from_numpy(label.astype(np.int64))[None]
        if self.transform is not None and self.prediction is None:
            item = self.transform(item)
        return item


class PlanAtStart:
    """Plans `datasets` when the engine it is attached to starts: bad training or validation data fails before
    the first step (not at the first validation), while the config still resolves with no data on disk."""

    def __init__(self, datasets: Sequence[PlannedOnFirstUse]) -> None:
        self.datasets = list(datasets)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for dataset in self.datasets:
            dataset.plan()
