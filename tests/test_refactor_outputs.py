"""The library and config refactors (Ignite/MONAI parts, evaluate as an overlay, one pre-processing chain) keep every
workflow's outputs: `tests/data/pre_refactor_outputs.npz` holds what the code before them wrote for this phantom and
model (torch fp32, the 2D network: the default then), the labels, the uint8 probabilities and the evaluate workflow's
confusion matrix."""

import json
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, bundle_run, config_list

from bundle.io import open_volume
from bundle.networks import ModularUNet
from bundle.phantom import make_phantom


def test_inference_and_evaluate_outputs_equal_the_pre_refactor_ones(tmp_path):
    make_phantom(tmp_path / "data", (48, 64, 64), seed=3)
    torch.manual_seed(1)
    net = ModularUNet(f0=4, in_channels=1)
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 1, 16, 16))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    common = ["--ckpt_path", str(tmp_path / "model.pt"), "--network_def#f0", "4", "--roi_size", "[256,256]", "--precision", "fp32"]
    bundle_run("run", "inference", "--config_file", config_list("inference.json", "variants/2d.json"), "--input_path", str(tmp_path / "data" / "phantom.raw"),
               "--output_dir", str(tmp_path / "inf"), "--backend", "torch", "--save_probabilities", "True", "--progress", "False", *common)
    bundle_run("run", "evaluate", "--config_file", config_list("inference.json", "evaluate.json", "variants/2d.json"), "--dataset_dir", str(tmp_path / "data"),
               "--output_dir", str(tmp_path / "ev"), "--write_volumes", "False", *common)
    before = np.load(ROOT / "tests" / "data" / "pre_refactor_outputs.npz")
    seg = open_volume(tmp_path / "inf" / "phantom.seg.raw").read()
    prob = open_volume(tmp_path / "inf" / "phantom.prob.raw").read().astype(int)
    confusion = np.array(json.loads((tmp_path / "ev" / "metrics.json").read_text())["confusion"]["counts"])
    assert (seg == before["seg"]).mean() >= 0.9999
    assert np.abs(prob - before["prob"].astype(int)).max() <= 1
    assert np.abs(confusion - before["confusion"]).sum() <= 0.0001 * before["confusion"].sum()


def test_a_tiny_training_run_equals_the_pre_refactor_one(tmp_path):
    """Same validation IoUs and weights (per-tensor sums) as the code before the scheduler, metric and handler changes."""
    make_phantom(tmp_path / "data", (48, 64, 64), seed=3)
    result = bundle_run("run", "training", "--config_file", config_list("train.json", "variants/2d.json"), "--dataset_dir", str(tmp_path / "data"),
                        "--output_dir", str(tmp_path / "run"), "--max_epochs", "3", "--steps_per_epoch", "2", "--batch_size", "2",
                        "--val_interval", "1", "--network_def#f0", "4", "--num_workers", "0", "--crop_size", "[32,32]",
                        "--val_roi", "[256,256]", "--precision", "fp32")
    before = json.loads((ROOT / "tests" / "data" / "pre_refactor_training.json").read_text())
    ious = [float(v) for v in re.findall(r"val_mean_iou: ([0-9.]+)", result.stdout + result.stderr)]
    np.testing.assert_allclose(ious, before["val_mean_iou"], atol=0.005)
    state = torch.load(tmp_path / "run" / "models" / "model.pt", weights_only=True)
    sums = {k: float(v.double().sum()) for k, v in state.items() if v.is_floating_point()}
    assert sums.keys() == before["parameter_sums"].keys()
    for name, value in before["parameter_sums"].items():
        assert sums[name] == pytest.approx(value, rel=1e-3, abs=1e-4), name
