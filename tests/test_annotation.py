"""The annotation loop: ranking slices by uncertainty, export to TIFF, import of corrected slices, crops on annotated planes."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import ROOT, bundle_run, config_list, infer, run_script

from bundle.annotation import even_planes, import_slices, pick_slices, read_plane, slice_scores
from bundle.data import RandomCropDataset
from bundle.data.description import DatasetError
from bundle.io import open_volume, write_volume


def _volume(tmp_path, name, array):
    return open_volume(write_volume(tmp_path / f"{name}.raw", array.astype(np.uint8)))


def test_planes_are_ranked_by_uncertainty_pores_weighted_and_spread_out(tmp_path):
    u = np.full((20, 30, 40), 10, np.uint8)
    u[5] = 200
    u[6] = 190
    u[:, 12, :] = 150
    u[14, :, 3:8] = 120
    seg = np.zeros_like(u)
    seg[14, :, 3:8] = 2
    uncertainty, segmentation = _volume(tmp_path, "u", u), _volume(tmp_path, "seg", seg)
    picks = pick_slices(slice_scores(uncertainty, segmentation, rare_weight=5.0), n=3, spacing=4, border=0)
    assert [(p["axis"], p["index"]) for p in picks] == [("z", 5), ("y", 12), ("z", 14)]
    unweighted = pick_slices(slice_scores(uncertainty, segmentation, rare_weight=1.0), n=3, spacing=4, border=0)
    assert ("z", 14) not in [(p["axis"], p["index"]) for p in unweighted], "the pore weight must change the ranking"
    assert [(p["axis"], p["index"]) for p in pick_slices(slice_scores(uncertainty, segmentation), n=2, spacing=1, border=0)] == [("z", 5), ("z", 6)]
    assert [(p["axis"], p["index"]) for p in pick_slices(slice_scores(uncertainty, segmentation), n=2, spacing=4, border=6)] == [("z", 6), ("y", 12)]
    ranged = slice_scores(uncertainty, segmentation, z_range=(10, 20))
    assert np.isnan(ranged["z"][:10]).all() and ranged["z"][14] > ranged["z"][15]
    assert pick_slices(slice_scores(uncertainty, segmentation), n=1, exclude={"z": [5]}, border=0)[0]["index"] != 5
    np.testing.assert_array_equal(read_plane(uncertainty, "y", 12), u[:, 12, :])
    np.testing.assert_array_equal(read_plane(uncertainty, "x", 4), u[:, :, 4])


def test_even_planes_fill_the_widest_gaps_and_skip_annotated_ones():
    assert even_planes((0, 40), 3) == [{"axis": "z", "index": 20}, {"axis": "z", "index": 0}, {"axis": "z", "index": 39}]
    assert even_planes((0, 40), 2, {"z": [0, 39]}) == [{"axis": "z", "index": 19}, {"axis": "z", "index": 29}]
    assert even_planes((0, 3), 5, {"z": [1]}) == [{"axis": "z", "index": 0}, {"axis": "z", "index": 2}]


@pytest.fixture
def annotated_dataset(tiny_dataset, models, tmp_path):
    """suggest -> export -> labels corrected (the truth stands in for the scientist) -> import, into a copy of the dataset."""
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    infer(data / "phantom.raw", tmp_path / "out", models["2d"], "2d", "--backend", "torch", "--progress", "False")
    suggestions = tmp_path / "suggestions.json"
    printed = run_script("annotate.py", "suggest", "--input_path", str(data / "phantom.raw"), "--prediction_dir", str(tmp_path / "out"),
                         "--n", "3", "--z_range", "[0,32]", "--output", str(suggestions), cli=True)
    assert json.loads(suggestions.read_text()) == [{"axis": "z", "index": z} for z in (20, 8, 31)] and printed.startswith("1. z-plane 20")
    printed = run_script("annotate.py", "suggest", "--input_path", str(data / "phantom.raw"), "--prediction_dir", str(tmp_path / "out"),
                         "--n", "3", "--strategy", "uncertainty", "--z_range", "[0,32]", "--output", str(suggestions))
    picks = json.loads(suggestions.read_text())
    assert len(picks) == 3 and printed.startswith("1. ") and all(p["axis"] != "z" or p["index"] < 32 for p in picks)
    picks = [p for p in picks if p["axis"] != "y"][:2] + [{"axis": "y", "index": 30, "score": 0.0}]
    suggestions.write_text(json.dumps(picks))
    run_script("annotate.py", "export", "--input_path", str(data / "phantom.raw"), "--prediction_dir", str(tmp_path / "out"),
               "--export_dir", str(tmp_path / "edit"), "--suggestions", str(suggestions))
    truth = open_volume(data / "phantom.ground_truth.raw")
    for p in picks:
        name = tmp_path / "edit" / f"phantom.{p['axis']}{p['index']:05d}"
        assert tifffile.imread(f"{name}.image.tif").shape == tifffile.imread(f"{name}.labels.tif").shape
        tifffile.imwrite(f"{name}.labels.tif", read_plane(truth, p["axis"], p["index"]))
    assert "napari" in (tmp_path / "edit" / "HOW_TO_CORRECT.txt").read_text()
    before = json.loads((data / "dataset.json").read_text())["volumes"][0]
    run_script("annotate.py", "import", "--export_dir", str(tmp_path / "edit"), "--dataset_dir", str(data))
    return data, picks, before


def test_the_round_trip_writes_a_sparse_volume_and_a_dataset_entry_without_touching_earlier_ones(annotated_dataset):
    data, picks, before = annotated_dataset
    volumes = json.loads((data / "dataset.json").read_text())["volumes"]
    assert volumes[0] == before and len(volumes) == 2
    entry = volumes[1]
    assert entry["label"] == "phantom.annotations.raw" and entry["image"] == "phantom.raw"
    held_out = [before["splits"]["val"], before["splits"]["test"]]
    assert entry["splits"]["train"][0][0] == 0 and not any(a < h1 and h0 < b for a, b in entry["splits"]["train"] for h0, h1 in held_out)
    assert entry["annotated_planes"]["y"] == [30]
    sparse, truth = open_volume(data / "phantom.annotations.raw").read(), open_volume(data / "phantom.ground_truth.raw").read()
    mask = np.zeros(sparse.shape, bool)
    for p in picks:
        mask[{"z": (p["index"],), "y": (slice(None), p["index"]), "x": (slice(None), slice(None), p["index"])}[p["axis"]]] = True
    np.testing.assert_array_equal(sparse[mask], truth[mask])
    assert (sparse[~mask] == 255).all()


def test_crops_of_a_sparse_volume_lie_on_its_annotated_planes_and_training_runs_on_them(annotated_dataset, tmp_path, caplog):
    data, picks, _ = annotated_dataset
    document = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({"volumes": document["volumes"][1:]}))
    crops = RandomCropDataset(data, (16, 16), z_context=2, num_samples=60)
    crops.set_random_state(0)
    planes = set()
    for i in range(60):
        box, plane, *start = crops.randomize()
        planes.add(plane)
        item = crops[i]
        assert (item["label"] != 255).all(), "a crop off the annotated planes"
    assert planes == {p["axis"] for p in picks}
    with caplog.at_level("WARNING"):
        if any(p["axis"] == "z" for p in picks):
            deep = RandomCropDataset(data, (40, 40), num_samples=4)
            assert {axis for _, axis, _ in deep.plane_picks} == {"z"}
        else:
            with pytest.raises(DatasetError, match="no annotated plane of the 'train' ranges can hold a crop of"):
                RandomCropDataset(data, (40, 40), num_samples=4).plan()
    assert "y=30" in caplog.text and "give no crop" in caplog.text and "at least 40 slices deep" in caplog.text
    (data / "dataset.json").write_text(json.dumps(document))
    bundle_run("run", "training", "--config_file", config_list("train.json"), "--dataset_dir", str(data),
               "--output_dir", str(tmp_path / "run"), "--max_epochs", "1", "--steps_per_epoch", "2", "--batch_size", "2",
               "--val_interval", "1", "--network_def#f0", "4", "--num_workers", "0", "--crop_size", "[16,16]", "--val_roi", "[256,256]",
               "--precision", "fp32")
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


def test_import_refuses_wrong_sizes_classes_and_held_out_planes_and_keeps_earlier_annotations(annotated_dataset, tmp_path):
    data, picks, _ = annotated_dataset
    before = (data / "phantom.annotations.raw").read_bytes()
    manifest = json.loads((tmp_path / "edit" / "slices.json").read_text())
    labels = tmp_path / "edit" / manifest["slices"][0]["labels"]
    good = tifffile.imread(labels)
    tifffile.imwrite(labels, good[:-1])
    with pytest.raises(DatasetError, match=f"{labels.name}: labels of shape"):
        import_slices(tmp_path / "edit", data)
    tifffile.imwrite(labels, np.full_like(good, 7))
    with pytest.raises(DatasetError, match=rf"{labels.name}: label values \[7\] are not classes 0..2 or 255"):
        import_slices(tmp_path / "edit", data)
    tifffile.imwrite(labels, good)
    test_z = json.loads((data / "dataset.json").read_text())["volumes"][0]["splits"]["test"][0]
    tifffile.imwrite(tmp_path / "edit" / "held_out.labels.tif", np.zeros(open_volume(data / "phantom.raw").shape[1:], np.uint8))
    manifest["slices"].append({"axis": "z", "index": test_z, "labels": "held_out.labels.tif"})
    (tmp_path / "edit" / "slices.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=f"z-plane {test_z} lies in a validation or test range"):
        import_slices(tmp_path / "edit", data)
    assert (data / "phantom.annotations.raw").read_bytes() == before
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "annotate.py"), "suggest", "--input_path", str(data / "phantom.raw"),
                             "--prediction_dir", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert result.returncode != 0 and "nowhere/phantom.uncertainty.raw: not found" in result.stderr.strip().splitlines()[-1]
