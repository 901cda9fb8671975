"""The paper's experiments on your data, each run through the bundle's own training and evaluation workflows.

    python scripts/experiments.py compare-variants --dataset_dir D --epochs 20
    python scripts/experiments.py ablation --dataset_dir D --epochs 20
    python scripts/experiments.py learning-curve --dataset_dir D --epochs 20
    python scripts/experiments.py plot --results runs/experiments/results.csv

Every finished run appends one row to the results CSV; a study started again skips the runs
already in it, so an interrupted study resumes. `--overrides '{"crop_size": [32, 32]}'`
passes any config id to every training and evaluation.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fire

from bundle.variants import ablation_overlays, network_kwargs

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
FIELDS = [
    "study", "run", "variant", "f0", "change", "train_slices", "parameters", "epochs", "train_seconds",
    "iou_matrix", "iou_fibre", "iou_porosity", "mean_iou", "bin_zero_oc_train_mean", "bin_zero_oc_test_mean",
]
ABLATIONS = ablation_overlays()


def _done(results: Path) -> set[str]:
    if not results.is_file():
        return set()
    with open(results, newline="") as f:
        return {row["run"] for row in csv.DictReader(f)}


def _append(results: Path, row: dict) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    new = not results.is_file()
    with open(results, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


CONFIG_OF = {"training": "train.json", "evaluate": "evaluate.json"}


def _config_files(workflow: str, variant: str) -> str:
    files = [CONFIGS / CONFIG_OF[workflow]] + ([CONFIGS / "variants" / f"{variant}.json"] if variant != "2d" else [])
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _cli(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def _bundle(workflow: str, variant: str, overrides: dict, log: Path) -> None:
    command = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", _config_files(workflow, variant), *_cli(overrides)]
    with open(log, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{workflow} failed (exit {result.returncode}); see {log}")


def _parameters(variant: str, network: dict) -> int:
    from bundle.networks import ModularUNet

    return sum(p.numel() for p in ModularUNet(**network_kwargs(variant, network)).parameters() if p.requires_grad)


def _run(study: str, name: str, variant: str, network: dict, extra: dict, change: str, train_slices, dataset_dir: str,
         epochs: int, work_dir: Path, results: Path, overrides: dict) -> None:
    if name in _done(results):
        print(f"skip {name}: already in {results}")
        return
    folder = work_dir / study / name.replace("/", "-").replace(" ", "_").replace("=", "-").replace(",", "_")
    folder.mkdir(parents=True, exist_ok=True)
    train_overrides = {"dataset_dir": dataset_dir, "output_dir": str(folder), "max_epochs": epochs, **network, **extra, **overrides}
    start = time.time()
    _bundle("training", variant, train_overrides, folder / "train.log")
    seconds = time.time() - start
    evaluate_overrides = {
        "dataset_dir": dataset_dir, "output_dir": str(folder / "eval"), "ckpt_path": str(folder / "models" / "model.pt"),
        "write_volumes": False, **network,
        **{k: v for k, v in overrides.items() if k in ("roi_size", "z_halo", "slab", "bf16")},
    }
    _bundle("evaluate", variant, evaluate_overrides, folder / "evaluate.log")
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    _append(results, {
        "study": study, "run": name, "variant": variant, "f0": network.get("network_def#f0", 16), "change": change,
        "train_slices": train_slices if train_slices is not None else "all", "parameters": _parameters(variant, network),
        "epochs": epochs, "train_seconds": round(seconds, 1),
        "iou_matrix": metrics["iou"]["matrix"], "iou_fibre": metrics["iou"]["fibre"], "iou_porosity": metrics["iou"]["porosity"],
        "mean_iou": metrics["mean_iou"],
        "bin_zero_oc_train_mean": metrics["baselines"]["bin_zero_oc_train"]["mean_iou"],
        "bin_zero_oc_test_mean": metrics["baselines"]["bin_zero_oc_test"]["mean_iou"],
    })
    print(f"{name}: mean IoU {metrics['mean_iou']:.4f} ({seconds:.0f} s)")


def compare_variants(dataset_dir: str = "demo", epochs: int = 20, f0s: tuple = (8, 16, 32), variants: tuple = ("2d", "2.5d", "3d"),
                     work_dir: str = "runs/experiments", results: str | None = None, overrides: dict | None = None) -> None:
    """2D, 2.5D and 3D for each f0 (the paper's Fig. 5a)."""
    work = Path(work_dir)
    for variant in variants:
        for f0 in f0s:
            _run("variants", f"{variant} f0={f0}", variant, {"network_def#f0": int(f0)}, {}, "", None, dataset_dir, epochs, work,
                 Path(results or work / "results.csv"), dict(overrides or {}))


def ablation(dataset_dir: str = "demo", epochs: int = 20, changes: tuple | None = None, f0: int = 16,
             work_dir: str = "runs/experiments", results: str | None = None, overrides: dict | None = None) -> None:
    """The 2D model with one change at a time (the paper's Fig. 5b); `--changes` picks some of them."""
    work = Path(work_dir)
    for change in changes or ABLATIONS:
        if change not in ABLATIONS:
            raise ValueError(f"unknown ablation {change!r}; choose from {list(ABLATIONS)}")
        network = {"network_def#f0": int(f0), **ABLATIONS[change]}
        _run("ablation", f"2d ablation {change}", "2d", network, {}, change, None, dataset_dir, epochs, work,
             Path(results or work / "results.csv"), dict(overrides or {}))


def learning_curve(dataset_dir: str = "demo", epochs: int = 20, sizes: tuple | None = None, f0: int = 16,
                   work_dir: str = "runs/experiments", results: str | None = None, overrides: dict | None = None) -> None:
    """The 2D model trained on the first 1, 2, 4, ... train slices, taken sequentially along z (the paper's Fig. 6)."""
    from bundle.data import load_dataset_description

    total = sum(z1 - z0 for e in load_dataset_description(dataset_dir) for z0, z1 in e.ranges("train"))
    if sizes is None:
        sizes, n = [], 1
        while n < total:
            sizes.append(n)
            n *= 2
        sizes.append(total)
    work = Path(work_dir)
    for n in sizes:
        _run("learning_curve", f"2d slices={n}", "2d", {"network_def#f0": int(f0)}, {"max_slices": int(n)}, "", int(n), dataset_dir,
             epochs, work, Path(results or work / "results.csv"), dict(overrides or {}))


def plot(results: str = "runs/experiments/results.csv", output_dir: str = "docs") -> None:
    """Figures like the paper's 5a (variants), 5b (ablations) and 6 (learning curve) from the results CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    variants = [r for r in rows if r["study"] == "variants"]
    if variants:
        fig, ax = plt.subplots(figsize=(6, 4))
        for variant, marker in (("2d", "o"), ("2.5d", "s"), ("3d", "^")):
            points = sorted((int(r["parameters"]), float(r["mean_iou"]) * 100, r["f0"]) for r in variants if r["variant"] == variant)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, color="black", label=variant)
                for x, y, f0 in points:
                    ax.annotate(f"({f0})", (x, y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(_save(fig, out / "fig5a_variants.png"))
    ablations = [r for r in rows if r["study"] == "ablation"]
    if ablations:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in ablations:
            ax.scatter(int(r["parameters"]), float(r["mean_iou"]) * 100, color="black", s=12)
            ax.annotate(r["change"], (int(r["parameters"]), float(r["mean_iou"]) * 100), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("mean IoU (%)")
        written.append(_save(fig, out / "fig5b_ablation.png"))
    curve = sorted((int(r["train_slices"]), float(r["mean_iou"]) * 100, float(r["bin_zero_oc_train_mean"]) * 100)
                   for r in rows if r["study"] == "learning_curve")
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", color="black", label="2D Modular U-Net")
        ax.axhline(curve[-1][2], linestyle="--", color="gray", label="Bin-ZeroOC (fitted on train)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("annotated train slices")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(_save(fig, out / "fig6_learning_curve.png"))
    for path in written:
        print(path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    fire.Fire({"compare-variants": compare_variants, "ablation": ablation, "learning-curve": learning_curve, "plot": plot})
