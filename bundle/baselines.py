"""The paper's baselines (Table D.4): ZeroOC (majority class) and Bin-ZeroOC (majority class per grey value)."""

from __future__ import annotations

import numpy as np

from .metrics import IGNORE_LABEL

__all__ = ["GreyClassHistogram", "grey_bins"]

N_BINS = 256


def grey_bins(image: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Bin index 0..255 of each voxel: the value itself for uint8, else 256 bins of `value_range`."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    lo, hi = value_range if value_range is not None else (float(image.min()), float(image.max()))
    scaled = (image.astype(np.float64) - lo) / max(hi - lo, 1e-12) * N_BINS
    return np.clip(scaled, 0, N_BINS - 1).astype(np.uint8)


class GreyClassHistogram:
    """Voxel counts per (grey bin, class), accumulated slab by slab; both baselines are read off it."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros((N_BINS, num_classes), np.int64)

    def add(self, bins: np.ndarray, labels: np.ndarray) -> None:
        bins = np.asarray(bins).ravel()
        labels = np.asarray(labels).ravel()
        keep = labels != IGNORE_LABEL
        flat = bins[keep].astype(np.int64) * self.num_classes + labels[keep].astype(np.int64)
        self.counts += np.bincount(flat, minlength=N_BINS * self.num_classes).reshape(N_BINS, self.num_classes)

    def zero_oc_class(self) -> int:
        """ZeroOC: the majority class overall."""
        return int(np.argmax(self.counts.sum(0)))

    def bin_zero_oc_table(self) -> np.ndarray:
        """Bin-ZeroOC: per grey bin the majority class; bins never seen fall back to ZeroOC."""
        table = np.argmax(self.counts, axis=1).astype(np.uint8)
        table[self.counts.sum(1) == 0] = self.zero_oc_class()
        return table
