"""Grey normalisation: one window for the model (the paper's), or each volume's own robust percentiles.

A fixed window ties a model to one scanner's grey levels and bit depth. With percentiles,
each volume is mapped by its own window (the `grey_percentiles` of its grey values, sampled
over the whole depth), the same way in training, validation, evaluation and inference, so an
8-bit, a 16-bit and a float scan of the same material reach the network alike.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRanged

from ..io import Volume
from .description import DatasetError, VolumeEntry, load_dataset_description

__all__ = ["DatasetGrey", "GreyWindowd", "WindowedVolume", "grey_window", "model_window", "normalise_grey", "volume_window", "windowed"]


def grey_window(entries: Sequence[VolumeEntry], split: str = "train", samples: int = 8, percentiles: Sequence[float] | None = None) -> list[float]:
    """The grey range the configs' transform maps to [0, 1]: a uint8 image's full range, else the 0.05-99.95
    percentiles of the split; [0, 1] with `percentiles` (each volume is then windowed by its own, `windowed`).

    Stored with the model (see `bundle.checkpoints`) so inference normalises the same way.
    """
    if percentiles is not None:
        return [0.0, 1.0]
    volumes = [e.image() for e in entries if e.ranges(split)]
    if not volumes:
        raise DatasetError(f"no volume has a '{split}' split to compute the grey normalisation from.")
    if all(v.dtype == np.uint8 for v in volumes):
        return [0.0, 255.0]
    values = []
    for entry in entries:
        volume = entry.image()
        for z0, z1 in entry.ranges(split):
            for z in np.linspace(z0, z1 - 1, min(samples, z1 - z0)).astype(int):
                values.append(volume.read(int(z), int(z) + 1).ravel()[::7].astype(np.float64))
    return _window(np.concatenate(values), (0.05, 99.95))


def _window(values: np.ndarray, percentiles: Sequence[float]) -> list[float]:
    low, high = np.percentile(values, [float(p) for p in percentiles])
    return [float(low), float(high) if high > low else float(low) + 1.0]


def volume_window(volume: Volume, percentiles: Sequence[float], samples: int = 16) -> list[float]:
    """The `percentiles` of a volume's grey values, from `samples` planes evenly spaced over its whole depth."""
    if len(percentiles) != 2 or not 0 <= float(percentiles[0]) < float(percentiles[1]) <= 100:
        raise ValueError(f"grey_percentiles must be [low, high] with 0 <= low < high <= 100, got {list(percentiles)}.")
    depth = volume.shape[0]
    planes = np.unique(np.linspace(0, depth - 1, min(samples, depth)).round().astype(int))
    values = np.concatenate([volume.read(int(z), int(z) + 1).ravel()[::3].astype(np.float64) for z in planes])
    finite = values[np.isfinite(values)]
    if not finite.size:
        raise DatasetError(f"{volume.path}: no finite grey value to normalise by.")
    return _window(finite, percentiles)


class WindowedVolume(Volume):
    """A volume read as float32 with its `window` [low, high] mapped to [0, 1] (not clipped: the configs' transform clips)."""

    def __init__(self, volume: Volume, window: Sequence[float]) -> None:
        self.volume, self.window = volume, [float(window[0]), float(window[1])]
        self.path, self.shape, self.meta = volume.path, volume.shape, volume.meta
        self.dtype = np.dtype(np.float32)

    def _read(self, z0: int, z1: int, ys: slice, xs: slice) -> np.ndarray:
        low, high = self.window
        return (self.volume.read(z0, z1, ys, xs).astype(np.float32) - low) / (high - low)


def windowed(volume: Volume, percentiles: Sequence[float] | None, window: Sequence[float] | None = None) -> Volume:
    """`volume` as it is without percentiles, else windowed by `window` or by its own percentiles."""
    if percentiles is None:
        return volume
    return WindowedVolume(volume, window if window is not None else volume_window(volume, percentiles))


def model_window(sidecar: dict, input_path: str | None = None) -> list[float]:
    """The grey rule: the window the preprocessing maps to [0, 1] for a model with this sidecar.

    A model trained on a fixed window gets that window. A model trained on per-volume percentiles
    gets the input volume's own percentiles when the preprocessing sees raw grey values
    (`input_path`, inference), and [0, 1] when the dataset already windowed each volume
    (evaluation and training: `SlabDataset` / `CropDataset` with `grey_percentiles`).
    """
    from ..io import open_volume

    percentiles = sidecar.get("grey_percentiles")
    if percentiles is None:
        return [float(v) for v in sidecar["grey_window"]]
    return volume_window(open_volume(input_path), percentiles) if input_path is not None else [0.0, 1.0]


def normalise_grey(data: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Map the grey window [low, high] to [0, 1], clipping: MONAI's `ScaleIntensityRange`, the configs' transform."""
    scale = ScaleIntensityRange(float(window[0]), float(window[1]), 0.0, 1.0, clip=True, dtype=np.float32)
    return np.asarray(scale(data.astype(np.float32)))


class DatasetGrey:
    """The grey rule of a training set, worked out from its files on first use (not when the config is built).

    Args:
        dataset_dir: folder of `dataset.json`.
        grey_percentiles: each volume windowed by its own percentiles (then `grey_window` is [0, 1]), or None for one
            window over the split (`grey_window`).
        split: the z-ranges the window is sampled from.
    """

    def __init__(self, dataset_dir: str, grey_percentiles: Sequence[float] | None = None, split: str = "train") -> None:
        self.dataset_dir, self.split = dataset_dir, split
        self.grey_percentiles = None if grey_percentiles is None else [float(p) for p in grey_percentiles]

    @functools.cached_property
    def grey_window(self) -> list[float]:
        return grey_window(load_dataset_description(self.dataset_dir), self.split, percentiles=self.grey_percentiles)


class GreyWindowd(MapTransform):
    """MONAI's `ScaleIntensityRanged` (to [0, 1], clipped) with the window of `source` (anything with a
    `grey_window`: a `Predictor`, a `ScoredSource`, a `DatasetGrey`), read when the first item arrives, not when the config is built."""

    def __init__(self, keys, source) -> None:
        super().__init__(keys)
        self.source = source

    def __call__(self, data: dict) -> dict:
        low, high = self.source.grey_window
        return ScaleIntensityRanged(self.keys, float(low), float(high), 0.0, 1.0, clip=True)(data)
