"""The studies: the paper's comparisons (variants, ablations, learning curve, levers), the generalist, the shipped
model's scores, the annotation loop and fine-tuning (`scripts/experiments.py`)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from ..checkpoints import variant_of, width_of
from ..launcher import command_line, config_file_list
from ..variants import variant_config_names
from .study import (
    ABLATIONS,
    EVALUATE_KEYS,
    INFERENCE_LEVERS,
    ROOT,
    TRAINING_LEVERS,
    Study,
    append_row,
    read_rows,
    row_seed,
    run_workflow,
)


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
    from ..data import load_dataset_description

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
    f0: int | None = None,
    **options,
) -> None:
    """TTA and multi-axis fusion on trained models (default: the shipped one), each scored on phantoms of `data_seeds`
    (made under <work_dir>/data/seed<N> when missing; their test slices): the spread is over unseen volumes. `f0` None:
    each model's own (its sidecar's)."""
    from ..phantom import make_phantom

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
            variant, width = variant_of(checkpoint), width_of(checkpoint, f0)
            for lever in levers:
                study.score("inference_levers", f"{variant} {model} + infer {lever}", int(seed), variant, {"network_def#f0": width},
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
    from ..phantom import make_family, make_phantom

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
            variant = variant_of(checkpoint)
            run = f"{variant} {model} on {name}s" if name == "edge draw" else f"{variant} {model} on the {name}"
            study.score("generalist", run, seed, variant, {"network_def#f0": width_of(checkpoint)}, Path(checkpoint), "no retraining", [])


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
    from ..phantom import make_phantom
    from ..runtime import machine_class

    result = {"machine": machine_class(), "model": str(ckpt_path), "label": label, "volumes": []}
    for name, shape, seed in (("training phantom", (256, 320, 320), 1), ("demo phantom", (128, 256, 256), 0)):
        data = Path(work_dir) / "data" / f"seed{seed}_{'x'.join(map(str, shape))}"
        if not (data / "dataset.json").is_file():
            make_phantom(data, shape, seed=seed)
        out = Path(work_dir) / label.replace(" ", "_") / data.name
        out.mkdir(parents=True, exist_ok=True)
        overrides = {"dataset_dir": str(data), "output_dir": str(out), "ckpt_path": str(ckpt_path), "write_volumes": False,
                     "network_def#f0": width_of(ckpt_path)}
        variant = variant_of(ckpt_path)
        run_workflow("evaluate", variant, [], overrides, out.parent / f"{data.name}.log")
        metrics = json.loads((out / "metrics.json").read_text())
        configs = config_file_list([f"configs/{name}" for name in ("inference.json", "evaluate.json", *variant_config_names(variant))])
        command = f"python -m monai.bundle run evaluate --config_file \"{configs}\" " + " ".join(command_line(overrides))
        result["volumes"].append({"name": name, "phantom": {"shape": list(shape), "seed": seed}, "command": command, "metrics": metrics})
        print(f"{name}: mean IoU {metrics['mean_iou']:.4f}")
    text = json.dumps(result, indent=1) + "\n"
    if output:
        from ..io import write_atomically

        write_atomically(output, text)


VALIDATION = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)")


RUN_TIME = re.compile(r"(?:SupervisedTrainer - INFO - |^)Engine run finished\. Time taken: (\S+)", re.M)


def training_history(log: str, label: str, output: str, command: str = "", this_machine: bool = True) -> None:
    """The validation history and wall time of a `run training` from its console log (or an extract of its metric
    lines), so a full-schedule run's curve and cost can be tabled beside another's; `this_machine` records this
    machine's class, so run it where the training ran (False: not recorded)."""
    from ..io import write_atomically
    from ..runtime import machine_class

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
    from ..annotation import even_planes, pick_slices, slice_scores
    from ..io import open_volume

    if strategy == "uncertainty":
        scores = slice_scores(open_volume(prediction / f"{stem}.uncertainty.raw"), open_volume(prediction / f"{stem}.seg.raw"), z_range=train)
        return pick_slices(scores, n, spacing=4, exclude=annotated)
    if strategy == "random":
        free = [z for z in range(*train) if z not in annotated.get("z", [])]
        return [{"axis": "z", "index": int(z)} for z in rng.choice(free, n, replace=False)]
    return even_planes(train, n, annotated)


def _annotate(picks: list[dict], image: Path, truth: Path, edit: Path, dataset_dir: Path) -> None:
    """Export the picked planes, let the true labels stand in for the scientist's corrections, import them."""
    from ..annotation import export_slices, import_slices
    from ..io import open_volume

    export_slices(image, open_volume(truth), picks, edit)
    import_slices(edit, dataset_dir)


def _fine_tune_and_score(folder: Path, data: Path, study: str, run: str, change: str, seed: int, planes: dict,
                         model: Path | None, epochs: int, f0: int, overlays: list[str], overrides: dict, results: Path,
                         scored_on: Path | None = None, spent: float = 0.0, variant: str = "2d") -> Path:
    """Train a `variant` network on the annotated planes of `data` for `epochs` (validated at the end), from `model`'s
    weights or from scratch (None), score it on the test slices of `scored_on` (default `data`: where its labels are not
    the truth), append the row; its time is the training's plus `spent` seconds of preparation."""
    network = {"network_def#f0": int(f0)}
    train_overrides = {"dataset_dir": str(data), "output_dir": str(folder), "max_epochs": int(epochs), "val_interval": int(epochs),
                       "seed": seed, **network, **overrides, **({"pretrained": str(model)} if model else {})}
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_workflow("training", variant, overlays, train_overrides, folder / "train.log")
    seconds = time.time() - started + spent
    checkpoint = folder / "models" / "model.pt"
    evaluate = {"dataset_dir": str(scored_on or data), "output_dir": str(folder / "eval"), "ckpt_path": str(checkpoint),
                "write_volumes": False, **network, **{k: v for k, v in overrides.items() if k in EVALUATE_KEYS}}
    run_workflow("evaluate", variant, [], evaluate, folder / "eval.log")
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    count = sum(len(v) for v in planes.values())
    config = json.dumps({"planes": planes, "pretrained": str(model) if model else None, "epochs": int(epochs),
                         **({"overlays": overlays} if overlays else {}), **({"overrides": overrides} if overrides else {})}, sort_keys=True)
    row = Study(epochs=int(epochs))._row(study, run, seed, variant, network, change, count, [], seconds, metrics, config)
    append_row(results, row)
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
    f0: int | None = None,
    work_dir: str = "runs/annotation_loop",
    results: str | None = None,
    overrides: dict | None = None,
) -> None:
    """The annotation loop simulated on phantoms: from `start` evenly spaced annotated z-planes, `rounds` rounds of
    choosing `per_round` more planes (by the model's uncertainty, at random, or evenly spaced), their true labels
    standing in for the scientist's corrections, and fine-tuning the previous round's model for `epochs`; each
    round's model scored on the test slices (`f0` None: `pretrained`'s). Rows: study `annotation_loop`, run
    `<strategy> round <r>`, seed = the phantom's."""
    import numpy as np

    from ..data import load_dataset_description
    from ..phantom import make_phantom

    work = Path(work_dir)
    results = Path(results or work / "results.csv")
    variant, f0 = variant_of(pretrained), width_of(pretrained, f0)
    done = {(r["run"], row_seed(r)) for r in read_rows(results)}
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
                                         model, int(epochs), int(f0), [], dict(overrides or {}), results, variant=variant)
                if r == int(rounds):
                    break
                model = folder / f"round{r}" / "models" / "model.pt"
                prediction = folder / f"prediction{r}"
                infer = {"input_path": str(image), "output_dir": str(prediction), "ckpt_path": str(model), "backend": "torch",
                         "progress": False, "network_def#f0": int(f0), **{k: v for k, v in (overrides or {}).items() if k in EVALUATE_KEYS}}
                run_workflow("inference", variant, [], infer, folder / f"prediction{r}.log")
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
    f0: int | None = None,
    work_dir: str = "runs/fine_tune",
    results: str | None = None,
    overrides: dict | None = None,
) -> None:
    """Fine-tuning against training from scratch on a new scan: on each held-out edge draw of the phantom family
    (`data_seeds`), `pretrained` scored without retraining, then for each count in `slices` that many evenly spaced
    annotated z-planes, trained on for `epochs` from `pretrained` and from scratch (the same steps), and from scratch
    for `scratch_epochs` on the most slices (the model a scientist would train on that scan alone), and from
    `pretrained` on `short_slices` slices for each of the shorter schedules `short_epochs` (how few epochs suffice).
    `overlays` are the training overlays of both (the pretrained model's grey normalisation); `f0` None: `pretrained`'s,
    for both. Rows: study
    `fine_tune`, run `<start> <n> slices` (`pretrained <n> slices <e> epochs` for a short schedule), seed = the
    draw's."""
    from ..data import load_dataset_description
    from ..phantom import make_family

    if short_epochs and int(short_slices) not in [int(n) for n in slices]:
        raise ValueError(f"short_slices {short_slices} is not one of slices {list(slices)}: the short schedules would not run")
    work = Path(work_dir)
    results = Path(results or work / "results.csv")
    overlays, overrides = list(overlays), dict(overrides or {})
    network, variant = {"network_def#f0": width_of(pretrained, f0)}, variant_of(pretrained)
    done = {(r["run"], row_seed(r)) for r in read_rows(results)}
    for seed in (int(s) for s in data_seeds):
        scan = work / "data" / f"edge{seed}"
        if not (scan / "dataset.json").is_file():
            make_family(scan, [seed], tuple(int(v) for v in shape), edge=True)
        (dense,) = load_dataset_description(scan)
        study = Study(dataset_dir=str(scan), work_dir=str(work), results=str(results), overrides=overrides)
        study.score("fine_tune", "pretrained 0 slices", seed, variant, network, Path(pretrained), "no retraining", [], train_slices=0)
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
                                     seed, _annotated_planes(folder / "data"), model, e, int(f0), overlays, overrides, results,
                                     variant=variant)
