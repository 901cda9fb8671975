"""Make the synthetic GF-PA66 phantom: `python scripts/phantom.py make --output_dir demo`, or draws of the
phantom family: `python scripts/phantom.py family --output_dir draws --seeds '[100,101]'`."""

from __future__ import annotations

import json

import numpy as np

from bundle.baselines import GreyClassHistogram
from bundle.cli import run_commands
from bundle.data import combine_dataset_descriptions, load_dataset_description
from bundle.figures import phantom_figure
from bundle.io import write_atomically
from bundle.metrics import confusion_matrix, iou_per_class
from bundle.phantom import PhantomConfig, PhantomFamily, make_family, make_phantom


def make(output_dir: str = "demo", shape: tuple = (128, 256, 256), seed: int = 0, name: str = "phantom", slab: int = 32, **overrides) -> None:
    """Write `<name>.raw`, `<name>.ground_truth.raw` (+ `.raw.info`) and `dataset.json` into OUTPUT_DIR.

    Args:
        output_dir: destination folder (created if needed).
        shape: volume size (z, y, x) in voxels, e.g. --shape '[128,256,256]'.
        seed: random seed; the same seed and shape give byte-identical files.
        name: file stem.
        slab: slices rendered at a time (memory bound; does not change the result).
        overrides: any PhantomConfig field, e.g. --noise_std 0.03 --fibre_fraction 0.2.
    """
    summary = make_phantom(output_dir, tuple(shape), seed=seed, name=name, slab=slab, config=PhantomConfig(**overrides))
    print(json.dumps(summary, indent=2))


def family(output_dir: str = "draws", seeds: tuple = (100,), shape: tuple = (64, 192, 192), edge: bool = False, slab: int = 32,
           domain: str = "image", paper_seeds: tuple = ()) -> None:
    """Write one phantom per seed, material and acquisition drawn from `bundle.phantom.PhantomFamily`'s ranges, as
    `draw<seed>.raw` (+ labels), and one `dataset.json` listing them all.

    Args:
        output_dir: destination folder (created if needed).
        seeds: one volume per seed, e.g. --seeds '[100,101,102]'; a seed gives the same draw and bytes every time.
        shape: size (z, y, x) of each volume.
        edge: draw every range in its outer tenths only (held-out scans at the edges of the training distribution).
        slab: slices rendered at a time.
        domain: "image" (today's family), "projection" (forward projection, photons, detector, FBP) or "mixed" (half each).
        paper_seeds: paper-style phantoms (the demo's config, `make`) to list beside the draws, as `paper<seed>.raw`,
            e.g. --paper_seeds '[1,2]' (the shipped generalist's training set, docs/training.md).
    """
    family = PhantomFamily() if domain == "image" else PhantomFamily.projection_family(domain)
    summary = make_family(output_dir, [int(s) for s in seeds], tuple(int(v) for v in shape), edge=bool(edge), slab=int(slab), family=family,
                          paper_seeds=[int(s) for s in paper_seeds])
    print(json.dumps(summary, indent=2))


def combine(output_dir: str, datasets: tuple) -> None:
    """Write OUTPUT_DIR/dataset.json listing every volume of the DATASETS (folders holding a dataset.json), paths
    relative to OUTPUT_DIR; no volume is copied. E.g. the shipped model's training set from two `family` runs:
    --output_dir data/v4 --datasets '["data/mixed24","data/edge8"]'."""
    print(combine_dataset_descriptions(output_dir, [str(d) for d in datasets]))


def baseline(dataset_dir: str = "demo", slab: int = 16, output: str | None = None) -> None:
    """Class fractions and Bin-ZeroOC fitted on the whole labelled volume (the paper's "expected performance"):
    IoU per class and mean, in %; printed, and written as JSON to `output`."""
    (entry,) = load_dataset_description(dataset_dir)
    image, label = entry.image(), entry.label()
    histogram = GreyClassHistogram(3)
    for z in range(0, image.shape[0], slab):
        histogram.add(image.read(z, z + slab), label.read(z, z + slab))
    table = histogram.bin_zero_oc_table()
    confusion = sum(confusion_matrix(table[image.read(z, z + slab)], label.read(z, z + slab), 3) for z in range(0, image.shape[0], slab))
    iou = iou_per_class(confusion)
    names = ["matrix", "fibre", "porosity"]
    result = {
        "shape_zyx": list(image.shape),
        "fraction": dict(zip(names, np.round(confusion.sum(axis=1) / confusion.sum() * 100, 2).tolist())),
        "iou": dict(zip(names, np.round(iou * 100, 1).tolist())),
        "mean_iou": round(float(np.mean(iou)) * 100, 1),
    }
    print(json.dumps(result))
    if output:
        write_atomically(output, json.dumps(result, indent=1) + "\n")


def figure(dataset_dir: str = "demo", output: str = "docs/phantom_slice.png", z: int | None = None) -> None:
    """Save a slice of the phantom beside its labels as PNG (the middle slice unless --z is given)."""
    (entry,) = load_dataset_description(dataset_dir)
    image = entry.image()
    z = image.shape[0] // 2 if z is None else z
    phantom_figure(image.read(z, z + 1)[0], entry.label().read(z, z + 1)[0], output, f"synthetic GF-PA66 phantom, slice z={z}")
    print(output)


COMMANDS = {"make": make, "family": family, "combine": combine, "baseline": baseline, "figure": figure}


if __name__ == "__main__":
    run_commands(COMMANDS)
