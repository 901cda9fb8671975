"""A random forest on multiscale filter responses of each slice, trained on a few labelled slices of the scan itself:
ilastik's pixel classification, the baseline a materials scientist reaches for before a network. A model that does
not beat it on a scan it never saw is not worth running there."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .metrics import IGNORE_LABEL

__all__ = ["SIGMAS", "FilterForest", "slice_features"]

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
"""ilastik's default scales, in voxels: from fibre borders (0.7) to the neighbourhood of a pore (10)."""


def slice_features(image: np.ndarray, sigmas: Sequence[float] = SIGMAS) -> np.ndarray:
    """(H, W, 4 * len(sigmas)) float32 per-voxel features of one slice: at each scale the Gaussian-smoothed grey value
    (intensity), the gradient magnitude (edges), the Laplacian of Gaussian (blobs: pores, fibre sections) and the
    larger Hessian eigenvalue (ridges: fibres lying in the slice)."""
    image = np.asarray(image, np.float32)
    features = []
    for sigma in sigmas:
        hxx = ndimage.gaussian_filter(image, sigma, order=(0, 2))
        hyy = ndimage.gaussian_filter(image, sigma, order=(2, 0))
        hxy = ndimage.gaussian_filter(image, sigma, order=(1, 1))
        features += [
            ndimage.gaussian_filter(image, sigma),
            ndimage.gaussian_gradient_magnitude(image, sigma),
            hxx + hyy,
            0.5 * (hxx + hyy) + np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2),
        ]
    return np.stack(features, axis=-1)


class FilterForest:
    """Fit on labelled slices (voxels labelled `IGNORE_LABEL` are not used), predict slice by slice.

    Training voxels are drawn at random, up to `samples_per_class` of each class, as a user's brush strokes
    cover each phase rather than every voxel; a fixed `seed` gives the same forest every time."""

    def __init__(self, n_estimators: int = 100, samples_per_class: int = 20000, seed: int = 0, n_jobs: int | None = None) -> None:
        self.n_estimators = n_estimators
        self.samples_per_class = samples_per_class
        self.seed = seed
        self.n_jobs = n_jobs
        self.forest = None

    def fit(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> FilterForest:
        try:
            from sklearn.ensemble import RandomForestClassifier
        except ImportError as missing:
            raise ImportError('the random-forest baseline needs scikit-learn: pip install -e ".[studies]"') from missing

        if not len(images):
            raise ValueError("no labelled slices to train the forest on")
        rng = np.random.default_rng(self.seed)
        features = np.concatenate([slice_features(image).reshape(-1, 4 * len(SIGMAS)) for image in images])
        classes = np.concatenate([np.asarray(label).ravel() for label in labels])
        if features.shape[0] != classes.shape[0]:
            raise ValueError(f"{len(images)} slices of {features.shape[0]} voxels but labels of {classes.shape[0]} voxels")
        chosen = []
        for value in np.unique(classes[classes != IGNORE_LABEL]):
            where = np.flatnonzero(classes == value)
            chosen.append(rng.choice(where, min(len(where), self.samples_per_class), replace=False))
        if not chosen:
            raise ValueError("no labelled voxels to train the forest on")
        picked = np.concatenate(chosen)
        self.forest = RandomForestClassifier(n_estimators=self.n_estimators, n_jobs=self.n_jobs, random_state=self.seed)
        self.forest.fit(features[picked], classes[picked])
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class of each voxel of one (H, W) slice, uint8."""
        if self.forest is None:
            raise RuntimeError("FilterForest.predict before fit")
        features = slice_features(image)
        return self.forest.predict(features.reshape(-1, features.shape[-1])).reshape(features.shape[:2]).astype(np.uint8)
