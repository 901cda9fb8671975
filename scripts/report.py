"""Materials report of a segmentation: `python scripts/report.py eval/phantom.seg.raw --image demo/phantom.raw`.

Writes `<stem>.report.json`, `<stem>.report.png` (pore-size histogram, fractions, three
orthogonal slices overlaid) and `<stem>.report.html` beside the label volume, or into
`--output_dir`.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bundle.cli import run_commands
from bundle.figures import save_figure
from bundle.io import open_volume, volume_stem, write_atomically
from bundle.report import materials_report


def _voxel_size(*volumes) -> tuple[float, str]:
    for volume in volumes:
        if volume is None:
            continue
        meta = {k.lower(): v for k, v in volume.meta.items()}
        if "voxel_size" in meta:
            size = meta["voxel_size"]
            return float(size[0] if isinstance(size, list) else size), str(meta.get("voxel_unit", "um"))
    return 1.0, "voxel"


def _page(report: dict, labels, image, path: Path) -> None:
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(2, 3)
    depth, ny, nx = labels.shape
    planes = [
        (f"x-y plane, z={depth // 2}", labels.read(depth // 2, depth // 2 + 1)[0], image.read(depth // 2, depth // 2 + 1)[0] if image else None),
        (f"x-z plane, y={ny // 2}", labels.read(0, depth, slice(ny // 2, ny // 2 + 1))[:, 0], image.read(0, depth, slice(ny // 2, ny // 2 + 1))[:, 0] if image else None),
        (f"y-z plane, x={nx // 2}", labels.read(0, depth, slice(None), slice(nx // 2, nx // 2 + 1))[:, :, 0], image.read(0, depth, slice(None), slice(nx // 2, nx // 2 + 1))[:, :, 0] if image else None),
    ]
    for k, (title, lab, img) in enumerate(planes):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(img if img is not None else lab, cmap="gray", interpolation="nearest")
        ax.contourf(lab == 1, levels=[0.5, 1.5], colors="none", hatches=["////"])
        ax.contour(lab == 2, levels=[0.5], colors="#ffd400", linewidths=1.0)
        ax.set_title(f"{title}: fibre hatched, pores contoured", fontsize=8)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[1, 0])
    diameters = report["pores"]["equivalent_diameter"]["all"]
    if diameters:
        ax.hist(diameters, bins=30, color="gray", edgecolor="black")
    ax.set_xlabel(f"pore equivalent diameter ({report['unit']})")
    ax.set_ylabel("pores")
    ax.set_title(f"{report['pores']['count']} pores", fontsize=9)
    ax = fig.add_subplot(grid[1, 1])
    phases = report["phases"]
    names = list(phases["fraction"])
    ax.bar(names, [phases["fraction"][n] * 100 for n in names], color="lightgray", edgecolor="black")
    if "fraction_low" in phases:
        low = np.array([phases["fraction_low"][n] for n in names]) * 100
        high = np.array([phases["fraction_high"][n] for n in names]) * 100
        mid = np.array([phases["fraction"][n] for n in names]) * 100
        ax.errorbar(names, mid, yerr=[np.maximum(mid - low, 0), np.maximum(high - mid, 0)], fmt="none", ecolor="black", capsize=5)
    ax.set_yscale("log")
    ax.set_ylabel("volume fraction (%)")
    ax = fig.add_subplot(grid[1, 2])
    ax.set_axis_off()
    orientation = report["fibre_orientation"]
    lines = ["fibre orientation tensor (z, y, x):"] + ["  " + "  ".join(f"{v:6.3f}" for v in row) for row in orientation["tensor_zyx"]]
    lines += ["dominant directions (z, y, x) and shares:"]
    lines += [f"  [{', '.join(f'{c:+.2f}' for c in d)}]  {e:.2f}" for d, e in zip(orientation["directions_zyx"], orientation["eigenvalues"])]
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    save_figure(fig, path, dpi=100)


def make(labels: str, probabilities: str | None = None, image: str | None = None, output_dir: str | None = None,
         voxel_size: float | None = None, slab: int = 32, largest: int = 10) -> None:
    """Report on LABELS (0 matrix, 1 fibre, 2 porosity); PROBABILITIES adds confidence bands, IMAGE the grey slices.

    Args:
        labels: the label volume (e.g. `<stem>.seg.raw` of the inference workflow).
        probabilities: optional `<stem>.prob.raw` (classes as the slowest axis).
        image: optional grey volume for the slice overlays.
        output_dir: where to write; default beside LABELS.
        voxel_size: physical voxel edge; default from the sidecars (VOXEL_SIZE, VOXEL_UNIT), else voxels.
        slab: slices in memory at a time.
        largest: how many of the largest pores to list.
    """
    label_volume = open_volume(labels)
    prob_volume = open_volume(probabilities) if probabilities else None
    image_volume = open_volume(image) if image else None
    size, unit = (float(voxel_size), "um") if voxel_size else _voxel_size(label_volume, image_volume)
    report = materials_report(label_volume, prob_volume, voxel_size=size, unit=unit, slab=slab, largest=largest)
    out = Path(output_dir) if output_dir else Path(labels).parent
    out.mkdir(parents=True, exist_ok=True)
    stem = volume_stem(labels)
    json_path, png_path, html_path = out / f"{stem}.report.json", out / f"{stem}.report.png", out / f"{stem}.report.html"
    write_atomically(json_path, json.dumps(report, indent=2) + "\n")
    _page(report, label_volume, image_volume, png_path)
    rows = "".join(f"<tr><td>{n}</td><td>{v * 100:.3f} %</td></tr>" for n, v in report["phases"]["fraction"].items())
    html = (f"<html><head><meta charset='utf-8'><title>{stem} report</title></head><body><h1>{stem}</h1>"
            f"<table border='1'><tr><th>phase</th><th>volume fraction</th></tr>{rows}</table>"
            f"<p>{report['pores']['count']} pores; mean equivalent diameter {report['pores']['equivalent_diameter']['mean']:.2f} {unit}</p>"
            f"<img src='{png_path.name}' style='max-width:100%'><pre>{json.dumps(report['fibre_orientation'], indent=1)}</pre></body></html>")
    write_atomically(html_path, html)
    print(json_path)


COMMANDS = make


if __name__ == "__main__":
    run_commands(COMMANDS)
