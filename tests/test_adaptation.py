"""Label-free adaptation: batch-norm statistics re-estimated on the scan, through the inference workflow."""

import json

import numpy as np
import pytest
import torch
from conftest import run_workflow

from bundle.adaptation import adapt_batch_norm, pseudo_labels
from bundle.io import open_volume
from bundle.networks import ModularUNet


def test_batch_norm_statistics_become_those_of_the_scan_and_nothing_else_trains():
    torch.manual_seed(0)
    net = ModularUNet(f0=4)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    first.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (2, 1, 32, 32)).astype(np.float32) for _ in range(3)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    adapt_batch_norm(net, batches)
    features = torch.cat(seen)
    torch.testing.assert_close(first.running_mean, features.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert first.momentum == 0.5 and not net.training and not any(m.training for m in net.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in weights.items())


def test_inference_with_adapt_bn_records_it_and_changes_the_labels_on_an_exported_backend_too(tiny_dataset, models, tmp_path):
    """The exported model of the adapted network is its own, not the plain model's cached export."""
    for adapt in ("none", "bn"):
        run_workflow("inference", ["inference.json"], input_path=tiny_dataset / "phantom.raw", output_dir=tmp_path / adapt,
                     ckpt_path=models["2.5d"], adapt=adapt, backend="openvino")
    assert json.loads((tmp_path / "bn" / "phantom.provenance.json").read_text())["adapt"] == "bn"
    plain, adapted = (open_volume(tmp_path / a / "phantom.seg.raw").read() for a in ("none", "bn"))
    assert (plain != adapted).mean() > 0.01


def test_pseudo_labels_keep_confident_voxels_and_leave_the_rest_out_of_the_loss():
    probabilities = np.array([[[0.95, 0.5, 0.1]], [[0.03, 0.45, 0.05]], [[0.02, 0.05, 0.85]]], np.float32)
    assert pseudo_labels(probabilities, 0.8).tolist() == [[0, 255, 2]]
    assert pseudo_labels((probabilities * 255).round().astype(np.uint8), 0.9).tolist() == [[0, 255, 255]]
    assert pseudo_labels(probabilities, 0.5).tolist() == [[0, 0, 2]]
    with pytest.raises(ValueError, match="threshold 90"):
        pseudo_labels(probabilities, 90)
