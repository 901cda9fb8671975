"""Per-volume grey normalisation: the same scan stored as 8-bit or as float, on another scale, segments alike."""

import json
import shutil

import numpy as np
import pytest
from conftest import bundle_run, config_list

from bundle.data import WindowedVolume, volume_window
from bundle.io import open_volume
from bundle.io.sidecar import RawInfo, format_sidecar, sidecar_path

TRAIN = ["--max_epochs", "2", "--steps_per_epoch", "3", "--batch_size", "4", "--val_interval", "1", "--network_def#f0", "4",
         "--num_workers", "0", "--crop_size", "[32,32]", "--val_roi", "[256,256]"]


def _rescaled_copy(source, target, gain=3.7, offset=-20.0):
    """The dataset with its scan stored as float32 `offset + gain x grey` (exact: uint8 values times a float)."""
    shutil.copytree(source, target)
    image = open_volume(source / "phantom.raw").read().astype(np.float32) * np.float32(gain) + np.float32(offset)
    (target / "phantom.raw").write_bytes(image.astype("<f4").tobytes())
    sidecar_path(target / "phantom.raw").write_text(format_sidecar(RawInfo(image.shape, np.dtype("<f4"))))
    return target


def test_volume_window_follows_an_affine_change_of_grey_scale(tiny_dataset, tmp_path):
    copy = _rescaled_copy(tiny_dataset, tmp_path / "float")
    low, high = volume_window(open_volume(tiny_dataset / "phantom.raw"), [0.5, 99.5])
    flow, fhigh = volume_window(open_volume(copy / "phantom.raw"), [0.5, 99.5])
    assert low < high and np.allclose([flow, fhigh], [3.7 * low - 20, 3.7 * high - 20], rtol=1e-6)
    a = WindowedVolume(open_volume(tiny_dataset / "phantom.raw"), [low, high]).read(3, 5)
    b = WindowedVolume(open_volume(copy / "phantom.raw"), [flow, fhigh]).read(3, 5)
    assert a.dtype == np.float32 and np.allclose(a, b, atol=1e-5) and -0.5 < a.min() < 0.2 and 0.8 < a.max() < 1.5
    with pytest.raises(ValueError, match="grey_percentiles must be"):
        volume_window(open_volume(tiny_dataset / "phantom.raw"), [99, 1])


def test_a_model_trained_with_percentiles_segments_a_rescaled_float_scan_like_the_8_bit_one(tiny_dataset, tmp_path):
    bundle_run("run", "training", "--config_file", config_list("train.json", "augment/percentiles.json"), "--dataset_dir", str(tiny_dataset),
               "--output_dir", str(tmp_path / "train"), *TRAIN)
    model = tmp_path / "train" / "models" / "model.pt"
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["grey_percentiles"] == [0.5, 99.5] and sidecar["grey_window"] == [0.0, 1.0]
    copy = _rescaled_copy(tiny_dataset, tmp_path / "float")
    segmentations, metrics, windows = [], [], []
    for data in (tiny_dataset, copy):
        out = tmp_path / f"out_{data.name}"
        common = ["--ckpt_path", str(model), "--network_def#f0", "4", "--output_dir", str(out)]
        bundle_run("run", "inference", "--config_file", config_list("inference.json"), "--input_path", str(data / "phantom.raw"),
                   "--backend", "torch", "--progress", "False", *common)
        segmentations.append(open_volume(out / "phantom.seg.raw").read())
        provenance = json.loads((out / "phantom.provenance.json").read_text())
        assert provenance["grey_percentiles"] == [0.5, 99.5]
        windows.append(provenance["grey_window"])
        bundle_run("run", "evaluate", "--config_file", config_list("inference.json", "evaluate.json"), "--dataset_dir", str(data),
                   "--write_volumes", "False", *common[:-2], "--output_dir", str(out / "eval"))
        metrics.append(json.loads((out / "eval" / "metrics.json").read_text()))
    assert (segmentations[0] == segmentations[1]).mean() > 0.999
    assert abs(metrics[0]["mean_iou"] - metrics[1]["mean_iou"]) < 0.005
    assert np.allclose(windows[1], [3.7 * v - 20 for v in windows[0]], rtol=1e-6)
