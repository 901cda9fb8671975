"""Figures of the evaluation report, readable in grey-scale print (hatching and contours, not colour alone)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .io import atomic_output

__all__ = ["save_figure", "class_histogram_figure", "confusion_figure", "overlay_figure", "phantom_figure"]


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save and close `fig`, atomically."""
    with atomic_output(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def overlay_figure(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, path, title: str = "") -> Path:
    """Fig. 1 style: fibre hatched, porosity contoured, errors filled in solid red with a cross-hatch."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, (name, seg) in zip(axes, (("ground truth", label), ("prediction", prediction))):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.contourf(seg == 1, levels=[0.5, 1.5], colors="none", hatches=["////"])
        ax.contour(seg == 1, levels=[0.5], colors="#1f77b4", linewidths=0.6)
        ax.contour(seg == 2, levels=[0.5], colors="#ffd400", linewidths=1.2)
        ax.set_title(f"{name}: fibre hatched, porosity contoured", fontsize=9)
        ax.set_axis_off()
    error = (prediction != label) & (label != 255)
    axes[1].contourf(error, levels=[0.5, 1.5], colors=["#d62728"], alpha=0.6, hatches=["xx"])
    axes[1].set_title(f"prediction, errors in red cross-hatch ({error.mean() * 100:.2f}% of voxels)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def confusion_figure(confusion: dict, class_names: list[str], path, title: str = "") -> Path:
    """Fig. D.10: confusion matrices normalised by all cells, by row (recall) and by column (precision)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, key, name in zip(axes, ("by_all", "by_row", "by_col"), ("by all", "by row (recall)", "by column (precision)")):
        matrix = np.asarray(confusion[key]) * 100
        ax.imshow(matrix, cmap="Greys", vmin=0, vmax=100)
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color="white" if matrix[i, j] > 50 else "black", fontsize=9)
        ax.set_xticks(range(len(class_names)), class_names)
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"normalised {name} (%)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def class_histogram_figure(counts: np.ndarray, class_names: list[str], path, title: str = "") -> Path:
    """Fig. A.8: grey-level histogram of each class, normalised over all voxels, linear and log scale."""
    counts = np.asarray(counts, np.float64)
    share = counts / max(counts.sum(), 1)
    bins = np.arange(counts.shape[0])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    styles = ["-", "--", ":"]
    for ax, log in zip(axes, (False, True)):
        for c, name in enumerate(class_names):
            ax.plot(bins, share[:, c], styles[c % 3], color="black", label=name, linewidth=1.2)
        ax.set_xlabel("grey bin")
        ax.set_ylabel("share of all voxels")
        if log:
            ax.set_yscale("log")
        ax.legend()
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def phantom_figure(image: np.ndarray, label: np.ndarray, path, title: str = "") -> Path:
    """A phantom slice beside its labels (matrix light, fibre mid grey, porosity black)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    axes[0].imshow(image, cmap="gray", interpolation="nearest")
    axes[0].set_title("grey levels", fontsize=9)
    axes[1].imshow(np.choose(np.minimum(label, 2), [0.9, 0.5, 0.0]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("labels: matrix light, fibre grey, porosity black", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
