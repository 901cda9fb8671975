"""Figures and markdown tables of the study CSVs: IoU in %, mean ± sd over seeds, differences from references."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..figures import save_figure
from .study import VARIANT_ORDER, read_rows, row_seed


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

    rows = read_rows(Path(results))
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
    out = {"seeds": sorted(row_seed(r) for r in rows)}
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
    base = {row_seed(r): float(r[key]) for r in reference}
    diffs = [(float(r[key]) - base[row_seed(r)]) * 100 for r in rows if row_seed(r) in base]
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


def _by_scan(by_run: dict[str, list[dict]]) -> list[str]:
    """The held-out study as scan x method: mean IoU in % (mean over seeds) and the time taken (training, fitting, or
    adapting and segmenting; none for the model as shipped), Bin-ZeroOC fitted on the scan's train slices first; the
    last row averages the projection draws."""
    methods = list(dict.fromkeys(name.split(" on ", 1)[0] for name in by_run))
    scans = list(dict.fromkeys(name.split(" on ", 1)[1] for name in by_run))
    cell = {name: statistics.fmean(float(r["mean_iou"]) * 100 for r in rows) for name, rows in by_run.items()}
    baseline = {name.split(" on ", 1)[1]: float(rows[0]["bin_zero_oc_train_mean"]) * 100 for name, rows in reversed(by_run.items())}
    lines = ["", "| scan | Bin-ZeroOC | " + " | ".join(methods) + " |", "|---|---:|" + "---:|" * len(methods)]
    for scan in scans:
        cells = []
        for method in methods:
            group = by_run.get(f"{method} on {scan}")
            if group:
                seconds = statistics.fmean(float(r["train_seconds"] or 0) for r in group)
                took = f" ({seconds / 60:.1f} min)" if seconds >= 60 else f" ({seconds:.0f} s)" if seconds else ""
                cells.append(f"{cell[f'{method} on {scan}']:.1f}{took}")
            else:
                cells.append("")
        lines.append(f"| {scan} | {baseline[scan]:.1f} | " + " | ".join(cells) + " |")
    drawn = [scan for scan in scans if scan.startswith("projection")]
    if drawn:
        means = [statistics.fmean(cell[f"{m} on {s}"] for s in drawn) if all(f"{m} on {s}" in cell for s in drawn) else None for m in methods]
        lines.append(f"| mean of the {len(drawn)} projection draws | {statistics.fmean(baseline[s] for s in drawn):.1f} | "
                     + " | ".join("" if v is None else f"**{v:.1f}**" for v in means) + " |")
    return lines


ERRORS = ("precision_fibre", "recall_fibre", "precision_porosity", "recall_porosity")


def _errors_by_run(by_run: dict[str, list[dict]]) -> list[str]:
    """Precision and recall of fibre and porosity per run (mean over seeds, %): whether a method over-segments a
    phase (precision low) or misses it (recall low); empty for a CSV begun before they were recorded."""
    if not all(r.get(key) for rows in by_run.values() for r in rows for key in ERRORS):
        return []
    lines = ["", "| run | fibre precision / recall | porosity precision / recall |", "|---|---:|---:|"]
    for name, rows in by_run.items():
        value = {key: statistics.fmean(float(r[key]) * 100 for r in rows) for key in ERRORS}
        lines.append(f"| {name} | {value['precision_fibre']:.1f} / {value['recall_fibre']:.1f} | "
                     f"{value['precision_porosity']:.1f} / {value['recall_porosity']:.1f} |")
    return lines


def study_tables(results: str | Path) -> dict[str, str]:
    """A markdown table per study of a results CSV: each run's mean ± standard deviation over its seeds, and its
    difference in porosity and mean IoU from its reference, paired by seed (`_paired`); the held-out study adds its
    scan x method table and, where recorded, each run's precision and recall of fibre and porosity."""
    rows = read_rows(Path(results))
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
        elif study == "held_out":
            lines += _by_scan(by_run) + _errors_by_run(by_run)
        else:
            lines.append(f"\nBin-ZeroOC fitted on each test volume itself: {_baseline_text(_distinct_baselines(chosen))}.")
        tables[f"{Path(results).stem}:{study}"] = "\n".join(lines) + "\n"
    return tables


def table(results: str = "runs/experiments/results.csv") -> None:
    """Markdown tables of every study in the results CSV (IoU in %, mean ± sd over seeds, differences from references)."""
    for name, text in study_tables(results).items():
        print(f"\n### {name}\n\n{text}")
