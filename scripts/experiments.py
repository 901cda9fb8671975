"""The paper's experiments on your data, each run through the bundle's own training and evaluation workflows.

    python scripts/experiments.py compare-variants --dataset_dir D --epochs 20
    python scripts/experiments.py ablation --dataset_dir D --epochs 20
    python scripts/experiments.py learning-curve --dataset_dir D --epochs 20
    python scripts/experiments.py levers --dataset_dir D --epochs 20 --models '{"shipped": "models/model.pt"}'
    python scripts/experiments.py plot --results runs/experiments/results.csv
    python scripts/experiments.py table --results runs/experiments/results.csv

Every study command takes the options of `Study`: `--dataset_dir` (default demo), `--epochs`
(20), `--crop_scale` (1.0), `--work_dir` (runs/experiments), `--results` (<work_dir>/results.csv)
and `--overrides`. Every finished run appends one row to the results CSV; a study started again skips the runs
already in it, so an interrupted study resumes, and a run whose configuration another study
already trained reuses that result. `--crop_scale 0.5` trains every variant on its paper crop
halved along each axis (a budget for CPUs); `--overrides '{"batch_size": 4}'` passes any
config id to every training (and roi_size, z_halo, slab, precision to every evaluation).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fire

from bundle.figures import save_figure
from bundle.variants import ablation_overlays, network_kwargs

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
FIELDS = [
    "study",
    "run",
    "variant",
    "f0",
    "change",
    "train_slices",
    "parameters",
    "epochs",
    "crop_size",
    "train_seconds",
    "eval_seconds_per_mvoxel",
    "iou_matrix",
    "iou_fibre",
    "iou_porosity",
    "mean_iou",
    "bin_zero_oc_train_mean",
    "bin_zero_oc_test_mean",
    "config",
]
ABLATIONS = ablation_overlays()
TRAINING_LEVERS = {
    "none": [],
    "three_planes": ["three_planes.json"],
    "paper_sampling": ["balance/paper_sampling.json"],
    "paper_loss": ["balance/paper_loss.json"],
}
INFERENCE_LEVERS = {
    "none": [],
    "tta": ["quality/tta.json"],
    "multi_axis": ["quality/multi_axis.json"],
    "tta+multi_axis": ["quality/multi_axis.json", "quality/tta.json"],
}
VARIANT_ORDER = ("2d", "2.5d", "3d")
CONFIG_OF = {"training": ["train.json"], "evaluate": ["inference.json", "evaluate.json"]}
EVALUATE_KEYS = ("roi_size", "z_halo", "slab", "precision")


def _rows(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    with open(results, newline="") as f:
        return list(csv.DictReader(f))


def _append(results: Path, row: dict) -> None:
    """One row, under a file lock, so that studies run side by side can share one CSV."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if f.tell() == 0:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _config_paths(workflow: str, variant: str, overlays: list[str]) -> list[Path]:
    files = [CONFIGS / name for name in CONFIG_OF[workflow]] + ([CONFIGS / "variants" / f"{variant}.json"] if variant != "2d" else [])
    return files + [CONFIGS / name for name in overlays]


def _config_files(workflow: str, variant: str, overlays: list[str]) -> str:
    return "[" + ",".join(f"'{f}'" for f in _config_paths(workflow, variant, overlays)) + "]"


def _cli(overrides: dict) -> list[str]:
    args = []
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else repr(value)]
    return args


def _bundle(workflow: str, variant: str, overlays: list[str], overrides: dict, log: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        workflow,
        "--config_file",
        _config_files(workflow, variant, overlays),
        *_cli(overrides),
    ]
    with open(log, "w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise RuntimeError(f"{workflow} failed (exit {result.returncode}); see {log}")


def _parameters(variant: str, network: dict) -> int:
    from bundle.networks import ModularUNet

    return sum(p.numel() for p in ModularUNet(**network_kwargs(variant, network)).parameters() if p.requires_grad)


def _defaults(variant: str) -> str:
    """Digest of the training defaults a run starts from, so a run made before a default changed is never reused."""
    text = "".join(path.read_text() for path in _config_paths("training", variant, []))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _slices(train_slices: int | None) -> str | int:
    return "all" if train_slices is None else train_slices


def _crop_size(variant: str, scale: float, u_depth: int) -> list[int]:
    """The variant's training crop (the paper's sizes), each side scaled and kept a multiple of 2**u_depth."""
    crop = json.loads((CONFIGS / "train.json").read_text())["crop_size"]
    if variant != "2d":
        crop = json.loads((CONFIGS / "variants" / f"{variant}.json").read_text()).get("crop_size", crop)
    multiple = 2**u_depth
    return [max(multiple, round(side * scale / multiple) * multiple) for side in crop]


class Study:
    """Runs of one study: each trains with the bundle's training workflow, then scores the best model with its
    evaluation workflow on the test split, and appends one CSV row. A run whose configuration already has a
    row (e.g. the ablation "default" and the 2D f0=16 variant) reuses it instead of training again."""

    def __init__(
        self,
        dataset_dir: str = "demo",
        epochs: int = 20,
        crop_scale: float = 1.0,
        work_dir: str = "runs/experiments",
        results: str | None = None,
        overrides: dict | None = None,
    ):
        self.dataset_dir = dataset_dir
        self.epochs = int(epochs)
        self.crop_scale = float(crop_scale)
        self.work_dir = Path(work_dir)
        self.results = Path(results or self.work_dir / "results.csv")
        self.overrides = dict(overrides or {})

    def _folder(self, study: str, name: str) -> Path:
        safe = name.replace("/", "-").replace(" ", "_").replace("=", "-").replace(",", "_").replace("+", "_")
        folder = self.work_dir / study / safe
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _training(self, variant: str, network: dict, extra: dict, overlays: list[str]) -> tuple[dict, str]:
        train = {"network_def#f0": 16, **network, **extra}
        if self.crop_scale != 1 and "crop_size" not in self.overrides:
            train["crop_size"] = _crop_size(variant, self.crop_scale, int(train.get("network_def#u_depth", 3)))
        config = json.dumps(
            {
                "variant": variant,
                "overlays": overlays,
                "epochs": self.epochs,
                "defaults": _defaults(variant),
                **train,
                **self.overrides,
            },
            sort_keys=True,
        )
        return train, config

    def _evaluate(self, variant: str, network: dict, checkpoint: Path, overlays: list[str], output: Path) -> dict:
        overrides = {
            "dataset_dir": self.dataset_dir,
            "output_dir": str(output),
            "ckpt_path": str(checkpoint),
            "write_volumes": False,
            **network,
            **{k: v for k, v in self.overrides.items() if k in EVALUATE_KEYS},
        }
        _bundle("evaluate", variant, overlays, overrides, output.parent / f"{output.name}.log")
        return json.loads((output / "metrics.json").read_text())

    def _row(self, study, name, variant, network, change, train_slices, crop, seconds, metrics, config) -> dict:
        return {
            "study": study,
            "run": name,
            "variant": variant,
            "f0": network.get("network_def#f0", 16),
            "change": change,
            "train_slices": _slices(train_slices),
            "parameters": _parameters(variant, network),
            "epochs": self.epochs,
            "crop_size": "x".join(map(str, crop)),
            "train_seconds": round(seconds, 1),
            "eval_seconds_per_mvoxel": round(metrics["seconds"] / metrics["test_voxels"] * 1e6, 3),
            "iou_matrix": metrics["iou"]["matrix"],
            "iou_fibre": metrics["iou"]["fibre"],
            "iou_porosity": metrics["iou"]["porosity"],
            "mean_iou": metrics["mean_iou"],
            "bin_zero_oc_train_mean": metrics["baselines"]["bin_zero_oc_train"]["mean_iou"],
            "bin_zero_oc_test_mean": metrics["baselines"]["bin_zero_oc_test"]["mean_iou"],
            "config": config,
        }

    def run(
        self,
        study: str,
        name: str,
        variant: str,
        network: dict,
        extra: dict | None = None,
        change: str = "",
        train_slices=None,
        overlays: list[str] | None = None,
    ) -> Path:
        """Train and evaluate one run (or reuse an equal one); returns the folder holding its models/model.pt."""
        overlays = list(overlays or [])
        train, config = self._training(variant, network, dict(extra or {}), overlays)
        rows = _rows(self.results)
        folder = self._folder(study, name)
        if any(r["run"] == name for r in rows):
            print(f"skip {name}: already in {self.results}")
            return self._trained_folder(config, folder)
        same = [r for r in rows if r["config"] == config]
        if same:
            row = {
                **same[0],
                "study": study,
                "run": name,
                "change": change,
                "train_slices": _slices(train_slices),
            }
            _append(self.results, row)
            print(f"{name}: same configuration as {same[0]['run']}, its result reused")
            return self._trained_folder(config, folder)
        overrides = {
            "dataset_dir": self.dataset_dir,
            "output_dir": str(folder),
            "max_epochs": self.epochs,
            **train,
            **self.overrides,
        }
        start = time.time()
        _bundle("training", variant, overlays, overrides, folder / "train.log")
        seconds = time.time() - start
        (folder / "config.json").write_text(config + "\n")
        metrics = self._evaluate(
            variant,
            {k: v for k, v in train.items() if k.startswith("network_def#")},
            folder / "models" / "model.pt",
            [],
            folder / "eval",
        )
        crop = train.get("crop_size") or self.overrides.get("crop_size") or _crop_size(variant, 1, 3)
        _append(
            self.results, self._row(study, name, variant, train, change, train_slices, crop, seconds, metrics, config)
        )
        print(f"{name}: mean IoU {metrics['mean_iou']:.4f} ({seconds:.0f} s)")
        return folder

    def _trained_folder(self, config: str, fallback: Path) -> Path:
        """The folder of the run that trained this configuration (its config.json says so)."""
        for path in sorted(self.work_dir.glob("*/*/config.json")):
            if path.read_text().strip() == config:
                return path.parent
        return fallback

    def score(
        self, study: str, name: str, variant: str, network: dict, checkpoint: Path, change: str, overlays: list[str]
    ) -> None:
        """Evaluate an existing checkpoint with inference overlays (no training)."""
        if any(r["run"] == name for r in _rows(self.results)):
            print(f"skip {name}: already in {self.results}")
            return
        folder = self._folder(study, name)
        metrics = self._evaluate(variant, network, Path(checkpoint), overlays, folder / "eval")
        config = json.dumps({"checkpoint": str(checkpoint), "overlays": overlays}, sort_keys=True)
        _append(
            self.results,
            {**self._row(study, name, variant, network, change, None, [], 0.0, metrics, config), "epochs": ""},
        )
        print(f"{name}: mean IoU {metrics['mean_iou']:.4f}, porosity {metrics['iou']['porosity']:.4f}")


def compare_variants(
    f0s: tuple = (8, 16, 32),
    variants: tuple = ("2d", "2.5d", "3d"),
    **options,
) -> None:
    """2D, 2.5D and 3D for each f0 (the paper's Fig. 5a)."""
    study = Study(**options)
    for variant in variants:
        for f0 in f0s:
            study.run("variants", f"{variant} f0={f0}", variant, {"network_def#f0": int(f0)})


def ablation(
    changes: tuple | None = None,
    f0: int = 16,
    **options,
) -> None:
    """The 2D model with one change at a time (the paper's Fig. 5b); `--changes` picks some of them."""
    study = Study(**options)
    for change in changes or ABLATIONS:
        if change not in ABLATIONS:
            raise ValueError(f"unknown ablation {change!r}; choose from {list(ABLATIONS)}")
        study.run(
            "ablation", f"2d ablation {change}", "2d", {"network_def#f0": int(f0), **ABLATIONS[change]}, change=change
        )


def learning_curve(
    sizes: tuple | None = None,
    f0: int = 16,
    **options,
) -> None:
    """The 2D model trained on the first 1, 2, 4, ... train slices, taken sequentially along z (the paper's Fig. 6)."""
    from bundle.data import load_dataset_description

    study = Study(**options)
    total = sum(z1 - z0 for e in load_dataset_description(study.dataset_dir) for z0, z1 in e.ranges("train"))
    if sizes is None:
        sizes, n = [], 1
        while n < total:
            sizes.append(n)
            n *= 2
        sizes.append(total)
    for n in sizes:
        extra = {} if int(n) >= total else {"max_slices": int(n)}
        study.run("learning_curve", f"2d slices={n}", "2d", {"network_def#f0": int(f0)}, extra, train_slices=int(n))


def levers(
    training: tuple = tuple(TRAINING_LEVERS),
    inference: tuple = tuple(INFERENCE_LEVERS),
    trained_inference: tuple = ("multi_axis",),
    models: dict | None = None,
    f0: int = 16,
    **options,
) -> None:
    """Levers beyond the paper on the 2D model: training options (three-plane crops, the paper's uniform crop
    sampling instead of the default pore over-sampling, the paper's plain Jaccard2 instead of the default
    class-weighted one), each trained at the study budget; then the `inference` options (TTA, multi-axis fusion)
    scored on any `--models '{"name": "path/model.pt"}'` (e.g. the shipped one), and the `trained_inference` ones
    on the study's z-only and three-plane models (does a model need to have seen x-z / y-z planes to gain from
    multi-axis fusion?)."""
    study = Study(**options)
    network = {"network_def#f0": int(f0)}
    for name in training:
        if name not in TRAINING_LEVERS:
            raise ValueError(f"unknown training lever {name!r}; choose from {list(TRAINING_LEVERS)}")
    for name in (*inference, *trained_inference):
        if name not in INFERENCE_LEVERS:
            raise ValueError(f"unknown inference lever {name!r}; choose from {list(INFERENCE_LEVERS)}")
    trained = {
        name: study.run("levers", f"2d train {name}", "2d", network, change=name, overlays=TRAINING_LEVERS[name])
        for name in training
    }
    checkpoints = {
        f"train {name}": folder / "models" / "model.pt"
        for name, folder in trained.items()
        if name in ("none", "three_planes")
    }
    checkpoints |= {name: Path(path) for name, path in (models or {}).items()}
    for model, checkpoint in checkpoints.items():
        given = model in (models or {})
        for lever in inference if given else trained_inference:
            if lever != "none" or given:
                study.score(
                    "levers", f"2d {model} + infer {lever}", "2d", network, checkpoint, lever, INFERENCE_LEVERS[lever]
                )


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
        for variant, marker in zip(VARIANT_ORDER, "os^"):
            points = sorted(
                (int(r["parameters"]), float(r["mean_iou"]) * 100, r["f0"]) for r in variants if r["variant"] == variant
            )
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, color="black", label=variant)
                for x, y, f0 in points:
                    ax.annotate(f"({f0})", (x, y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(save_figure(fig, out / "fig5a_variants.png"))
    ablations = [r for r in rows if r["study"] == "ablation"]
    if ablations:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in ablations:
            ax.scatter(int(r["parameters"]), float(r["mean_iou"]) * 100, color="black", s=12)
            ax.annotate(r["change"], (int(r["parameters"]), float(r["mean_iou"]) * 100), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("mean IoU (%)")
        written.append(save_figure(fig, out / "fig5b_ablation.png"))
    curve = sorted(
        (int(r["train_slices"]), float(r["mean_iou"]) * 100, float(r["bin_zero_oc_train_mean"]) * 100)
        for r in rows
        if r["study"] == "learning_curve"
    )
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", color="black", label="2D Modular U-Net")
        ax.axhline(curve[-1][2], linestyle="--", color="gray", label="Bin-ZeroOC (fitted on train)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("annotated train slices")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(save_figure(fig, out / "fig6_learning_curve.png"))
    for path in written:
        print(path)


def _reference(row: dict, by_run: dict) -> dict | None:
    """The run a row is compared with: the unchanged 2D model for ablations and training levers, the same model
    without inference levers for inference levers."""
    if row["study"] == "ablation":
        return by_run.get("2d ablation default")
    if row["study"] == "levers" and " + infer " in row["run"]:
        model = row["run"].split(" + infer ")[0]
        return by_run.get(f"{model} + infer none") or by_run.get(model)
    if row["study"] == "levers":
        return by_run.get("2d train none")
    return None


def table(results: str = "runs/experiments/results.csv") -> None:
    """Markdown tables of every study in the results CSV (IoU in %, differences against each study's reference)."""
    rows = _rows(Path(results))
    by_run = {r["run"]: r for r in rows}
    pct = lambda r, key: float(r[key]) * 100  # noqa: E731
    for study in dict.fromkeys(r["study"] for r in rows):
        print(f"\n### {study}\n")
        print("| run | parameters | matrix | fibre | porosity | mean | d porosity | d mean | train s | eval s/Mvox |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        chosen = [r for r in rows if r["study"] == study]
        if study == "variants":
            chosen.sort(key=lambda r: (VARIANT_ORDER.index(r["variant"]), int(r["f0"])))
        if study == "learning_curve":
            chosen.sort(key=lambda r: int(r["train_slices"]) if r["train_slices"].isdigit() else float("inf"))
        for r in chosen:
            ref = _reference(r, by_run)
            deltas = [
                f"{pct(r, k) - pct(ref, k):+.1f}" if ref and ref is not r else "" for k in ("iou_porosity", "mean_iou")
            ]
            train = r["train_seconds"] if float(r["train_seconds"] or 0) else ""
            print(
                f"| {r['run']} | {int(r['parameters']):,} | {pct(r, 'iou_matrix'):.1f} | {pct(r, 'iou_fibre'):.1f} | {pct(r, 'iou_porosity'):.1f} "
                f"| **{pct(r, 'mean_iou'):.1f}** | {deltas[0]} | {deltas[1]} | {train} | {float(r['eval_seconds_per_mvoxel']):.1f} |"
            )
    if rows:
        print(
            f"\nBin-ZeroOC mean IoU on the same test slices: {pct(rows[0], 'bin_zero_oc_train_mean'):.1f} fitted on the train "
            f"slices, {pct(rows[0], 'bin_zero_oc_test_mean'):.1f} fitted on the test slices themselves."
        )


if __name__ == "__main__":
    fire.Fire(
        {
            "compare-variants": compare_variants,
            "ablation": ablation,
            "learning-curve": learning_curve,
            "levers": levers,
            "plot": plot,
            "table": table,
        }
    )
