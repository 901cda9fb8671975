import csv
import importlib.util

from conftest import ROOT, run_script

TINY = '{"crop_size": [32, 32], "val_roi": [256, 256], "roi_size": [256, 256], "batch_size": 2, "steps_per_epoch": 2, "val_interval": 1, "num_workers": 0}'


def experiment(*args):
    return run_script("experiments.py", *args)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_study_writes_its_rows_and_an_interrupted_study_resumes(tiny_dataset, tmp_path):
    common = ["--dataset_dir", str(tiny_dataset), "--epochs", "1", "--work_dir", str(tmp_path), "--overrides", TINY]
    experiment("compare-variants", *common, "--f0s", "[4]", "--variants", "['2d','2.5d']")
    experiment("ablation", *common, "--f0", "4", "--changes", "['default']")
    out = experiment("ablation", *common, "--f0", "4", "--changes", "['default','no_residual']")
    assert "skip 2d ablation default" in out
    experiment("learning-curve", *common, "--f0", "4", "--sizes", "[1,2]")
    given = tmp_path / "variants" / "2d_f0-4" / "models" / "model.pt"
    experiment(
        "levers",
        *common,
        "--f0",
        "4",
        "--training",
        "['none','paper_sampling','paper_loss']",
        "--inference",
        "['none','tta']",
        "--trained_inference",
        "['tta']",
        "--models",
        f'{{"given": "{given}"}}',
    )
    table = rows(tmp_path / "results.csv")
    assert [r["run"] for r in table] == [
        "2d f0=4",
        "2.5d f0=4",
        "2d ablation default",
        "2d ablation no_residual",
        "2d slices=1",
        "2d slices=2",
        "2d train none",
        "2d train paper_sampling",
        "2d train paper_loss",
        "2d train none + infer tta",
        "2d given + infer none",
        "2d given + infer tta",
    ]
    assert all(0 <= float(r["mean_iou"]) <= 1 and float(r["bin_zero_oc_test_mean"]) > 0 for r in table)
    assert all(float(r["eval_seconds_per_mvoxel"]) > 0 for r in table)
    assert int(table[3]["parameters"]) < int(table[2]["parameters"])
    assert [r["train_slices"] for r in table[4:6]] == ["1", "2"]
    reused = [r for r in table if r["run"] in ("2d ablation default", "2d train none")]
    assert all(r["mean_iou"] == table[0]["mean_iou"] and r["config"] == table[0]["config"] for r in reused)
    assert len({r["config"] for r in table[6:9]}) == 3
    assert table[10]["mean_iou"] == table[0]["mean_iou"]
    markdown = experiment("table", "--results", str(tmp_path / "results.csv"))
    no_residual = next(line for line in markdown.splitlines() if line.startswith("| 2d ablation no_residual |"))
    expected = (float(table[3]["mean_iou"]) - float(table[2]["mean_iou"])) * 100
    assert float(no_residual.split("|")[8]) == round(expected, 1)
    experiment("plot", "--results", str(tmp_path / "results.csv"), "--output_dir", str(tmp_path / "figures"))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "fig5a_variants.png",
        "fig5b_ablation.png",
        "fig6_learning_curve.png",
    ]


def test_crop_scale_halves_each_variants_paper_crop_and_keeps_it_a_multiple_of_the_depth():
    spec = importlib.util.spec_from_file_location("experiments", ROOT / "scripts" / "experiments.py")
    experiments = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(experiments)
    assert experiments._crop_size("2d", 0.5, 3) == [80, 80]
    assert experiments._crop_size("2.5d", 0.5, 3) == [80, 80]
    assert experiments._crop_size("3d", 0.5, 3) == [16, 16, 16]
    assert experiments._crop_size("2d", 0.3, 4) == [48, 48]
    assert experiments._crop_size("3d", 0.1, 3) == [8, 8, 8]
