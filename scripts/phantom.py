"""Make the synthetic GF-PA66 phantom: `python scripts/phantom.py make --output_dir demo`."""

from __future__ import annotations

import json

import fire

from bundle.phantom import PhantomConfig, make_phantom


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


if __name__ == "__main__":
    fire.Fire({"make": make})
