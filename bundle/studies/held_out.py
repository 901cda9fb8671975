"""Scans no training saw, scored every way a user could segment them: held-out draws of the projection-domain phantom
family (some at the edges of its ranges), of today's image-domain family and the demo phantom; on each, a random
forest on a few labelled slices (`bundle.forest`), the model without labels, with label-free batch-norm adaptation,
with inference levers (TTA, multi-axis fusion), self-trained on its own confident labels, fine-tuned on 2 and on 10
slices, and trained from scratch on the 10 slices at 10x the steps (`scripts/experiments.py
held-out`). Bin-ZeroOC fitted on each scan rides along in every row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .runs import (
    GENERALIST_OVERLAYS,
    _annotate,
    _annotated_planes,
    _fine_tune_and_score,
    _spaced_planes,
    _sparse_dataset,
)
from .study import EVALUATE_KEYS, INFERENCE_LEVERS, ROOT, Study, append_row, read_rows, row_seed, run_workflow

SCAN_KINDS = ("projection", "projection-edge", "image", "image-edge")


def _scan_data(work: Path, scan: str, shape: tuple[int, int, int]) -> Path:
    """The folder of scan `scan` ("projection:200", "image-edge:211", "demo"), drawn when missing."""
    from ..phantom import PhantomFamily, make_family, make_phantom

    folder = work / "data" / scan.replace(":", "")
    if (folder / "dataset.json").is_file():
        return folder
    if scan == "demo":
        make_phantom(folder, (128, 256, 256), seed=0)
        return folder
    kind, _, seed = scan.partition(":")
    if kind not in SCAN_KINDS or not seed.isdigit():
        raise ValueError(f"scan {scan!r}: expected 'demo' or <kind>:<seed> with kind one of {', '.join(SCAN_KINDS)}")
    family = PhantomFamily.projection_family() if kind.startswith("projection") else PhantomFamily()
    make_family(folder, [int(seed)], shape, edge=kind.endswith("-edge"), family=family)
    return folder


def _forest_metrics(dense, planes: list[dict], seed: int, baselines: dict) -> dict:
    """A `FilterForest` fitted on `planes` of the scan, scored on its test slices, in metrics.json's keys."""
    from ..forest import FilterForest
    from ..metrics import confusion_matrix, metrics_summary

    image, label = dense.image(), dense.label()
    started = time.time()
    slices = [p["index"] for p in planes]
    forest = FilterForest(seed=seed).fit([image.read(z, z + 1)[0] for z in slices], [label.read(z, z + 1)[0] for z in slices])
    fitted = time.time()
    confusion, voxels = np.zeros((3, 3), np.int64), 0
    for z0, z1 in dense.ranges("test"):
        for z in range(z0, z1):
            truth = label.read(z, z + 1)[0]
            confusion += confusion_matrix(forest.predict(image.read(z, z + 1)[0]), truth, 3)
            voxels += truth.size
    summary = metrics_summary(confusion, ["matrix", "fibre", "porosity"])
    return {**summary, "seconds": time.time() - fitted, "train_seconds": fitted - started, "test_voxels": voxels, "baselines": baselines}


def _adapted_row(work: Path, scan: str, data: Path, dense, model: Path, variant: str, network: dict, overrides: dict, results: Path) -> None:
    """`run inference --adapt bn` on the whole scan (timed), its labels scored on the test slices by the evaluate
    workflow (`--prediction_path`), one row."""
    folder = work / "held_out" / f"adapt_{scan.replace(':', '')}"
    folder.mkdir(parents=True, exist_ok=True)
    infer = {"input_path": str(dense.image_path), "output_dir": str(folder / "prediction"), "ckpt_path": str(model), "adapt": "bn",
             "backend": "torch", "progress": False, **network, **{k: v for k, v in overrides.items() if k in EVALUATE_KEYS}}
    started = time.time()
    run_workflow("inference", variant, [], infer, folder / "inference.log")
    seconds = time.time() - started
    stem = dense.image_path.name.split(".")[0]
    evaluate = {"dataset_dir": str(data), "output_dir": str(folder / "eval"), "ckpt_path": str(model), "write_volumes": False,
                "prediction_path": str(folder / "prediction" / f"{stem}.seg.raw"), **network}
    run_workflow("evaluate", variant, [], evaluate, folder / "eval.log")
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    config = json.dumps({"checkpoint": str(model), "adapt": "bn", "dataset_dir": str(data)}, sort_keys=True)
    run = f"model + adapt bn on {scan}"
    append_row(results, {**Study()._row("held_out", run, 0, variant, network, "adapt bn", 0, [], seconds, metrics, config), "epochs": ""})
    print(f"{run}: mean IoU {metrics['mean_iou']:.4f}, porosity {metrics['iou']['porosity']:.4f}")


def _self_trained_row(work: Path, scan: str, data: Path, dense, model: Path, variant: str, threshold: float, epochs: int, seed: int, f0: int,
                      overlays: list[str], overrides: dict, results: Path) -> None:
    """`model` fine-tuned for `epochs` on its own confident labels of the scan (`pseudo_labels`; no truth): the scan
    segmented with probabilities, a dataset of the scan with those labels (its validation slices held out as the
    workflow wants, the rest trained on, test slices included: they are the scan's own unlabelled voxels), trained as
    the fine-tuning is, scored on the truth of the test slices; its time includes the first segmentation. One row."""
    from ..adaptation import pseudo_labels
    from ..annotation import ranges_outside
    from ..io import RawInfo, atomic_output, format_sidecar, sidecar_path, write_atomically

    folder = work / "held_out" / scan.replace(":", "") / "self_train"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    stem = dense.image_path.name.split(".")[0]
    infer = {"input_path": str(dense.image_path), "output_dir": str(folder / "prediction"), "ckpt_path": str(model), "save_probabilities": True,
             "save_uncertainty": False, "overwrite": True, "backend": "torch", "progress": False, "network_def#f0": int(f0),
             **{k: v for k, v in overrides.items() if k in EVALUATE_KEYS}}
    run_workflow("inference", variant, [], infer, folder / "inference.log")
    shape = dense.image().shape
    probabilities = np.memmap(folder / "prediction" / f"{stem}.prob.raw", np.uint8, "r", shape=(3, *shape))
    target = folder / "data" / f"{stem}.pseudo_labels.raw"
    kept = 0
    with atomic_output(target) as tmp, open(tmp, "wb") as out:
        for z in range(shape[0]):
            labels = pseudo_labels(np.asarray(probabilities[:, z]), threshold)
            kept += int((labels != 255).sum())
            out.write(labels.tobytes())
        if not kept:
            raise ValueError(f"{dense.image_path}: no voxel reaches confidence {threshold} under {model}; self-training needs a lower --self_train")
    del probabilities
    write_atomically(sidecar_path(target), format_sidecar(RawInfo(tuple(shape), np.dtype(np.uint8), "<", {})))
    val = [list(r) for r in dense.ranges("val")]
    entry = {"image": str(dense.image_path.resolve()), "label": target.name, "splits": {"train": ranges_outside(shape[0], sorted(val)), "val": val}}
    write_atomically(folder / "data" / "dataset.json", json.dumps({"volumes": [entry]}))
    spent = time.time() - started
    _fine_tune_and_score(folder / f"seed{seed}", folder / "data", "held_out", f"model + self-train on {scan}", f"self-train {threshold}", seed, {},
                         model, epochs, f0, overlays, overrides, results, scored_on=data, spent=spent, variant=variant)


def _forest_row(scan: str, data: Path, dense, count: int, seed: int, baselines: dict, results: Path) -> None:
    """A `FilterForest` on `count` evenly spaced z-planes of the scan's train range (the fine-tuning's planes), one row."""
    run = f"forest {count} slices on {scan}"
    planes = _spaced_planes(dense.ranges("train")[0], count)
    metrics = _forest_metrics(dense, planes, seed, baselines)
    config = json.dumps({"forest": "FilterForest", "planes": {"z": [p["index"] for p in planes]}, "dataset_dir": str(data)}, sort_keys=True)
    row = Study()._row("held_out", run, seed, "2d", {}, "random forest", count, [], metrics["train_seconds"], metrics, config)
    append_row(results, {**row, "variant": "forest", "f0": "", "parameters": 0, "epochs": ""})
    print(f"{run} seed {seed}: mean IoU {metrics['mean_iou']:.4f}")


def held_out(
    model: str = str(ROOT / "models" / "model.pt"),
    scans: tuple = ("projection:200", "projection:201", "projection:202", "projection:203", "projection-edge:204", "projection-edge:205",
                    "image:210", "image:211", "demo"),
    shape: tuple = (64, 192, 192),
    slices: tuple = (2, 10),
    epochs: int = 10,
    scratch_factor: int = 10,
    seeds: tuple = (0, 1, 2),
    forest_slices: int = 10,
    adapt: bool = True,
    infer: tuple = (),
    self_train: float = 0.0,
    overlays: tuple = tuple(GENERALIST_OVERLAYS),
    f0: int | None = None,
    work_dir: str = "runs/held_out",
    results: str | None = None,
    overrides: dict | None = None,
) -> None:
    """Each scan of `scans` ("<kind>:<seed>", kind projection, projection-edge, image or image-edge, or "demo"): `model`
    without labels (`model`), with `--adapt bn` (`model + adapt bn`), with each inference lever of `infer` ("tta",
    "multi_axis", "tta+multi_axis": `model + infer <lever>`), self-trained on its own labels of confidence >= `self_train`
    for `epochs` (`model + self-train`, once per seed; none for 0), a random forest on `forest_slices` evenly spaced
    labelled z-planes (`forest N slices`), `model` fine-tuned for `epochs` on N of `slices` planes (`fine-tuned N
    slices`) and, on the most planes, a network trained from scratch for `scratch_factor` x `epochs` (none for 0); each training
    once per seed of `seeds`. Rows: study `held_out`, run `<method> on <scan>`, seed = the training seed (0 without
    training); resumable (a run with its row is skipped). The variant (2D, 2.5D, 3D) and, `f0` None, the width are the
    model's (its sidecar); its fine-tuning and training from scratch are of that variant and width."""
    from ..checkpoints import variant_of, width_of
    from ..data import load_dataset_description

    variant, f0 = variant_of(model), width_of(model, f0)
    work = Path(work_dir)
    results = Path(results or work / "results.csv")
    overlays, overrides, network = list(overlays), dict(overrides or {}), {"network_def#f0": int(f0)}
    for lever in infer:
        if lever not in INFERENCE_LEVERS or lever == "none":
            raise ValueError(f"unknown inference lever {lever!r}; choose from {[k for k in INFERENCE_LEVERS if k != 'none']}")
    slices, seeds = sorted(int(n) for n in slices), [int(s) for s in seeds]
    for scan in scans:
        data = _scan_data(work, str(scan), tuple(int(v) for v in shape))
        (dense,) = load_dataset_description(data)
        done = {(r["run"], row_seed(r)) for r in read_rows(results)}
        study = Study(dataset_dir=str(data), work_dir=str(work), results=str(results), overrides=overrides)
        study.score("held_out", f"model on {scan}", 0, variant, network, Path(model), "no labels", [], train_slices=0)
        scored_path = study._folder("held_out", f"model on {scan} seed=0") / "eval" / "metrics.json"
        if not scored_path.is_file():
            raise FileNotFoundError(f"{scored_path}: missing, though {results} has the row 'model on {scan}': the study reads the "
                                    f"scan's baselines from it; restore that folder or remove the row to score the model again")
        scored = json.loads(scored_path.read_text())
        if adapt and (f"model + adapt bn on {scan}", 0) not in done:
            _adapted_row(work, scan, data, dense, Path(model), variant, network, overrides, results)
        for lever in infer:
            study.score("held_out", f"model + infer {lever} on {scan}", 0, variant, network, Path(model), lever, INFERENCE_LEVERS[lever],
                        train_slices=0)
        for seed in seeds if self_train else []:
            if (f"model + self-train on {scan}", seed) not in done:
                _self_trained_row(work, str(scan), data, dense, Path(model), variant, float(self_train), int(epochs), seed, int(f0), overlays,
                                  overrides, results)
        for seed in seeds:
            if (f"forest {int(forest_slices)} slices on {scan}", seed) not in done:
                _forest_row(scan, data, dense, int(forest_slices), seed, scored["baselines"], results)
        for n in slices:
            starts = [(f"fine-tuned {n} slices on {scan}", Path(model), int(epochs))]
            if n == slices[-1] and int(scratch_factor) > 0:
                starts.append((f"scratch {n} slices {int(scratch_factor)}x steps on {scan}", None, int(epochs) * int(scratch_factor)))
            for seed in seeds:
                todo = [start for start in starts if (start[0], seed) not in done]
                if not todo:
                    continue
                folder = work / "held_out" / scan.replace(":", "") / f"slices{n}"
                _sparse_dataset(folder / "data", dense)
                _annotate(_spaced_planes(dense.ranges("train")[0], n), dense.image_path, dense.label_path, folder / "edit", folder / "data")
                for run, start, count in todo:
                    _fine_tune_and_score(folder / f"{'fine_tuned' if start else 'scratch'}_seed{seed}", folder / "data", "held_out", run,
                                         "fine-tuned" if start else "scratch", seed, _annotated_planes(folder / "data"), start, count,
                                         int(f0), overlays, overrides, results, variant=variant)
