"""What a materials scientist reports from a segmentation, computed slab by slab in bounded memory.

- Phase volume fractions, with a band from the probabilities when given: the share of
  voxels confidently of a phase (p >= 0.9) to the share plausibly of it (p >= 0.1), and the
  expected fraction (mean probability).
- Pores: 3D connected components of the porosity label, labelled per slab and merged across
  slab borders with a union-find, so a volume of billions of voxels needs one slab in RAM;
  count, volume, equivalent diameter (6V/pi)^(1/3) and bounding box of each; the largest
  (crack-like) listed.
- Fibre orientation: the structure tensor J of the smoothed fibre mask averaged over the
  volume. Across a cylinder the mask's gradient is spread evenly around the axis p, so
  <n n^T> = (I - p p^T) / 2 and the orientation tensor is A = I - 2 J / tr(J); its
  eigenvectors are the dominant fibre directions, its eigenvalues their shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .io import Volume

__all__ = ["PoreTracker", "phase_fractions", "orientation_tensor", "materials_report"]

FACE = ndimage.generate_binary_structure(3, 1)


@dataclass
class PoreTracker:
    """Connected components of a binary mask fed slab by slab in z order, merged across slab borders."""

    parent: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    lo: list[list[int]] = field(default_factory=list)
    hi: list[list[int]] = field(default_factory=list)
    _last_plane: np.ndarray | None = None

    def _find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[rb] = ra

    def add(self, mask: np.ndarray, z0: int) -> None:
        """Add slices z0.. of the mask; must follow the previous slab directly."""
        labels, count = ndimage.label(mask, structure=FACE)
        offset = len(self.parent)
        if count:
            index = np.arange(1, count + 1)
            sizes = ndimage.sum_labels(np.ones_like(labels), labels, index).astype(np.int64)
            boxes = ndimage.find_objects(labels)
            for k in range(count):
                self.parent.append(offset + k)
                self.size.append(int(sizes[k]))
                box = boxes[k]
                self.lo.append([box[0].start + z0, box[1].start, box[2].start])
                self.hi.append([box[0].stop - 1 + z0, box[1].stop - 1, box[2].stop - 1])
        if self._last_plane is not None and count:
            first = labels[0]
            touching = (self._last_plane > 0) & (first > 0)
            for a, b in set(zip(self._last_plane[touching].tolist(), first[touching].tolist())):
                self._union(a - 1, offset + b - 1)
        last = labels[-1].astype(np.int64)
        self._last_plane = np.where(last > 0, last + offset, 0)

    def components(self) -> list[dict]:
        """Each merged component: voxels and bounding box (z, y, x, inclusive), largest first."""
        merged: dict[int, dict] = {}
        for i in range(len(self.parent)):
            root = self._find(i)
            entry = merged.setdefault(root, {"voxels": 0, "lo": list(self.lo[i]), "hi": list(self.hi[i])})
            entry["voxels"] += self.size[i]
            entry["lo"] = [min(a, b) for a, b in zip(entry["lo"], self.lo[i])]
            entry["hi"] = [max(a, b) for a, b in zip(entry["hi"], self.hi[i])]
        return sorted(merged.values(), key=lambda c: -c["voxels"])


def phase_fractions(labels: Volume, probabilities: Volume | None, num_classes: int, slab: int = 32) -> dict:
    """Fractions per class; with a probability volume (classes as the slowest axis), the band and expectation."""
    depth = labels.shape[0]
    counts = np.zeros(num_classes, np.int64)
    confident = np.zeros(num_classes, np.int64)
    plausible = np.zeros(num_classes, np.int64)
    expected = np.zeros(num_classes, np.float64)
    scale = 255.0 if probabilities is not None and probabilities.dtype == np.uint8 else 1.0
    for z0 in range(0, depth, slab):
        z1 = min(z0 + slab, depth)
        counts += np.bincount(labels.read(z0, z1).ravel(), minlength=num_classes)[:num_classes]
        if probabilities is not None:
            for c in range(num_classes):
                p = probabilities.read(c * depth + z0, c * depth + z1).astype(np.float64) / scale
                confident[c] += int((p >= 0.9).sum())
                plausible[c] += int((p >= 0.1).sum())
                expected[c] += float(p.sum())
    total = float(counts.sum())
    out = {"fraction": (counts / total).tolist(), "voxels": int(total)}
    if probabilities is not None:
        out.update(
            fraction_low=(confident / total).tolist(), fraction_high=(plausible / total).tolist(), fraction_expected=(expected / total).tolist()
        )
    return out


def orientation_tensor(mask_volume: Volume, fibre_class: int = 1, sigma: float = 1.0, slab: int = 32) -> np.ndarray:
    """Second-order fibre orientation tensor A (z, y, x axes) from the structure tensor of the fibre mask."""
    depth = mask_volume.shape[0]
    halo = int(math.ceil(3 * sigma)) + 1
    structure = np.zeros((3, 3))
    for z0 in range(0, depth, slab):
        z1 = min(z0 + slab, depth)
        h0, h1 = max(0, z0 - halo), min(depth, z1 + halo)
        mask = (mask_volume.read(h0, h1) == fibre_class).astype(np.float32)
        smooth = ndimage.gaussian_filter(mask, sigma, mode="nearest")
        grads = [g[z0 - h0 : z1 - h0] for g in np.gradient(smooth)]
        for i in range(3):
            for j in range(i, 3):
                structure[i, j] += float((grads[i] * grads[j]).sum())
                structure[j, i] = structure[i, j]
    trace = np.trace(structure)
    if trace <= 0:
        return np.zeros((3, 3))
    return np.eye(3) - 2.0 * structure / trace


def materials_report(
    labels: Volume,
    probabilities: Volume | None = None,
    voxel_size: float = 1.0,
    unit: str = "voxel",
    class_names: tuple[str, ...] = ("matrix", "fibre", "porosity"),
    pore_class: int = 2,
    fibre_class: int = 1,
    slab: int = 32,
    largest: int = 10,
) -> dict:
    """Fractions, pores and fibre orientation of a label volume, as a JSON-ready dict."""
    fractions = phase_fractions(labels, probabilities, len(class_names), slab)
    tracker = PoreTracker()
    for z0 in range(0, labels.shape[0], slab):
        tracker.add(labels.read(z0, min(z0 + slab, labels.shape[0])) == pore_class, z0)
    pores = tracker.components()
    voxel_volume = voxel_size**3
    diameters = [(6 * p["voxels"] * voxel_volume / math.pi) ** (1 / 3) for p in pores]
    orientation = orientation_tensor(labels, fibre_class, slab=slab)
    values, vectors = np.linalg.eigh(orientation)
    order = np.argsort(values)[::-1]
    named = {"fraction": dict(zip(class_names, fractions["fraction"]))}
    for key in ("fraction_low", "fraction_high", "fraction_expected"):
        if key in fractions:
            named[key] = dict(zip(class_names, fractions[key]))
    return {
        "shape_zyx": list(labels.shape),
        "voxel_size": voxel_size,
        "unit": unit,
        "phases": named,
        "pores": {
            "count": len(pores),
            "equivalent_diameter": {
                "mean": float(np.mean(diameters)) if diameters else 0.0,
                "median": float(np.median(diameters)) if diameters else 0.0,
                "max": float(max(diameters)) if diameters else 0.0,
                "all": [round(d, 4) for d in diameters],
            },
            "largest": [
                {"voxels": p["voxels"], "volume": p["voxels"] * voxel_volume, "equivalent_diameter": d, "bbox_lo_zyx": p["lo"], "bbox_hi_zyx": p["hi"],
                 "extent_zyx": [(h - lo + 1) * voxel_size for lo, h in zip(p["lo"], p["hi"])]}
                for p, d in list(zip(pores, diameters))[:largest]
            ],
        },
        "fibre_orientation": {
            "tensor_zyx": orientation.tolist(),
            "eigenvalues": values[order].tolist(),
            "directions_zyx": vectors[:, order].T.tolist(),
        },
    }
