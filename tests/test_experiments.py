import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, bundle_run, config_list, run_script

from bundle.benchmark.render import render
from bundle.io import open_volume
from bundle.studies import study, tables
from bundle.studies.held_out import held_out

TINY = '{"crop_size": [32, 32], "val_roi": [256, 256], "roi_size": [256, 256], "batch_size": 2, "steps_per_epoch": 2, "val_interval": 1, "num_workers": 0}'


def experiment(*args):
    return run_script("experiments.py", *args)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_each_study_writes_its_rows_and_an_interrupted_study_resumes(tiny_dataset, tmp_path):
    common = ["--dataset_dir", str(tiny_dataset), "--epochs", "1", "--work_dir", str(tmp_path), "--overrides", TINY]
    experiment("compare-variants", *common, "--f0s", "[4]", "--variants", "['2d','2.5d']")
    experiment("ablation", *common, "--f0", "4", "--changes", "['default']")
    out = experiment("ablation", *common, "--f0", "4", "--changes", "['default','no_residual']")
    assert "skip 2d ablation default" in out
    experiment("learning-curve", *common, "--f0", "4", "--sizes", "[1,2]")
    experiment("levers", *common, "--f0", "4", "--training", "['none','paper_sampling','paper_loss']", "--trained_inference", "['tta']",
               "--seeds", "[0,1]")
    given = tmp_path / "variants" / "2d_f0-4_seed-0" / "models" / "model.pt"
    experiment("inference-levers", "--work_dir", str(tmp_path), "--overrides", TINY, "--f0", "4", "--levers", "['none','tta']",
               "--data_seeds", "[5,6]", "--shape", "[48,64,64]", "--models", f'{{"given": "{given}"}}')
    table = rows(tmp_path / "results.csv")
    assert [(r["run"], r["seed"]) for r in table] == [
        ("2d f0=4", "0"),
        ("2.5d f0=4", "0"),
        ("2d ablation default", "0"),
        ("2d ablation no_residual", "0"),
        ("2d slices=1", "0"),
        ("2d slices=2", "0"),
        ("2d train none", "0"),
        ("2d train none", "1"),
        ("2d train none + infer tta", "0"),
        ("2d train none + infer tta", "1"),
        ("2d train paper_sampling", "0"),
        ("2d train paper_sampling", "1"),
        ("2d train paper_loss", "0"),
        ("2d train paper_loss", "1"),
        ("2d given + infer none", "5"),
        ("2d given + infer tta", "5"),
        ("2d given + infer none", "6"),
        ("2d given + infer tta", "6"),
    ]
    assert all(0 <= float(r["mean_iou"]) <= 1 and float(r["bin_zero_oc_test_mean"]) > 0 for r in table)
    assert all(float(r["eval_seconds_per_mvoxel"]) > 0 for r in table)
    assert int(table[3]["parameters"]) < int(table[2]["parameters"])
    assert [r["train_slices"] for r in table[4:6]] == ["1", "2"]
    reused = [r for r in table if r["run"] in ("2d ablation default", "2d train none") and r["seed"] == "0"]
    assert all(r["mean_iou"] == table[0]["mean_iou"] and r["config"] == table[0]["config"] for r in reused)
    assert table[7]["config"] != table[6]["config"] and len({r["config"] for r in table[10:14]}) == 4
    assert table[14]["mean_iou"] != table[16]["mean_iou"], "another phantom seed is another test volume"
    markdown = experiment("table", "--results", str(tmp_path / "results.csv"))
    cells = {line.split("|")[1].strip(): line.split("|") for line in markdown.splitlines() if line.startswith("| 2d ")}
    expected = (float(table[3]["mean_iou"]) - float(table[2]["mean_iou"])) * 100
    assert abs(float(cells["2d ablation no_residual"][9].strip(" *")) - expected) <= 0.051
    mean = lambda name: sum(float(r["mean_iou"]) for r in table if r["run"] == name) / 2 * 100  # noqa: E731
    assert cells["2d train paper_loss"][2].strip() == "0,1" and " ± " in cells["2d train paper_loss"][7]
    paired = cells["2d train paper_loss"][9].split("±")
    assert len(paired) == 2 and abs(float(paired[0]) - (mean("2d train paper_loss") - mean("2d train none"))) <= 0.051
    assert cells["2d given + infer tta"][2].strip() == "5,6"
    experiment("plot", "--results", str(tmp_path / "results.csv"), "--output_dir", str(tmp_path / "figures"))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "fig5a_variants.png",
        "fig5b_ablation.png",
        "fig6_learning_curve.png",
    ]


def test_crop_scale_halves_each_variants_paper_crop_and_keeps_it_a_multiple_of_the_depth():
    assert study._crop_size("2d", 0.5, 3) == [80, 80]
    assert study._crop_size("2.5d", 0.5, 3) == [80, 80]
    assert study._crop_size("3d", 0.5, 3) == [16, 16, 16]
    assert study._crop_size("2d", 0.3, 4) == [48, 48]
    assert study._crop_size("3d", 0.1, 3) == [8, 8, 8]


def test_the_simulated_annotation_loop_adds_planes_per_strategy_and_scores_each_round(tmp_path):
    import torch

    from bundle.networks import ModularUNet

    torch.manual_seed(0)
    torch.save(ModularUNet(f0=4).state_dict(), tmp_path / "start.pt")
    tiny = '{"crop_size": [16, 16], "val_roi": [256, 256], "roi_size": [256, 256], "batch_size": 2, "steps_per_epoch": 2, "num_workers": 0}'
    experiment("annotation-loop", "--strategies", "['uncertainty','even']", "--data_seeds", "[3]", "--shape", "[48,64,64]", "--start", "1",
               "--per_round", "2", "--rounds", "1", "--epochs", "1", "--pretrained", str(tmp_path / "start.pt"), "--f0", "4",
               "--work_dir", str(tmp_path), "--overrides", tiny)
    table = rows(tmp_path / "results.csv")
    assert [(r["run"], r["seed"], r["train_slices"]) for r in table] == [
        ("uncertainty round 0", "3", "1"), ("uncertainty round 1", "3", "3"), ("even round 0", "3", "1"), ("even round 1", "3", "3"),
    ]
    even = json.loads((tmp_path / "seed3" / "even" / "data" / "dataset.json").read_text())["volumes"][1]["annotated_planes"]
    assert len(even["z"]) == 3 and min(b - a for a, b in zip(even["z"], even["z"][1:])) >= 5
    assert json.loads(table[1]["config"])["pretrained"].endswith("uncertainty/round0/models/model.pt")
    out = experiment("annotation-loop", "--strategies", "['uncertainty']", "--data_seeds", "[3]", "--shape", "[48,64,64]", "--start", "1",
                     "--per_round", "2", "--rounds", "1", "--epochs", "1", "--pretrained", str(tmp_path / "start.pt"), "--f0", "4",
                     "--work_dir", str(tmp_path), "--overrides", tiny)
    assert "skip uncertainty seed 3: every round already in" in out and len(rows(tmp_path / "results.csv")) == 4
    experiment("plot", "--results", str(tmp_path / "results.csv"), "--output_dir", str(tmp_path / "figures"))
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["fig_annotation_loop.png"]


def test_differences_are_paired_by_seed_and_marked_only_when_every_seed_agrees_beyond_the_spread():
    reference = [{"seed": s, "mean_iou": v} for s, v in ((0, 0.70), (1, 0.80), (2, 0.75))]
    consistent = [{"seed": s, "mean_iou": v} for s, v in ((0, 0.72), (1, 0.82), (2, 0.77))]
    mixed = [{"seed": s, "mean_iou": v} for s, v in ((0, 0.76), (1, 0.79), (2, 0.76))]
    assert tables._paired(consistent, reference, "mean_iou") == "+2.0 ± 0.0*"
    assert tables._paired(mixed, reference, "mean_iou") == "+2.0 ± 3.6"
    assert tables._paired(consistent[:1], reference, "mean_iou") == "+2.0"
    assert tables._paired([{"seed": 5, "mean_iou": 0.9}], reference, "mean_iou") == ""
    runs = {"random round 2", "uncertainty round 2", "even round 2"}
    assert tables._reference("uncertainty round 2", "annotation_loop", runs) == "random round 2"
    assert tables._reference("random round 2", "annotation_loop", runs) is None


def test_the_generalist_trains_on_family_draws_and_is_scored_beside_the_phantom_trained_model_on_edge_draws(tmp_path):
    from bundle.phantom import PhantomFamily

    experiment("generalist", "--train_seeds", "[1,2]", "--held_out_seeds", "[3]", "--shape", "[24,64,64]", "--demo", "False",
               "--work_dir", str(tmp_path), "--epochs", "1",
               "--overrides", '{"crop_size": [32, 32], "steps_per_epoch": 2, "batch_size": 2, "val_interval": 1, "num_workers": 0}')
    assert [r["run"] for r in rows(tmp_path / "results.csv")] == ["2d generalist", "2d phantom-trained on edge draws", "2d generalist on edge draws"]
    sidecar = json.loads((tmp_path / "generalist" / "2d_generalist_seed-0" / "models" / "model.json").read_text())
    assert sidecar["grey_percentiles"] == [0.5, 99.5]
    (held_out,) = json.loads((tmp_path / "data" / "edge3" / "dataset.json").read_text())["volumes"]
    assert held_out["phantom"]["noise_std"] == PhantomFamily().draw(3, edge=True).noise_std
    table = tables.study_tables(tmp_path / "results.csv")["results:generalist"]
    assert "On edge draws, Bin-ZeroOC fitted on each test volume itself" in table and "2d phantom-trained " in table.splitlines()[-1]
    assert "porosity IoU above it: 2d phantom-trained" in table.splitlines()[-1]


def test_fine_tuning_is_scored_beside_training_from_scratch_on_the_same_slices_of_a_held_out_draw(tmp_path):
    import torch

    from bundle.networks import ModularUNet

    torch.manual_seed(0)
    torch.save(ModularUNet(f0=4).state_dict(), tmp_path / "start.pt")
    args = ["fine-tune", "--pretrained", str(tmp_path / "start.pt"), "--data_seeds", "[3]", "--shape", "[24,64,64]", "--slices", "[2]",
            "--epochs", "2", "--scratch_epochs", "3", "--short_epochs", "[1]", "--f0", "4", "--work_dir", str(tmp_path), "--overrides", TINY]
    experiment(*args)
    table = rows(tmp_path / "results.csv")
    assert [(r["run"], r["train_slices"], r["epochs"]) for r in table] == [
        ("pretrained 0 slices", "0", ""), ("pretrained 2 slices", "2", "2"), ("scratch 2 slices", "2", "2"), ("scratch long 2 slices", "2", "3"),
        ("pretrained 2 slices 1 epochs", "2", "1"),
    ]
    assert [json.loads(r["config"]).get("pretrained") for r in table[1:]] == [str(tmp_path / "start.pt"), None, None, str(tmp_path / "start.pt")]
    planes = [json.loads(r["config"])["planes"] for r in table[1:]]
    assert all(p == planes[0] for p in planes) and list(planes[0]) == ["z"] and len(set(planes[0]["z"])) == 2
    sidecar = json.loads((tmp_path / "seed3" / "slices2" / "scratch" / "models" / "model.json").read_text())
    assert sidecar["grey_percentiles"] == [0.5, 99.5]
    assert "skip 2 slices seed 3: every run already in" in experiment(*args) and len(rows(tmp_path / "results.csv")) == 5
    assert tables._reference("pretrained 2 slices 1 epochs", "fine_tune", {r["run"] for r in table}) == "pretrained 2 slices"
    lines = tables.study_tables(tmp_path / "results.csv")["results:fine_tune"].splitlines()
    for run in ("pretrained 2 slices |", "pretrained 2 slices 1 epochs |"):
        assert next(line for line in lines if line.startswith(f"| {run}")).split("|")[8].strip() != ""
    experiment("plot", "--results", str(tmp_path / "results.csv"), "--output_dir", str(tmp_path / "figures"))
    assert [p.name for p in (tmp_path / "figures").iterdir()] == ["fig_fine_tune.png"]


def test_a_results_csv_begun_before_a_column_was_added_keeps_its_columns_and_its_tables(tmp_path):
    row = {key: "1" for key in study.FIELDS} | {"study": "levers", "run": "2d train none", "seed": "0", "mean_iou": "0.8",
                                                     "bin_zero_oc_test_mean": "0.7", "bin_zero_oc_test_porosity": "0.4"}
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text(",".join(f for f in study.FIELDS if f != "bin_zero_oc_test_porosity") + "\n")
    study.append_row(old, row)
    study.append_row(new, row)
    assert "bin_zero_oc_test_porosity" not in rows(old)[0] and rows(old)[0]["config"] == "1"
    assert rows(new)[0]["bin_zero_oc_test_porosity"] == "0.4"
    assert tables.study_tables(old)["old:levers"].endswith("mean IoU 70.0.\n")
    assert tables.study_tables(new)["new:levers"].endswith("mean IoU 70.0, porosity IoU 40.0.\n")


def test_training_history_reads_a_real_run_log_and_tables_it_beside_the_phantom_trained_run(tiny_dataset, tmp_path):
    result = bundle_run("run", "training", "--config_file", config_list("train.json"), "--dataset_dir", str(tiny_dataset),
                        "--output_dir", str(tmp_path / "run"), "--max_epochs", "2", "--steps_per_epoch", "2", "--batch_size", "2",
                        "--val_interval", "1", "--network_def#f0", "4", "--num_workers", "0", "--crop_size", "[32,32]", "--val_roi", "[256,256]")
    log = tmp_path / "train.log"
    log.write_text(result.stdout + result.stderr)
    results = tmp_path / "results"
    experiment("training-history", "--log", str(log), "--label", "tiny run", "--command", "run training", "--output", str(results / "tiny_training.json"))
    history = json.loads((results / "tiny_training.json").read_text())
    assert [v["epoch"] for v in history["validation"]] == [1, 2] and history["machine"]["usable_cpus"] >= 1
    assert all(0 <= v["mean_iou"] <= 1 for v in history["validation"]) and history["time"].count(":") == 2
    shutil.copy(ROOT / "docs" / "results" / "phantom_model_training.json", results)
    lines = render(results)["full_schedule"].splitlines()
    assert lines[0].endswith("| tiny run |") and any(line.startswith("| 200 | 94.8 / 88.6 |") for line in lines)
    best = max(history["validation"], key=lambda v: v["mean_iou"])
    assert next(line for line in lines if line.startswith("| best")).split("|")[3].strip().endswith(f"({best['epoch']})")
    log.write_text("no metrics here\n")
    failed = subprocess.run([sys.executable, str(ROOT / "scripts" / "experiments.py"), "training-history", "--log", str(log), "--label", "x",
                             "--output", str(results / "bad_training.json")], capture_output=True, text=True)
    assert failed.returncode != 0 and failed.stderr.strip().splitlines()[-1].startswith(f"{log}: no validation metrics")
    assert not (results / "bad_training.json").exists()


def test_held_out_scans_are_scored_by_the_model_its_adaptation_a_forest_fine_tuning_and_scratch_training(tmp_path):
    import torch

    from bundle.networks import ModularUNet

    torch.manual_seed(0)
    start = ModularUNet(f0=4)
    with torch.no_grad():
        start.head.weight.mul_(10000)  # confident enough for some voxels to become pseudo-labels
    torch.save(start.state_dict(), tmp_path / "start.pt")
    args = ["held-out", "--model", str(tmp_path / "start.pt"), "--scans", '["projection-edge:204"]', "--shape", "[24,64,64]", "--slices", "[2]",
            "--epochs", "1", "--scratch_factor", "2", "--seeds", "[0]", "--forest_slices", "2", "--f0", "4", "--work_dir", str(tmp_path),
            "--infer", '["tta"]', "--self_train", "0.9", "--overrides", TINY]
    experiment(*args)
    table = rows(tmp_path / "results.csv")
    scan = "projection-edge:204"
    assert [(r["run"], r["train_slices"], r["epochs"]) for r in table] == [
        (f"model on {scan}", "0", ""), (f"model + adapt bn on {scan}", "0", ""), (f"model + infer tta on {scan}", "0", ""),
        (f"model + self-train on {scan}", "0", "1"), (f"forest 2 slices on {scan}", "2", ""), (f"fine-tuned 2 slices on {scan}", "2", "1"), (f"scratch 2 slices 2x steps on {scan}", "2", "2"),
    ]
    model, adapted, tta, self_trained, forest, tuned, scratch = table
    assert json.loads(self_trained["config"])["pretrained"] == str(tmp_path / "start.pt") and self_trained["change"] == "self-train 0.9"
    pseudo = open_volume(tmp_path / "held_out" / "projection-edge204" / "self_train" / "data" / "draw204.pseudo_labels.raw").read()
    assert set(np.unique(pseudo)) <= {0, 1, 2, 255} and (pseudo != 255).any()
    assert json.loads(tta["config"])["overlays"] == ["quality/tta.json"] and tta["change"] == "tta"
    assert model["mean_iou"] != adapted["mean_iou"] and float(adapted["train_seconds"]) > 0
    assert 0.4 < float(forest["mean_iou"]) <= 1 and forest["variant"] == "forest" and float(forest["train_seconds"]) > 0
    assert json.loads(forest["config"])["planes"]["z"] == json.loads(tuned["config"])["planes"]["z"]
    assert json.loads(tuned["config"])["pretrained"] == str(tmp_path / "start.pt") and json.loads(scratch["config"])["pretrained"] is None
    assert json.loads(tuned["config"])["overrides"] == json.loads(TINY)
    assert len({r["bin_zero_oc_test_mean"] for r in table}) == 1
    experiment(*args)
    assert len(rows(tmp_path / "results.csv")) == 7
    torch.save(ModularUNet(f0=4, in_channels=5).state_dict(), tmp_path / "wide.pt")
    (tmp_path / "wide.json").write_text(json.dumps({"variant": "2.5d", "network": {"in_channels": 5, "f0": 4}}))
    held_out(model=str(tmp_path / "wide.pt"), scans=[scan], shape=(24, 64, 64), slices=[2], seeds=[0], epochs=1, scratch_factor=0, adapt=False,
             forest_slices=2, work_dir=str(tmp_path / "wide"), overrides=json.loads(TINY))
    wide = rows(tmp_path / "wide" / "results.csv")
    assert [(r["run"], r["variant"], r["f0"]) for r in wide if r["variant"] != "forest"] == [
        (f"model on {scan}", "2.5d", "4"), (f"fine-tuned 2 slices on {scan}", "2.5d", "4")]
    tuned = json.loads((tmp_path / "wide" / "held_out" / "projection-edge204" / "slices2" / "fine_tuned_seed0" / "models" / "model.json").read_text())
    assert (tuned["variant"], tuned["network"]["f0"]) == ("2.5d", 4)
    torch.save(ModularUNet(f0=4).state_dict(), tmp_path / "unsure.pt")
    with pytest.raises(ValueError, match="no voxel reaches confidence 0.9 under .*unsure.pt; self-training needs a lower"):
        held_out(model=str(tmp_path / "unsure.pt"), scans=[scan], shape=(24, 64, 64), slices=[], seeds=[1], self_train=0.9, adapt=False,
                 work_dir=str(tmp_path / "unsure"), f0=4, overrides=json.loads(TINY))
    assert not list((tmp_path / "unsure" / "held_out" / "projection-edge204" / "self_train" / "data").iterdir())
    with pytest.raises(ValueError, match="unknown inference lever 'sharpen'"):
        held_out(model=str(tmp_path / "start.pt"), scans=[scan], infer=["sharpen"], work_dir=str(tmp_path))
    shutil.rmtree(tmp_path / "held_out" / f"model_on_{scan}_seed-0")
    with pytest.raises(FileNotFoundError, match="restore that folder or remove the row"):
        held_out(model=str(tmp_path / "start.pt"), scans=[scan], shape=(24, 64, 64), work_dir=str(tmp_path), overrides=json.loads(TINY))
    lines = tables.study_tables(tmp_path / "results.csv")["results:held_out"].splitlines()
    by_scan = next(i for i, line in enumerate(lines) if line.startswith("| scan | Bin-ZeroOC |"))
    assert lines[by_scan].startswith("| scan | Bin-ZeroOC | model | model + adapt bn | model + infer tta | model + self-train | forest 2 slices |")
    assert lines[by_scan + 3].startswith("| mean of the 1 projection draws |") and lines[by_scan + 2].startswith(f"| {scan} |")
    assert lines[by_scan + 2].count(" min)") + lines[by_scan + 2].count(" s)") == 5, lines[by_scan + 2]
    errors = lines.index("| run | fibre precision / recall | porosity precision / recall |")
    assert [line.split(" | ")[0][2:] for line in lines[errors + 2:]] == [r["run"] for r in table]
    for r, line in zip(table, lines[errors + 2:]):
        for name, cell in zip(("fibre", "porosity"), line.split(" | ")[1:]):
            precision, recall = float(r[f"precision_{name}"]), float(r[f"recall_{name}"])
            assert cell.strip(" |") == f"{100 * precision:.1f} / {100 * recall:.1f}"
            if precision and recall:  # IoU = 1 / (1 / precision + 1 / recall - 1): the same confusion counts
                assert abs(1 / (1 / precision + 1 / recall - 1) - float(r[f"iou_{name}"])) < 1e-9
