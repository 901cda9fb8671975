"""`Study`: a named set of training runs through the bundle's own workflows, each appending one row to a results
CSV, so an interrupted study resumes and a run another study already trained is reused."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path

from .. import BUNDLE_ROOT
from ..launcher import run_bundle
from ..variants import ablation_overlays, network_kwargs, variant_overlays

ROOT = Path(BUNDLE_ROOT)


CONFIGS = ROOT / "configs"


FIELDS = [
    "study",
    "run",
    "seed",
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
    "precision_fibre",
    "recall_fibre",
    "precision_porosity",
    "recall_porosity",
    "bin_zero_oc_train_mean",
    "bin_zero_oc_test_mean",
    "bin_zero_oc_test_porosity",
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


CONFIG_OF = {"training": ["train.json"], "evaluate": ["inference.json", "evaluate.json"], "inference": ["inference.json"]}


EVALUATE_KEYS = ("roi_size", "z_halo", "slab", "precision", "threads")


def read_rows(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    with open(results, newline="") as f:
        return list(csv.DictReader(f))


def append_row(results: Path, row: dict) -> None:
    """One row, under a file lock, so that studies run side by side can share one CSV; a CSV begun before a column
    was added keeps its columns."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        header = next(csv.reader(f), None)
        writer = csv.DictWriter(f, fieldnames=header or FIELDS, extrasaction="ignore")
        if not header:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def _config_paths(workflow: str, variant: str, overlays: list[str]) -> list[Path]:
    files = [CONFIGS / name for name in CONFIG_OF[workflow]] + variant_overlays(variant)
    return files + [CONFIGS / name for name in overlays]


def run_workflow(workflow: str, variant: str, overlays: list[str], overrides: dict, log: Path) -> None:
    run_bundle(workflow, _config_paths(workflow, variant, overlays), overrides, log)


def _parameters(variant: str, network: dict) -> int:
    from ..networks import ModularUNet

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
    for overlay in variant_overlays(variant):
        crop = json.loads(overlay.read_text()).get("crop_size", crop)
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
        seeds: tuple = (0,),
        base_overlays: tuple = (),
    ):
        self.dataset_dir = dataset_dir
        self.base_overlays = list(base_overlays)
        self.seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
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

    def _training(self, variant: str, network: dict, extra: dict, overlays: list[str], seed: int) -> tuple[dict, str]:
        train = {"network_def#f0": 16, **network, **extra, "seed": seed}
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
        run_workflow("evaluate", variant, overlays, overrides, output.parent / f"{output.name}.log")
        return json.loads((output / "metrics.json").read_text())

    def _row(self, study, name, seed, variant, network, change, train_slices, crop, seconds, metrics, config) -> dict:
        return {
            "study": study,
            "run": name,
            "seed": seed,
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
            **{f"{measure}_{name}": metrics["report"][name][measure] for name in ("fibre", "porosity") for measure in ("precision", "recall")},
            "bin_zero_oc_train_mean": metrics["baselines"]["bin_zero_oc_train"]["mean_iou"],
            "bin_zero_oc_test_mean": metrics["baselines"]["bin_zero_oc_test"]["mean_iou"],
            "bin_zero_oc_test_porosity": metrics["baselines"]["bin_zero_oc_test"]["iou"]["porosity"],
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
    ) -> dict[int, Path]:
        """Train and evaluate one run per seed (or reuse an equal one); returns each seed's folder holding models/model.pt."""
        overlays = self.base_overlays + list(overlays or [])
        return {seed: self._run_seed(study, name, seed, variant, network, dict(extra or {}), change, train_slices, overlays) for seed in self.seeds}

    def _run_seed(self, study, name, seed, variant, network, extra, change, train_slices, overlays) -> Path:
        train, config = self._training(variant, network, extra, overlays, seed)
        rows = read_rows(self.results)
        folder = self._folder(study, f"{name} seed={seed}")
        if any(r["run"] == name and row_seed(r) == seed for r in rows):
            print(f"skip {name} seed {seed}: already in {self.results}")
            return self._trained_folder(config, folder)
        same = [r for r in rows if r["config"] == config]
        if same:
            row = {**same[0], "study": study, "run": name, "seed": seed, "change": change, "train_slices": _slices(train_slices)}
            append_row(self.results, row)
            print(f"{name} seed {seed}: same configuration as {same[0]['run']}, its result reused")
            return self._trained_folder(config, folder)
        overrides = {
            "dataset_dir": self.dataset_dir,
            "output_dir": str(folder),
            "max_epochs": self.epochs,
            **train,
            **self.overrides,
        }
        start = time.time()
        run_workflow("training", variant, overlays, overrides, folder / "train.log")
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
        append_row(self.results, self._row(study, name, seed, variant, train, change, train_slices, crop, seconds, metrics, config))
        print(f"{name} seed {seed}: mean IoU {metrics['mean_iou']:.4f} ({seconds:.0f} s)")
        return folder

    def _trained_folder(self, config: str, fallback: Path) -> Path:
        """The folder of the run that trained this configuration (its config.json says so)."""
        for path in sorted(self.work_dir.glob("*/*/config.json")):
            if path.read_text().strip() == config:
                return path.parent
        return fallback

    def score(
        self, study: str, name: str, seed: int, variant: str, network: dict, checkpoint: Path, change: str, overlays: list[str],
        train_slices: int | None = None,
    ) -> None:
        """Evaluate an existing checkpoint with inference overlays (no training); `seed` is the model's or the data's."""
        if any(r["run"] == name and row_seed(r) == seed for r in read_rows(self.results)):
            print(f"skip {name} seed {seed}: already in {self.results}")
            return
        folder = self._folder(study, f"{name} seed={seed}")
        metrics = self._evaluate(variant, network, Path(checkpoint), overlays, folder / "eval")
        config = json.dumps({"checkpoint": str(checkpoint), "overlays": overlays, "dataset_dir": str(self.dataset_dir)}, sort_keys=True)
        append_row(
            self.results,
            {**self._row(study, name, seed, variant, network, change, train_slices, [], 0.0, metrics, config), "epochs": ""},
        )
        print(f"{name} seed {seed}: mean IoU {metrics['mean_iou']:.4f}, porosity {metrics['iou']['porosity']:.4f}")


def row_seed(row: dict) -> int:
    """A row's seed; rows written before seeds were recorded ran with the default seed 0."""
    return int(row.get("seed") or 0)
