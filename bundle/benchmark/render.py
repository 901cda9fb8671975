"""The docs tables, rendered from the JSON and CSV files under docs/results/ (`scripts/benchmark.py report`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..io import write_atomically
from ..studies.tables import study_tables
from .measure import ROOT

RESULTS = ROOT / "docs" / "results"


BLOCK = re.compile(r"(<!-- table:(?P<name>[\w:.-]+) -->\n)(?P<body>.*?)(<!-- end -->)", re.S)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _machine_line(m: dict) -> str:
    emulated = f", emulated with ONEDNN_MAX_CPU_ISA={m['emulated_isa']} on a newer CPU" if m.get("emulated_isa") else ""
    return (
        f"{m['cpu_model']}, capability {m['cpu_capability']}, native bf16 {'yes' if m['cpu_native_bf16'] else 'no'}{emulated}; "
        f"{m['usable_cpus']} usable CPUs, {m['threads']} threads, torch {m['torch']}"
    )


def _suite_table(result: dict) -> str:
    rows = []
    inference = {(r["variant"], r["precision_requested"]): r for r in result["inference"]}
    for variant in dict.fromkeys(r["variant"] for r in result["inference"]):
        auto, fp32 = inference[(variant, "auto")], inference[(variant, "fp32")]
        rows.append([f"{variant} inference, Mvox/s file to file ({auto['input']})", f"{auto['voxels_per_s'] / 1e6:.3f} ({' '.join(filter(None, (auto.get('backend'), auto['precision'])))})",
                     f"{fp32['voxels_per_s'] / 1e6:.3f}", f"{auto['voxels_per_s'] / fp32['voxels_per_s']:.2f}x"])
        rows.append([f"{variant} inference, peak RSS MiB", auto["peak_rss_mib"], fp32["peak_rss_mib"], ""])
    training = {(r["variant"], r["precision_requested"]): r for r in result["train_workflow"]}
    for variant in dict.fromkeys(r["variant"] for r in result["train_workflow"]):
        auto, fp32 = training[(variant, "auto")], training[(variant, "fp32")]
        label = f"{variant} training, s/step of `run training` (batch {auto['batch']}, crops {auto['crop']}, median of {auto['steps_timed']})"
        rows.append([label, f"{auto['seconds_per_step']} ({auto['precision']})", fp32["seconds_per_step"],
                     f"{fp32['seconds_per_step'] / auto['seconds_per_step']:.2f}x"])
        rows.append([f"{variant} training, peak RSS MiB", auto["peak_rss_mib"], fp32["peak_rss_mib"], ""])
    default = "default (`precision auto`" + (", `backend " + result["backend_requested"] + "`)" if "backend_requested" in result else ")")
    return f"Machine: {_machine_line(result['machine'])}.\n\n" + _table(["measurement", default, "torch fp32", "default speed-up"], rows)


def _edges_table(result: dict) -> str:
    keys = ["iou_matrix", "iou_fibre", "iou_porosity", "mean_iou", "frame_error_pct", "interior_error_pct", "frame_to_interior"]
    return _table(["past the edge", *keys], [[r["scheme"], *(r[k] for k in keys)] for r in result["rows"]])


def _memory_table(result: dict) -> str:
    rows = [[f"{r['shape_zyx']} uint8, default outputs", round(r["voxels"] / 2**20), r["peak_rss_mib"], r["written_bytes_per_voxel"],
             f"{r['voxels_per_s'] / 1e6:.3f}"] for r in result["runs"]]
    p = result["with_probabilities"]
    rows.append([f"{p['shape_zyx']} uint8, + probabilities", round(p["voxels"] / 2**20), p["peak_rss_mib"],
                 round(p["written_bytes"] / p["voxels"], 3), f"{p['voxels_per_s'] / 1e6:.3f}"])
    capped = result["capped"]
    text = _table(["volume", "Mi voxels", "peak RSS MiB", "bytes written per voxel", "Mvox/s"], rows)
    if capped.get("finished") is not None:
        text += (f"\nUnder a memory cgroup ({capped['cap']} bytes) the last run "
                 f"{'finished' if capped['finished'] else 'failed'}"
                 + (f", peak RSS {capped['peak_rss_mib']} MiB, same bytes: {'yes' if capped['same_bytes'] else 'NO'}.\n" if capped["finished"] else ".\n"))
    else:
        text += f"\nNo capped run: {capped['cap']}.\n"
    return f"Machine: {_machine_line(result['machine'])}.\n\n" + text


def _backends_table(result: dict) -> str:
    rows, fastest = [], max(r["file_to_file"]["voxels_per_s"] for r in result["rows"] if r["precision"] != "int8")
    fp32 = next(r for r in result["rows"] if (r["backend_requested"], r["precision_requested"]) == ("torch", "fp32"))
    for r in result["rows"]:
        asked = "default (auto, auto)" if r["backend_requested"] == "auto" else f"{r['backend_requested']} {r['precision_requested']}"
        rate = r["file_to_file"]["voxels_per_s"]
        quality = [f"{q['iou']['mean']:.2f} / {q['iou']['porosity']:.2f} ({q['labels_equal_to_torch_fp32_pct']:.2f} %)" for q in r["quality"].values()]
        rows.append([asked, f"{r['backend']} {r['precision']}", f"{r['forward']['voxels_per_s'] / 1e6:.3f}", f"{rate / 1e6:.3f}",
                     f"{rate / fp32['file_to_file']['voxels_per_s']:.2f}x", f"{100 * rate / fastest:.0f} %",
                     r["file_to_file"]["peak_rss_mib"], *quality])
    seeds = list(result["rows"][0]["quality"])
    header = ["asked", "ran", "forward Mvox/s", "file to file Mvox/s", "vs torch fp32", "of fastest float", "peak RSS MiB",
              *(f"seed {s}: mean / porosity IoU (labels = fp32)" for s in seeds)]
    return (f"Machine: {_machine_line(result['machine'])}. Forward: {result['forward_input']}; file to file: "
            f"{result['speed_input']}; quality: {result['quality_input']}.\n\n" + _table(header, rows))


def render(results_dir: str | Path = RESULTS) -> dict[str, str]:
    """Every table of docs/ that comes from a results file, by name (the `<!-- table:NAME -->` blocks)."""
    results_dir = Path(results_dir)
    tables = {}
    for path in sorted(results_dir.glob("benchmark_*.json")):
        tables[path.stem] = _suite_table(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("backends_*.json")):
        tables[path.stem] = _backends_table(json.loads(path.read_text()))
    for path in sorted(results_dir.glob("edges*.json")):
        tables[path.stem] = _edges_table(json.loads(path.read_text()))
    if (results_dir / "seamless.json").is_file():
        result = json.loads((results_dir / "seamless.json").read_text())
        keys = ["variant", "precision", "levers", "roi_vs_whole_pct", "tile_vs_default_pct", "slab_3_vs_auto_pct"]
        tables["seamless"] = (f"Phantom {result['shape_zyx']}, box {result['roi']}; labels equal, %.\n\n"
                              + _table(keys, [[r[k] for k in keys] for r in result["rows"]]))
    if (results_dir / "tiff_pages.json").is_file():
        result = json.loads((results_dir / "tiff_pages.json").read_text())
        keys = ["first_page", "pages_read", "seconds_one_handle", "seconds_reopened_per_page"]
        tables["tiff_pages"] = f"{result['pages']} pages of {result['page_shape']}.\n\n" + _table(keys, [[r[k] for k in keys] for r in result["rows"]])
    if (results_dir / "memory.json").is_file():
        tables["memory"] = _memory_table(json.loads((results_dir / "memory.json").read_text()))
    if (results_dir / "phantom_baseline.json").is_file():
        result = json.loads((results_dir / "phantom_baseline.json").read_text())
        names = ("matrix", "fibre", "porosity")
        tables["phantom_baseline"] = _table(["", *names, "mean"], [
            ["class fractions (%)", *(result["fraction"][n] for n in names), ""],
            ["Bin-ZeroOC IoU (%)", *(result["iou"][n] for n in names), f"**{result['mean_iou']}**"],
        ])
    for path in sorted(results_dir.glob("*_model.json")):
        tables[path.stem] = _model_quality_table(json.loads(path.read_text()))
    histories = [json.loads(path.read_text()) for path in sorted(results_dir.glob("*_training.json"))]
    if histories:
        tables["full_schedule"] = _training_histories_table(histories)
    if (results_dir / "formats.json").is_file():
        tables.update(_formats_tables(json.loads((results_dir / "formats.json").read_text())))
    for path in sorted(results_dir.glob("study*.csv")):
        tables.update(study_tables(path))
    if (results_dir / "test_durations.txt").is_file():
        tables["test_durations"] = _durations_table((results_dir / "test_durations.txt").read_text())
    return tables


def _durations_table(text: str) -> str:
    """The slowest tests of a recorded `bash .ci/run` (pytest's `--durations` lines), under the run's own first and last lines."""
    lines = text.strip().splitlines()
    slowest = [re.match(r"^([0-9.]+)s (call|setup|teardown) +(\S+)$", line) for line in lines]
    rows = [[m[1], m[2], f"`{m[3]}`"] for m in slowest if m]
    summary = next((line for line in reversed(lines) if " passed" in line), "")
    return f"{lines[0]}\n{summary.strip()}\n\n" + _table(["seconds", "phase", "test"], rows)


def _training_histories_table(histories: list[dict]) -> str:
    """Validation mean / porosity IoU (%) of full-schedule training runs side by side (`experiments.py
    training-history`), every 20 epochs, with each run's best epoch and wall time."""
    def cell(v: dict) -> str:
        return f"{v['mean_iou'] * 100:.1f} / {v['iou_porosity'] * 100:.1f}"

    by_epoch = [{v["epoch"]: v for v in h["validation"]} for h in histories]
    epochs = sorted(set().union(*by_epoch))
    rows = [[e, *(cell(b[e]) if e in b else "" for b in by_epoch)] for e in epochs if e % 20 == 0]
    best = [max(h["validation"], key=lambda v: v["mean_iou"]) for h in histories]
    rows.append(["best (epoch)", *(f"**{cell(v)}** ({v['epoch']})" for v in best)])
    rows.append(["wall time", *(h["time"].split(".")[0] for h in histories)])
    machines = "; ".join(f"{h['label']}: {_machine_line(h['machine']) if h['machine'] else 'machine not recorded'}" for h in histories)
    return _table(["validation mean / porosity IoU at epoch", *(h["label"] for h in histories)], rows) + f"\nMachines: {machines}.\n"


def _model_quality_table(result: dict) -> str:
    """IoU (%) of a model (`experiments.py shipped`) and the paper's baselines on each phantom's test slices, and its
    porosity precision and recall."""
    names = {"zero_oc": "ZeroOC", "bin_zero_oc_train": "Bin-ZeroOC fitted on the train slices",
             "bin_zero_oc_test": "Bin-ZeroOC fitted on the test slices"}
    rows = []
    for volume in result["volumes"]:
        m, where = volume["metrics"], f"{volume['name']} (seed {volume['phantom']['seed']}, {'x'.join(map(str, volume['phantom']['shape']))})"
        pores = m["report"]["porosity"]
        rows.append([where, f"**{result['label']}**", *(f"{m['iou'][c] * 100:.1f}" for c in ("matrix", "fibre", "porosity")),
                     f"**{m['mean_iou'] * 100:.1f}**", f"{pores['precision'] * 100:.1f} / {pores['recall'] * 100:.1f}"])
        for key, label in names.items():
            b = m["baselines"][key]
            rows.append([where, label, *(f"{b['iou'][c] * 100:.1f}" for c in ("matrix", "fibre", "porosity")), f"{b['mean_iou'] * 100:.1f}", ""])
    head = f"{_machine_line(result['machine'])}.\n\n"
    return head + _table(["test slices of", "model", "matrix", "fibre", "porosity", "mean", "porosity precision / recall"], rows)


def _formats_tables(result: dict) -> dict[str, str]:
    head = f"{_machine_line(result['machine'])}; chunks (z, y, x) {tuple(result['chunks_zyx'])}, f0={result['f0']} network.\n\n"
    keys = ["format", "shape_zyx", "gib_on_disk", "read_mib_per_s", "voxels_per_s", "peak_rss_mib", "labels_equal_raw_input"]
    compare = head + _table(keys, [[r[k] for k in keys] for r in result["compare"]])
    keys = ["format", "shape_zyx", "gib_uncompressed", "gib_on_disk", "seconds_incl_startup", "voxels_per_s", "peak_rss_mib",
            "image_shape", "labels_shape"]
    big = head + _table(keys, [[r[k] for k in keys] for r in result["big"]])
    return {"formats": compare, "formats_big": big}


def rendered_docs(docs_dir: str | Path = ROOT / "docs", results_dir: str | Path = RESULTS) -> dict[Path, str]:
    """The text each docs page should have, its tables re-rendered from the results files."""
    tables = render(results_dir)
    pages = {}
    for page in sorted(Path(docs_dir).glob("*.md")):
        text = page.read_text()

        def fill(match, page=page):
            name = match.group("name")
            if name not in tables:
                raise KeyError(f"{page}: table {name!r} has no results file in {results_dir}")
            return match.group(1) + tables[name] + match.group(4)

        pages[page] = BLOCK.sub(fill, text)
    return pages


def report(docs_dir: str = str(ROOT / "docs"), results_dir: str = str(RESULTS)) -> None:
    """Re-render the tables of docs/*.md from docs/results/ (the drift test checks they are up to date)."""
    for page, text in rendered_docs(docs_dir, results_dir).items():
        if page.read_text() != text:
            write_atomically(page, text)
            print(f"updated {page}")
