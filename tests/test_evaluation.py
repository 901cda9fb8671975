import json
import re

import numpy as np
import pytest
import torch
from conftest import CONFIGS, VARIANT_ARGS, bundle_run, config_list

from bundle.io import open_volume
from bundle.metrics import confusion_matrix, iou_per_class
from bundle.variants import variant_config_names


@pytest.mark.parametrize("variant", ["2d", "2.5d", "3d"])
def test_evaluate_writes_the_full_report(tiny_dataset, models, tmp_path, variant):
    configs = ["inference.json", "evaluate.json", *variant_config_names(variant)]
    bundle_run("run", "evaluate", "--config_file", config_list(*configs), "--dataset_dir", str(tiny_dataset), "--output_dir", str(tmp_path),
               "--ckpt_path", str(models[variant]), "--network_def#f0", "4", *VARIANT_ARGS[variant])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"iou", "mean_iou", "report", "confusion", "baselines"}
    assert set(metrics["baselines"]) == {"zero_oc", "bin_zero_oc_train", "bin_zero_oc_test"}
    assert set(metrics["confusion"]) == {"counts", "by_all", "by_row", "by_col"}
    for name in ("iou.csv", "report.csv", "confusion_by_row.csv", "overlay.png", "confusion.png", "class_histograms.png"):
        assert (tmp_path / name).stat().st_size > 0
    prediction = open_volume(tmp_path / "phantom.test.prediction.raw").read()
    errors = open_volume(tmp_path / "phantom.test.error_volume.raw").read()
    label = open_volume(tiny_dataset / "phantom.ground_truth.raw").read(39, 46)
    assert prediction.shape == label.shape == (7, 64, 64)
    np.testing.assert_array_equal(errors, (prediction != label).astype(np.uint8))
    confusion = confusion_matrix(prediction, label, 3)
    assert metrics["confusion"]["counts"] == confusion.tolist()
    assert metrics["mean_iou"] == pytest.approx(np.nanmean(iou_per_class(confusion)))


def test_a_prediction_file_is_scored_without_a_model(tiny_dataset, tmp_path):
    label = open_volume(tiny_dataset / "phantom.ground_truth.raw")
    test = label.read(39, 46)
    prediction = test.copy()
    prediction[:, :8] = 0
    from bundle.io import write_volume

    write_volume(tmp_path / "other_tool.raw", prediction)
    bundle_run("run", "evaluate", "--config_file", config_list("inference.json", "evaluate.json"), "--dataset_dir", str(tiny_dataset),
               "--output_dir", str(tmp_path / "out"), "--prediction_path", str(tmp_path / "other_tool.raw"), "--write_volumes", "false")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["confusion"]["counts"] == confusion_matrix(prediction, test, 3).tolist()
    assert metrics["source"].endswith("other_tool.raw")
    assert not (tmp_path / "out" / "phantom.test.prediction.raw").exists()


def test_evaluate_is_an_overlay_sharing_inference_network_and_preprocessing():
    evaluate = json.loads((CONFIGS / "evaluate.json").read_text())
    assert not {"network_def", "predictor", "preprocessing", "slab_inferer", "imports", "dataloader"} & set(evaluate)
    definitions = [json.loads((CONFIGS / name).read_text())["network_def"] for name in ("train.json", "inference.json")]
    assert definitions[0] == definitions[1]


def test_ckpt_export_gives_the_same_labels(models, tmp_path):
    bundle_run("ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file", str(models["2.5d"]),
               "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
               "--network_def#f0", "4")
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    from bundle.networks import ModularUNet

    eager = ModularUNet(f0=4, in_channels=5)
    eager.load_state_dict(torch.load(models["2.5d"], weights_only=True))
    eager.eval()
    x = torch.rand(2, 5, 96, 128)
    with torch.inference_mode():
        assert torch.equal(exported(x).argmax(1), eager(x).argmax(1))


@pytest.mark.parametrize("workflow_type", ["train", "inference"])
def test_monai_bundle_load_returns_the_shipped_weights_from_any_directory(tmp_path, monkeypatch, workflow_type):
    from conftest import ROOT
    from monai.bundle import load

    monkeypatch.chdir(tmp_path)
    network = load(name=ROOT.name, bundle_dir=str(ROOT.parent), workflow_type=workflow_type, device="cpu")
    shipped = torch.load(ROOT / "models" / "model.pt", map_location="cpu", weights_only=True)
    state = network.state_dict()
    assert set(state) == set(shipped)
    assert all(torch.equal(state[k], shipped[k]) for k in shipped)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, limit", [("inference.json", 13), ("evaluate.json", 5), ("train.json", 25)])
def test_configs_are_data_with_few_expressions(name, limit):
    """A config reads like a form: values and component names; `$` only where MONAI needs an expression."""
    text = (CONFIGS / name).read_text()
    expressions = re.findall(r'"\$[^"]*"', text)
    assert len(expressions) <= limit, f"{name} has {len(expressions)} $ expressions: {expressions}"
