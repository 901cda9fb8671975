"""The annotation loop around a segmented scan: which slices to label next, out to an editor, back into training.

    python scripts/annotate.py suggest --input_path scan.raw --prediction_dir out --n 3
    python scripts/annotate.py export --input_path scan.raw --prediction_dir out --export_dir to_correct
    python scripts/annotate.py import --export_dir to_correct --dataset_dir data

`suggest` picks evenly spaced z-planes (`--strategy even`, the default: best in the simulated
study, docs/annotation.md) or ranks the planes normal to z, y and x by the model's uncertainty
map (`--strategy uncertainty`; written by `run inference`), pores weighted, and writes
`suggestions.json`; `export` writes those slices
(or `--suggestions FILE`) as TIFF image + labels pairs seeded with the prediction; `import`
brings the corrected labels into a sparse annotation volume listed in `dataset.json`, which
`run training` (2D / 2.5D) then draws its crops from.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundle.annotation import even_planes, export_slices, import_slices, pick_slices, slice_scores
from bundle.cli import run_commands
from bundle.io import open_volume, volume_stem, write_atomically


def _outputs(input_path: str, prediction_dir: str):
    stem = volume_stem(input_path)
    folder = Path(prediction_dir)
    for name in ("uncertainty", "seg"):
        if not (folder / f"{stem}.{name}.raw").is_file():
            raise FileNotFoundError(
                f"{folder / f'{stem}.{name}.raw'}: not found; run inference on {input_path} into {folder} first "
                "(with the default --save_uncertainty True)."
            )
    return open_volume(folder / f"{stem}.uncertainty.raw"), open_volume(folder / f"{stem}.seg.raw")


def suggest(
    input_path: str,
    prediction_dir: str,
    n: int = 3,
    strategy: str = "even",
    spacing: int = 8,
    rare_weight: float = 5.0,
    z_range: tuple | None = None,
    exclude: dict | None = None,
    border: int = 8,
    output: str = "suggestions.json",
) -> None:
    """The `n` planes to annotate next: evenly spaced z-planes, or the planes of the three axes with the highest
    weighted mean uncertainty, `spacing` apart.

    Args:
        input_path: the scan that was segmented.
        prediction_dir: where `run inference` wrote `<stem>.uncertainty.raw` and `<stem>.seg.raw`.
        n: how many planes to suggest.
        strategy: "even" (z-planes filling the widest gaps between annotated ones) or "uncertainty".
        spacing: the least distance between two picks on one axis (uncertainty).
        rare_weight: how much a voxel predicted as porosity counts (uncertainty).
        z_range: [z0, z1) to choose z-planes in and score y/x planes over (default: the whole depth).
        exclude: planes already annotated, e.g. '{"z": [10, 40]}'.
        border: planes this close to a face of the volume are not suggested.
        output: the JSON list written, best first.
    """
    if strategy not in ("even", "uncertainty"):
        raise ValueError(f"strategy must be 'even' or 'uncertainty', got {strategy!r}.")
    uncertainty, segmentation = _outputs(input_path, prediction_dir)
    if strategy == "even":
        depth = segmentation.shape[0]
        lo, hi = z_range if z_range is not None else (border, depth - border)
        picks = even_planes((max(int(lo), border), min(int(hi), depth - border)), int(n), exclude)
    else:
        scores = slice_scores(uncertainty, segmentation, rare_weight=rare_weight, z_range=z_range)
        picks = pick_slices(scores, int(n), int(spacing), exclude, int(border))
    for rank, pick in enumerate(picks, 1):
        print(f"{rank}. {pick['axis']}-plane {pick['index']}" + (f": uncertainty {pick['score']:.4f}" if "score" in pick else ""))
    write_atomically(output, json.dumps(picks, indent=1) + "\n")


def export(input_path: str, prediction_dir: str, export_dir: str, suggestions: str = "suggestions.json") -> None:
    """Write the suggested planes as `<stem>.<axis><index>.image.tif` and `.labels.tif` (the prediction to correct)."""
    _, segmentation = _outputs(input_path, prediction_dir)
    picks = json.loads(Path(suggestions).read_text())
    manifest = export_slices(input_path, segmentation, picks, export_dir)
    print(f"{len(picks)} slices in {export_dir}; read {Path(export_dir) / 'HOW_TO_CORRECT.txt'} ({manifest.name} lists them)")


def import_(export_dir: str, dataset_dir: str, num_classes: int = 3) -> None:
    """Read the corrected labels back into `<stem>.annotations.raw` and list the planes in `dataset.json`."""
    result = import_slices(export_dir, dataset_dir, num_classes)
    print(json.dumps(result))


COMMANDS = {"suggest": suggest, "export": export, "import": import_}


if __name__ == "__main__":
    run_commands(COMMANDS)
