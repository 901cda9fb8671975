import csv
import subprocess
import sys

from conftest import ROOT

TINY = '{"crop_size": [32, 32], "val_roi": [32, 32], "roi_size": [32, 32], "batch_size": 2, "steps_per_epoch": 2, "val_interval": 1, "num_workers": 0}'


def experiment(*args):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "experiments.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


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
    table = rows(tmp_path / "results.csv")
    assert [r["run"] for r in table] == ["2d f0=4", "2.5d f0=4", "2d ablation default", "2d ablation no_residual", "2d slices=1", "2d slices=2"]
    assert all(0 <= float(r["mean_iou"]) <= 1 and float(r["bin_zero_oc_test_mean"]) > 0 for r in table)
    assert int(table[3]["parameters"]) < int(table[2]["parameters"])
    assert [r["train_slices"] for r in table[4:]] == ["1", "2"]
    experiment("plot", "--results", str(tmp_path / "results.csv"), "--output_dir", str(tmp_path / "figures"))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["fig5a_variants.png", "fig5b_ablation.png", "fig6_learning_curve.png"]
