"""The paper's experiments on your data, each run through the bundle's own training and evaluation workflows.

    python scripts/experiments.py compare-variants --dataset_dir D --epochs 20
    python scripts/experiments.py ablation --dataset_dir D --epochs 20
    python scripts/experiments.py learning-curve --dataset_dir D --epochs 20
    python scripts/experiments.py levers --dataset_dir D --epochs 20 --seeds '[0,1,2]'
    python scripts/experiments.py inference-levers --data_seeds '[11,12,13]' --models '{"shipped": "models/model.pt"}'
    python scripts/experiments.py generalist --epochs 60 --results docs/results/study_generalist.csv
    python scripts/experiments.py shipped --output docs/results/shipped_model.json
    python scripts/experiments.py training-history --log runs/full_default.log --label "today's defaults" --output docs/results/full_default_training.json
    python scripts/experiments.py annotation-loop --data_seeds '[21,22]' --rounds 3 --results docs/results/study_annotation.csv
    python scripts/experiments.py fine-tune --pretrained models/model.pt --data_seeds '[200,201,202]' --results docs/results/study_fine_tune.csv
    python scripts/experiments.py plot --results runs/experiments/results.csv
    python scripts/experiments.py table --results runs/experiments/results.csv

Every study command takes the options of `Study`: `--dataset_dir` (default demo), `--epochs`
(20), `--crop_scale` (1.0), `--work_dir` (runs/experiments), `--results` (<work_dir>/results.csv),
`--seeds` ([0]: every run is trained once per seed), `--base_overlays` (training overlays merged
before each run's own, e.g. to rerun a study made under other defaults) and `--overrides`. Every finished run appends one row to the results CSV; a study started again skips the runs
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
import re
import time
from pathlib import Path

from bundle.cli import run_commands
from bundle.figures import save_figure
from bundle.launcher import command_line, run_bundle
from bundle.variants import ablation_overlays, network_kwargs

ROOT = Path(__file__).resolve().parent.parent
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


def _rows(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    with open(results, newline="") as f:
        return list(csv.DictReader(f))


def _append(results: Path, row: dict) -> None:
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
    files = [CONFIGS / name for name in CONFIG_OF[workflow]] + ([CONFIGS / "variants" / f"{variant}.json"] if variant != "2d" else [])
    return files + [CONFIGS / name for name in overlays]


def _bundle(workflow: str, variant: str, overlays: list[str], overrides: dict, log: Path) -> None:
    run_bundle(workflow, _config_paths(workflow, variant, overlays), overrides, log)


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
        _bundle("evaluate", variant, overlays, overrides, output.parent / f"{output.name}.log")
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
        rows = _rows(self.results)
        folder = self._folder(study, f"{name} seed={seed}")
        if any(r["run"] == name and _seed(r) == seed for r in rows):
            print(f"skip {name} seed {seed}: already in {self.results}")
            return self._trained_folder(config, folder)
        same = [r for r in rows if r["config"] == config]
        if same:
            row = {**same[0], "study": study, "run": name, "seed": seed, "change": change, "train_slices": _slices(train_slices)}
            _append(self.results, row)
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
        _append(self.results, self._row(study, name, seed, variant, train, change, train_slices, crop, seconds, metrics, config))
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
        if any(r["run"] == name and _seed(r) == seed for r in _rows(self.results)):
            print(f"skip {name} seed {seed}: already in {self.results}")
            return
        folder = self._folder(study, f"{name} seed={seed}")
        metrics = self._evaluate(variant, network, Path(checkpoint), overlays, folder / "eval")
        config = json.dumps({"checkpoint": str(checkpoint), "overlays": overlays, "dataset_dir": str(self.dataset_dir)}, sort_keys=True)
        _append(
            self.results,
            {**self._row(study, name, seed, variant, network, change, train_slices, [], 0.0, metrics, config), "epochs": ""},
        )
        print(f"{name} seed {seed}: mean IoU {metrics['mean_iou']:.4f}, porosity {metrics['iou']['porosity']:.4f}")


def _seed(row: dict) -> int:
    """A row's seed; rows written before seeds were recorded ran with the default seed 0."""
    return int(row.get("seed") or 0)


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
    trained_inference: tuple = ("multi_axis",),
    f0: int = 16,
    **options,
) -> None:
    """Levers beyond the paper on the 2D model: training options (three-plane crops, the paper's uniform crop
    sampling instead of the default pore over-sampling, the paper's plain Jaccard2 instead of the default
    class-weighted one), each trained at the study budget for every seed; then the `trained_inference` options
    (e.g. multi-axis fusion) on the z-only and three-plane models of each seed (does a model need to have seen
    x-z / y-z planes to gain from multi-axis fusion?)."""
    study = Study(**options)
    network = {"network_def#f0": int(f0)}
    for name in training:
        if name not in TRAINING_LEVERS:
            raise ValueError(f"unknown training lever {name!r}; choose from {list(TRAINING_LEVERS)}")
    for name in trained_inference:
        if name not in INFERENCE_LEVERS:
            raise ValueError(f"unknown inference lever {name!r}; choose from {list(INFERENCE_LEVERS)}")
    for name in training:
        folders = study.run("levers", f"2d train {name}", "2d", network, change=name, overlays=TRAINING_LEVERS[name])
        if name not in ("none", "three_planes"):
            continue
        for seed, folder in folders.items():
            for lever in trained_inference:
                study.score("levers", f"2d train {name} + infer {lever}", seed, "2d", network, folder / "models" / "model.pt",
                            lever, INFERENCE_LEVERS[lever])


def inference_levers(
    models: dict | None = None,
    levers: tuple = tuple(INFERENCE_LEVERS),
    data_seeds: tuple = (11, 12, 13),
    shape: tuple = (64, 256, 256),
    f0: int = 16,
    **options,
) -> None:
    """TTA and multi-axis fusion on trained models (default: the shipped one), each scored on phantoms of `data_seeds`
    (made under <work_dir>/data/seed<N> when missing; their test slices): the spread is over unseen volumes."""
    from bundle.phantom import make_phantom

    models = models or {"shipped": str(ROOT / "models" / "model.pt")}
    for name in levers:
        if name not in INFERENCE_LEVERS:
            raise ValueError(f"unknown inference lever {name!r}; choose from {list(INFERENCE_LEVERS)}")
    for seed in data_seeds:
        study = Study(**options)
        data = study.work_dir / "data" / f"seed{int(seed)}"
        if not (data / "dataset.json").is_file():
            make_phantom(data, tuple(int(v) for v in shape), seed=int(seed))
        study.dataset_dir = str(data)
        for model, checkpoint in models.items():
            for lever in levers:
                study.score("inference_levers", f"2d {model} + infer {lever}", int(seed), "2d", {"network_def#f0": int(f0)},
                            Path(checkpoint), lever, INFERENCE_LEVERS[lever])


GENERALIST_OVERLAYS = ["augment/acquisition.json", "augment/percentiles.json"]


def generalist(
    train_seeds: tuple = (100, 101, 102, 103, 104, 105),
    held_out_seeds: tuple = (200, 201, 202, 203),
    shape: tuple = (64, 192, 192),
    models: dict | None = None,
    demo: bool = True,
    **options,
) -> None:
    """A model trained on phantom-family draws (`train_seeds`) with acquisition augmentation and per-volume percentile
    normalisation, then it and `models` (default: the model trained on the single paper-style phantom,
    `models/phantom_model.pt`) scored without retraining on held-out draws at the
    edges of the family's ranges (`held_out_seeds`, each its own test volume, Bin-ZeroOC fitted on it beside) and on the
    paper-style demo phantom. Data is made under <work_dir>/data when missing. Rows: study `generalist`, run
    `2d <model> on <data>`, seed = the held-out draw's (0 for the demo phantom)."""
    from bundle.phantom import make_family, make_phantom

    study = Study(**options)
    train_data = study.work_dir / "data" / ("family_" + "_".join(str(int(s)) for s in train_seeds))
    if not (train_data / "dataset.json").is_file():
        make_family(train_data, [int(s) for s in train_seeds], tuple(int(v) for v in shape))
    study.dataset_dir = str(train_data)
    folders = study.run("generalist", "2d generalist", "2d", {"network_def#f0": 16}, change="family draws", overlays=GENERALIST_OVERLAYS)
    scored = {**(models or {"phantom-trained": str(ROOT / "models" / "phantom_model.pt")}), **{"generalist": folders[study.seeds[0]] / "models" / "model.pt"}}
    volumes = [("edge draw", int(s), study.work_dir / "data" / f"edge{int(s)}") for s in held_out_seeds]
    if demo:
        volumes.append(("demo phantom", 0, study.work_dir / "data" / "demo"))
    for name, seed, data in volumes:
        if not (data / "dataset.json").is_file():
            if name == "demo phantom":
                make_phantom(data, (128, 256, 256), seed=0)
            else:
                make_family(data, [seed], tuple(int(v) for v in shape), edge=True)
        study.dataset_dir = str(data)
        for model, checkpoint in scored.items():
            study.score("generalist", f"2d {model} on {name}s" if name == "edge draw" else f"2d {model} on the {name}", seed, "2d",
                        {"network_def#f0": 16}, Path(checkpoint), "no retraining", [])


def shipped(
    ckpt_path: str = "models/model.pt",
    label: str = "shipped model",
    work_dir: str = "runs/experiments",
    output: str | None = None,
) -> None:
    """A model (default: the shipped one; `label` names it in the tables) through the evaluate workflow (inference
    defaults) on the test slices of the paper-style training phantom (seed 1, 256 x 320 x 320) and of the demo phantom
    (seed 0, 128 x 256 x 256), made under <work_dir>/data when missing; the metrics, the data and the command go to
    `output` (JSON)."""
    from bundle.phantom import make_phantom
    from bundle.runtime import machine_class

    result = {"machine": machine_class(), "model": str(ckpt_path), "label": label, "volumes": []}
    for name, shape, seed in (("training phantom", (256, 320, 320), 1), ("demo phantom", (128, 256, 256), 0)):
        data = Path(work_dir) / "data" / f"seed{seed}_{'x'.join(map(str, shape))}"
        if not (data / "dataset.json").is_file():
            make_phantom(data, shape, seed=seed)
        out = Path(work_dir) / label.replace(" ", "_") / data.name
        out.mkdir(parents=True, exist_ok=True)
        overrides = {"dataset_dir": str(data), "output_dir": str(out), "ckpt_path": str(ckpt_path), "write_volumes": False}
        _bundle("evaluate", "2d", [], overrides, out.parent / f"{data.name}.log")
        metrics = json.loads((out / "metrics.json").read_text())
        command = "python -m monai.bundle run evaluate --config_file \"['configs/inference.json','configs/evaluate.json']\" " + " ".join(command_line(overrides))
        result["volumes"].append({"name": name, "phantom": {"shape": list(shape), "seed": seed}, "command": command, "metrics": metrics})
        print(f"{name}: mean IoU {metrics['mean_iou']:.4f}")
    text = json.dumps(result, indent=1) + "\n"
    if output:
        from bundle.io import write_atomically

        write_atomically(output, text)


VALIDATION = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)")
RUN_TIME = re.compile(r"(?:SupervisedTrainer - INFO - |^)Engine run finished\. Time taken: (\S+)", re.M)


def training_history(log: str, label: str, output: str, command: str = "", this_machine: bool = True) -> None:
    """The validation history and wall time of a `run training` from its console log (or an extract of its metric
    lines), so a full-schedule run's curve and cost can be tabled beside another's; `this_machine` records this
    machine's class, so run it where the training ran (False: not recorded)."""
    from bundle.io import write_atomically
    from bundle.runtime import machine_class

    text = Path(log).read_text()
    validation = [{"epoch": int(epoch), **{k: float(v) for k, v in re.findall(r"val_(\w+): ([\d.]+)", metrics)}}
                  for epoch, metrics in VALIDATION.findall(text)]
    finished = RUN_TIME.findall(text)
    if not validation or not finished:
        raise SystemExit(f"{log}: no validation metrics or no finished run in this log; is it a finished `run training`?")
    result = {"label": label, "command": command, "machine": machine_class() if this_machine else None,
              "time": finished[-1], "validation": validation}
    write_atomically(output, json.dumps(result, indent=1) + "\n")
    best = max(validation, key=lambda v: v["mean_iou"])
    print(f"{label}: {len(validation)} validations, best mean IoU {best['mean_iou']:.4f} at epoch {best['epoch']}, {finished[-1]}")


def _next_planes(strategy: str, prediction: Path, stem: str, train: tuple[int, int], annotated: dict, n: int, rng) -> list[dict]:
    """The `n` planes a strategy adds: the model's most uncertain (any axis), random z-planes, or z-planes filling the widest gaps."""
    from bundle.annotation import even_planes, pick_slices, slice_scores
    from bundle.io import open_volume

    if strategy == "uncertainty":
        scores = slice_scores(open_volume(prediction / f"{stem}.uncertainty.raw"), open_volume(prediction / f"{stem}.seg.raw"), z_range=train)
        return pick_slices(scores, n, spacing=4, exclude=annotated)
    if strategy == "random":
        free = [z for z in range(*train) if z not in annotated.get("z", [])]
        return [{"axis": "z", "index": int(z)} for z in rng.choice(free, n, replace=False)]
    return even_planes(train, n, annotated)


def _annotate(picks: list[dict], image: Path, truth: Path, edit: Path, dataset_dir: Path) -> None:
    """Export the picked planes, let the true labels stand in for the scientist's corrections, import them."""
    from bundle.annotation import export_slices, import_slices
    from bundle.io import open_volume

    export_slices(image, open_volume(truth), picks, edit)
    import_slices(edit, dataset_dir)


def _fine_tune_and_score(folder: Path, data: Path, study: str, run: str, change: str, seed: int, planes: dict,
                         model: Path | None, epochs: int, f0: int, overlays: list[str], overrides: dict, results: Path) -> Path:
    """Train on the annotated planes of `data` for `epochs` (validated at the end), from `model`'s weights or from
    scratch (None), score it on the test slices, append the row."""
    network = {"network_def#f0": int(f0)}
    train_overrides = {"dataset_dir": str(data), "output_dir": str(folder), "max_epochs": int(epochs), "val_interval": int(epochs),
                       "seed": seed, **network, **overrides, **({"pretrained": str(model)} if model else {})}
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    _bundle("training", "2d", overlays, train_overrides, folder / "train.log")
    seconds = time.time() - started
    checkpoint = folder / "models" / "model.pt"
    evaluate = {"dataset_dir": str(data), "output_dir": str(folder / "eval"), "ckpt_path": str(checkpoint), "write_volumes": False,
                **network, **{k: v for k, v in overrides.items() if k in EVALUATE_KEYS}}
    _bundle("evaluate", "2d", [], evaluate, folder / "eval.log")
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    count = sum(len(v) for v in planes.values())
    config = json.dumps({"planes": planes, "pretrained": str(model) if model else None, "epochs": int(epochs),
                         **({"overlays": overlays} if overlays else {})}, sort_keys=True)
    row = Study(epochs=int(epochs))._row(study, run, seed, "2d", network, change, count, [], seconds, metrics, config)
    _append(results, row)
    print(f"{run} seed {seed}: {count} planes, mean IoU {metrics['mean_iou']:.4f}, porosity {metrics['iou']['porosity']:.4f}")
    return checkpoint


def _spaced_planes(z_range: tuple[int, int], n: int) -> list[dict]:
    """`n` z-planes spaced evenly inside [z0, z1), none on its ends: a scientist's first annotations."""
    import numpy as np

    return [{"axis": "z", "index": int(z)} for z in np.linspace(z_range[0], z_range[1] - 1, int(n) + 2)[1:-1].round()]


def _sparse_dataset(data: Path, dense) -> None:
    """A fresh dataset folder whose one entry is `dense`'s validation and test slices; annotated planes are added
    by `_annotate` as a second entry."""
    data.mkdir(parents=True, exist_ok=True)
    held_out = {k: [list(r) for r in dense.ranges(k)] for k in ("val", "test")}
    entry = {"image": os.path.relpath(dense.image_path, data), "label": os.path.relpath(dense.label_path, data), "splits": held_out}
    (data / "dataset.json").write_text(json.dumps({"volumes": [entry]}))
    (data / f"{dense.image_path.name.split('.')[0]}.annotations.raw").unlink(missing_ok=True)


def _annotated_planes(data: Path) -> dict:
    return json.loads((data / "dataset.json").read_text())["volumes"][1]["annotated_planes"]


def annotation_loop(
    strategies: tuple = ("uncertainty", "random", "even"),
    data_seeds: tuple = (21, 22),
    shape: tuple = (64, 192, 192),
    start: int = 2,
    per_round: int = 2,
    rounds: int = 3,
    epochs: int = 5,
    pretrained: str = str(ROOT / "models" / "model.pt"),
    f0: int = 16,
    work_dir: str = "runs/annotation_loop",
    results: str | None = None,
    overrides: dict | None = None,
) -> None:
    """The annotation loop simulated on phantoms: from `start` evenly spaced annotated z-planes, `rounds` rounds of
    choosing `per_round` more planes (by the model's uncertainty, at random, or evenly spaced), their true labels
    standing in for the scientist's corrections, and fine-tuning the previous round's model for `epochs`; each
    round's model scored on the test slices. Rows: study `annotation_loop`, run `<strategy> round <r>`, seed = the
    phantom's."""
    import numpy as np

    from bundle.data import load_dataset_description
    from bundle.phantom import make_phantom

    work = Path(work_dir)
    results = Path(results or work / "results.csv")
    done = {(r["run"], _seed(r)) for r in _rows(results)}
    for seed in (int(s) for s in data_seeds):
        base = work / f"seed{seed}"
        if not (base / "phantom" / "dataset.json").is_file():
            make_phantom(base / "phantom", tuple(int(v) for v in shape), seed=seed)
        (dense,) = load_dataset_description(base / "phantom")
        train = dense.ranges("train")[0]
        image, truth = dense.image_path, dense.label_path

        for strategy in strategies:
            if strategy not in ("uncertainty", "random", "even"):
                raise ValueError(f"unknown strategy {strategy!r}; choose from uncertainty, random, even")
            if all((f"{strategy} round {r}", seed) in done for r in range(int(rounds) + 1)):
                print(f"skip {strategy} seed {seed}: every round already in {results}")
                continue
            folder = base / strategy
            data = folder / "data"
            _sparse_dataset(data, dense)
            rng = np.random.default_rng(seed)
            model = Path(pretrained)
            _annotate(_spaced_planes(train, int(start)), image, truth, folder / "edit0", data)
            for r in range(int(rounds) + 1):
                planes = _annotated_planes(data)
                if (f"{strategy} round {r}", seed) in done:
                    print(f"skip {strategy} round {r} seed {seed}: already in {results}")
                else:
                    _fine_tune_and_score(folder / f"round{r}", data, "annotation_loop", f"{strategy} round {r}", strategy, seed, planes,
                                         model, int(epochs), int(f0), [], dict(overrides or {}), results)
                if r == int(rounds):
                    break
                model = folder / f"round{r}" / "models" / "model.pt"
                prediction = folder / f"prediction{r}"
                infer = {"input_path": str(image), "output_dir": str(prediction), "ckpt_path": str(model), "backend": "torch",
                         "progress": False, "network_def#f0": int(f0), **{k: v for k, v in (overrides or {}).items() if k in EVALUATE_KEYS}}
                _bundle("inference", "2d", [], infer, folder / f"prediction{r}.log")
                picks = _next_planes(strategy, prediction, image.name.split(".")[0], train, planes, int(per_round), rng)
                _annotate(picks, image, truth, folder / f"edit{r + 1}", data)


def fine_tune(
    pretrained: str = str(ROOT / "models" / "model.pt"),
    data_seeds: tuple = (200, 201, 202),
    shape: tuple = (64, 192, 192),
    slices: tuple = (1, 2, 5, 10),
    epochs: int = 10,
    scratch_epochs: int = 40,
    short_epochs: tuple = (),
    short_slices: int = 2,
    overlays: tuple = tuple(GENERALIST_OVERLAYS),
    f0: int = 16,
    work_dir: str = "runs/fine_tune",
    results: str | None = None,
    overrides: dict | None = None,
) -> None:
    """Fine-tuning against training from scratch on a new scan: on each held-out edge draw of the phantom family
    (`data_seeds`), `pretrained` scored without retraining, then for each count in `slices` that many evenly spaced
    annotated z-planes, trained on for `epochs` from `pretrained` and from scratch (the same steps), and from scratch
    for `scratch_epochs` on the most slices (the model a scientist would train on that scan alone), and from
    `pretrained` on `short_slices` slices for each of the shorter schedules `short_epochs` (how few epochs suffice).
    `overlays` are the training overlays of both (the pretrained model's grey normalisation). Rows: study
    `fine_tune`, run `<start> <n> slices` (`pretrained <n> slices <e> epochs` for a short schedule), seed = the
    draw's."""
    from bundle.data import load_dataset_description
    from bundle.phantom import make_family

    if short_epochs and int(short_slices) not in [int(n) for n in slices]:
        raise ValueError(f"short_slices {short_slices} is not one of slices {list(slices)}: the short schedules would not run")
    work = Path(work_dir)
    results = Path(results or work / "results.csv")
    overlays, overrides = list(overlays), dict(overrides or {})
    network = {"network_def#f0": int(f0)}
    done = {(r["run"], _seed(r)) for r in _rows(results)}
    for seed in (int(s) for s in data_seeds):
        scan = work / "data" / f"edge{seed}"
        if not (scan / "dataset.json").is_file():
            make_family(scan, [seed], tuple(int(v) for v in shape), edge=True)
        (dense,) = load_dataset_description(scan)
        study = Study(dataset_dir=str(scan), work_dir=str(work), results=str(results), overrides=overrides)
        study.score("fine_tune", "pretrained 0 slices", seed, "2d", network, Path(pretrained), "no retraining", [], train_slices=0)
        for n in (int(n) for n in slices):
            starts = [(f"pretrained {n} slices", "pretrained", Path(pretrained), int(epochs)), (f"scratch {n} slices", "scratch", None, int(epochs))]
            if n == max(int(v) for v in slices):
                starts.append((f"scratch long {n} slices", "scratch long", None, int(scratch_epochs)))
            if n == int(short_slices):
                starts += [(f"pretrained {n} slices {int(e)} epochs", "pretrained short", Path(pretrained), int(e)) for e in short_epochs]
            todo = [start for start in starts if (start[0], seed) not in done]
            if not todo:
                print(f"skip {n} slices seed {seed}: every run already in {results}")
                continue
            folder = work / f"seed{seed}" / f"slices{n}"
            _sparse_dataset(folder / "data", dense)
            _annotate(_spaced_planes(dense.ranges("train")[0], n), dense.image_path, dense.label_path, folder / "edit", folder / "data")
            for run, start, model, e in todo:
                _fine_tune_and_score(folder / run.replace(f" {n} slices", "").replace(" ", "_"), folder / "data", "fine_tune", run, start,
                                     seed, _annotated_planes(folder / "data"), model, e, int(f0), overlays, overrides, results)


def _runs(rows: list[dict], study: str) -> list[tuple[dict, dict]]:
    """(first row, summary over seeds) of each run of a study, in order of appearance."""
    chosen = [r for r in rows if r["study"] == study]
    names = dict.fromkeys(r["run"] for r in chosen)
    return [(next(r for r in chosen if r["run"] == n), _summary([r for r in chosen if r["run"] == n])) for n in names]


def plot(results: str = "runs/experiments/results.csv", output_dir: str = "docs") -> None:
    """Figures like the paper's 5a (variants), 5b (ablations) and 6 (learning curve) from the results CSV
    (mean over seeds, with the standard deviation as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(Path(results))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    variants = _runs(rows, "variants")
    if variants:
        fig, ax = plt.subplots(figsize=(6, 4))
        for variant, marker in zip(VARIANT_ORDER, "os^"):
            points = sorted((int(r["parameters"]), m["mean_iou"], m["mean_iou_sd"], r["f0"]) for r, m in variants if r["variant"] == variant)
            if points:
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker=marker,
                            color="black", capsize=3, label=variant)
                for x, y, _, f0 in points:
                    ax.annotate(f"({f0})", (x, y), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(save_figure(fig, out / "fig5a_variants.png"))
    ablations = _runs(rows, "ablation")
    if ablations:
        fig, ax = plt.subplots(figsize=(7, 4))
        for r, m in ablations:
            ax.errorbar(int(r["parameters"]), m["mean_iou"], yerr=m["mean_iou_sd"], color="black", marker="o", markersize=3, capsize=3)
            ax.annotate(r["change"], (int(r["parameters"]), m["mean_iou"]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("mean IoU (%)")
        written.append(save_figure(fig, out / "fig5b_ablation.png"))
    curve = sorted((int(r["train_slices"]), m["mean_iou"], m["mean_iou_sd"], float(r["bin_zero_oc_train_mean"]) * 100)
                   for r, m in _runs(rows, "learning_curve"))
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar([c[0] for c in curve], [c[1] for c in curve], yerr=[c[2] for c in curve], fmt="o-", color="black",
                    capsize=3, label="2D Modular U-Net")
        ax.axhline(curve[-1][3], linestyle="--", color="gray", label="Bin-ZeroOC (fitted on train)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("annotated train slices")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(save_figure(fig, out / "fig6_learning_curve.png"))
    loop = _runs(rows, "annotation_loop")
    if loop:
        fig, ax = plt.subplots(figsize=(6, 4))
        for strategy, marker in zip(("uncertainty", "random", "even"), "os^"):
            points = sorted((int(r["train_slices"]), m["mean_iou"], m["mean_iou_sd"]) for r, m in loop if r["change"] == strategy)
            if points:
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker=marker, capsize=3,
                            label=strategy)
        ax.set_xlabel("annotated planes")
        ax.set_ylabel("mean IoU (%)")
        ax.legend()
        written.append(save_figure(fig, out / "fig_annotation_loop.png"))
    tuned = _runs(rows, "fine_tune")
    if tuned:
        fig, ax = plt.subplots(figsize=(6, 4))
        for start, style in (("pretrained", "o-"), ("scratch", "s--"), ("scratch long", "^")):
            points = sorted((int(r["train_slices"]), m["mean_iou"], m["mean_iou_sd"], r["epochs"]) for r, m in tuned
                            if r["change"] == start or (start == "pretrained" and r["change"] == "no retraining"))
            if points:
                epochs = next((p[3] for p in points if p[3]), "")
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], fmt=style, capsize=3,
                            label=f"{start}, {epochs} epochs" + (" (0 slices: as it is)" if start == "pretrained" else ""))
        baseline = _summary(_distinct_baselines([r for r in rows if r["study"] == "fine_tune"]))["mean_iou"]
        ax.axhline(baseline, linestyle=":", color="gray", label="Bin-ZeroOC (fitted on each test volume)")
        ax.set_xlabel("annotated z-slices of the new scan")
        ax.set_ylabel("mean IoU (%)")
        ax.legend(fontsize=8)
        written.append(save_figure(fig, out / "fig_fine_tune.png"))
    for path in written:
        print(path)


def _reference(run: str, study: str, runs: set[str]) -> str | None:
    """The run a run is compared with: the unchanged 2D model for ablations and training levers, the default 2D f0=16
    model for the other variants, the same model without inference levers for inference levers, random slices of the
    same round for the other annotation strategies, the phantom-trained model on the same data for the generalist, training
    from scratch on the same slices and steps for fine-tuning (the full fine-tuning schedule for a short one)."""
    if study == "generalist":
        reference = run.replace("2d generalist on", "2d phantom-trained on", 1)
        return reference if reference != run and reference in runs else None
    if study == "fine_tune":
        reference = run.split(" slices ")[0] + " slices" if " slices " in run else run.replace("pretrained", "scratch", 1)
        return reference if reference != run and reference in runs else None
    if study == "annotation_loop":
        strategy, _, r = run.partition(" round ")
        return f"random round {r}" if strategy != "random" and f"random round {r}" in runs else None
    if " + infer " in run:
        model = run.split(" + infer ")[0]
        return next((r for r in (f"{model} + infer none", model) if r in runs and r != run), None)
    candidates = {"ablation": "2d ablation default", "levers": "2d train none", "variants": "2d f0=16"}
    return candidates.get(study) if candidates.get(study) in runs and candidates.get(study) != run else None


METRICS = ("iou_matrix", "iou_fibre", "iou_porosity", "mean_iou")


def _summary(rows: list[dict]) -> dict:
    """Mean and sample standard deviation (0 for one seed) of each metric, in %, over a run's seeds."""
    import statistics

    out = {"seeds": sorted(_seed(r) for r in rows)}
    for key in METRICS:
        values = [float(r[key]) * 100 for r in rows]
        out[key] = statistics.fmean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["train_seconds"] = statistics.fmean(float(r["train_seconds"] or 0) for r in rows)
    out["eval_seconds_per_mvoxel"] = statistics.fmean(float(r["eval_seconds_per_mvoxel"]) for r in rows)
    return out


def _spread(summary: dict, key: str) -> str:
    return f"{summary[key]:.1f} ± {summary[key + '_sd']:.1f}" if len(summary["seeds"]) > 1 else f"{summary[key]:.1f}"


def _paired(rows: list[dict], reference: list[dict], key: str) -> str:
    """The difference from the reference in %, paired by seed (the same seed gives both runs the same initial weights,
    crops or test volume): mean ± sd over the shared seeds, `*` when every seed moves the same way and the mean
    exceeds the sd; with one shared seed, the plain difference."""
    import statistics

    base = {_seed(r): float(r[key]) for r in reference}
    diffs = [(float(r[key]) - base[_seed(r)]) * 100 for r in rows if _seed(r) in base]
    if not diffs:
        return ""
    if len(diffs) == 1:
        return f"{diffs[0]:+.1f}"
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    beyond = (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)) and abs(mean) > sd
    return f"{mean:+.1f} ± {sd:.1f}{'*' if beyond else ''}"


def _as_baseline(row: dict) -> dict:
    """A row whose mean and porosity IoU are those of Bin-ZeroOC fitted on its own test volume (porosity 0 in CSVs
    begun before it was recorded)."""
    return dict(row, iou_matrix=0, iou_fibre=0, iou_porosity=row.get("bin_zero_oc_test_porosity") or 0, mean_iou=row["bin_zero_oc_test_mean"])


def _baseline_text(baseline: list[dict]) -> str:
    """Bin-ZeroOC's mean IoU, and its porosity IoU where the CSV recorded it."""
    summary = _summary(baseline)
    porosity = f", porosity IoU {_spread(summary, 'iou_porosity')}" if all(r.get("bin_zero_oc_test_porosity") for r in baseline) else ""
    return f"mean IoU {_spread(summary, 'mean_iou')}{porosity}"


def _distinct_baselines(rows: list[dict]) -> list[dict]:
    """Bin-ZeroOC rows of the distinct test volumes of `rows` (runs of one study often share one volume)."""
    return [_as_baseline(r) for r in {r["bin_zero_oc_test_mean"]: r for r in rows}.values()]


def _baselines_by_data(by_run: dict[str, list[dict]]) -> list[str]:
    """Per data set scored (`<run> on <data>`): Bin-ZeroOC fitted on each test volume, and each model's mean IoU minus
    it, paired by volume (the baselines do not depend on the model, `bundle.evaluation`)."""
    lines = [""]
    for data in dict.fromkeys(name.split(" on ", 1)[1] for name in by_run if " on " in name):
        groups = {name.split(" on ", 1)[0]: rows for name, rows in by_run.items() if name.endswith(f" on {data}")}
        baseline = [_as_baseline(r) for r in next(iter(groups.values()))]
        margins = "; ".join(
            f"{label} above it: " + ", ".join(f"{model} {_paired(rows, baseline, key)}" for model, rows in groups.items())
            for label, key in (("mean IoU", "mean_iou"), ("porosity IoU", "iou_porosity"))
            if key == "mean_iou" or all(r.get("bin_zero_oc_test_porosity") for r in baseline)
        )
        lines.append(f"On {data}, Bin-ZeroOC fitted on each test volume itself: {_baseline_text(baseline)}; {margins}.")
    return lines


def study_tables(results: str | Path) -> dict[str, str]:
    """A markdown table per study of a results CSV: each run's mean ± standard deviation over its seeds, and its
    difference in porosity and mean IoU from its reference, paired by seed (`_paired`)."""
    rows = _rows(Path(results))
    tables = {}
    for study in dict.fromkeys(r["study"] for r in rows):
        chosen = [r for r in rows if r["study"] == study]
        by_run = {name: [r for r in chosen if r["run"] == name] for name in dict.fromkeys(r["run"] for r in chosen)}
        runs = {name: _summary(group) for name, group in by_run.items()}
        first = {name: group[0] for name, group in by_run.items()}
        order = list(runs)
        if study == "variants":
            order.sort(key=lambda n: (VARIANT_ORDER.index(first[n]["variant"]), int(first[n]["f0"])))
        if study == "fine_tune":
            order.sort(key=lambda n: (int(first[n]["train_slices"]), n))
        if study == "learning_curve":
            order.sort(key=lambda n: int(first[n]["train_slices"]) if first[n]["train_slices"].isdigit() else float("inf"))
        lines = [
            "| run | seeds | parameters | matrix | fibre | porosity | mean | d porosity | d mean | train s | eval s/Mvox |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in order:
            r, reference = runs[name], by_run.get(_reference(name, study, set(runs)) or "", [])
            deltas = [_paired(by_run[name], reference, key) for key in ("iou_porosity", "mean_iou")]
            lines.append(
                f"| {name} | {','.join(map(str, r['seeds']))} | {int(first[name]['parameters']):,} | {r['iou_matrix']:.1f} | "
                f"{r['iou_fibre']:.1f} | {_spread(r, 'iou_porosity')} | **{_spread(r, 'mean_iou')}** | {deltas[0]} | {deltas[1]} | "
                f"{round(r['train_seconds']) if r['train_seconds'] else ''} | {r['eval_seconds_per_mvoxel']:.1f} |"
            )
        if study == "generalist":
            lines += _baselines_by_data(by_run)
        else:
            lines.append(f"\nBin-ZeroOC fitted on each test volume itself: {_baseline_text(_distinct_baselines(chosen))}.")
        tables[f"{Path(results).stem}:{study}"] = "\n".join(lines) + "\n"
    return tables


def table(results: str = "runs/experiments/results.csv") -> None:
    """Markdown tables of every study in the results CSV (IoU in %, mean ± sd over seeds, differences from references)."""
    for name, text in study_tables(results).items():
        print(f"\n### {name}\n\n{text}")


COMMANDS = {
    "compare-variants": compare_variants,
    "ablation": ablation,
    "learning-curve": learning_curve,
    "levers": levers,
    "inference-levers": inference_levers,
    "annotation-loop": annotation_loop,
    "fine-tune": fine_tune,
    "shipped": shipped,
    "training-history": training_history,
    "generalist": generalist,
    "plot": plot,
    "table": table,
}


if __name__ == "__main__":
    run_commands(COMMANDS)
