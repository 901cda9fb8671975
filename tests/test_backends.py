"""Inference backends: OpenVINO and ONNX Runtime give the torch labels through `run inference`, auto picks the
fastest by a timing (cached), a missing or broken backend falls back to torch, int8 is calibrated and recorded."""

import json
import logging

import numpy as np
import pytest
import torch
from conftest import CONFIGS, ROOT, VARIANT_NETS, bundle_run, infer

from bundle import backends, runtime
from bundle.backends import select
from bundle.io import open_volume
from bundle.networks import ModularUNet

INSTALLED = [name for name in backends.EXPORTED if backends.missing_package(name) is None]


def outputs(folder):
    seg = open_volume(folder / "phantom.seg.raw").read()
    prob = open_volume(folder / "phantom.prob.raw").read().astype(int)
    return seg, prob, json.loads((folder / "phantom.provenance.json").read_text())


@pytest.mark.parametrize("variant", VARIANT_NETS)
def test_each_installed_backend_gives_the_torch_labels_through_run_inference(tiny_dataset, models, tmp_path, variant):
    assert INSTALLED, "neither OpenVINO nor ONNX Runtime is installed: the test extra installs both"
    common = ("--precision", "fp32", "--save_probabilities", "True", "--progress", "False")
    infer(tiny_dataset / "phantom.raw", tmp_path / "torch", models[variant], variant, "--backend", "torch", *common)
    seg, prob, _ = outputs(tmp_path / "torch")
    for name in INSTALLED:
        infer(tiny_dataset / "phantom.raw", tmp_path / name, models[variant], variant, "--backend", name, *common)
        other_seg, other_prob, provenance = outputs(tmp_path / name)
        assert provenance["backend"] == name and provenance["precision"] == "fp32"
        assert provenance["runtime"]["backend"]["name"] == name and provenance["runtime"]["backend"]["model_file"].endswith(".onnx")
        assert np.abs(prob - other_prob).max() <= 1, name
        assert (seg == other_seg).mean() >= 0.9999, name


def _tiny_runtime(precision="fp32"):
    return runtime.resolve_runtime("cpu", precision, threads=2, num_workers=0)


def test_auto_takes_the_fastest_timing_and_caches_it(tmp_path, monkeypatch):
    net = ModularUNet(f0=4).eval()
    calls = []

    def probe(name, forward, sample, precision):
        calls.append(name)
        assert tuple(sample.shape) == (1, 1, 32, 32) and isinstance(forward(sample), torch.Tensor)
        return {"torch": 0.5, "openvino": 0.2, "onnxruntime": 0.9}[name]

    monkeypatch.setattr(select, "_probe_seconds", probe)
    monkeypatch.setattr(select, "missing_package", lambda need: None)
    choice = backends.resolve_backend("auto", net, _tiny_runtime(), "a" * 64, 1, 2, (32, 32), cache=tmp_path)
    assert choice.name == "openvino" and sorted(calls) == ["onnxruntime", "openvino", "torch"]
    assert "openvino fp32 0.200 s" in choice.reason and choice.timings_s == {"torch": 0.5, "openvino": 0.2, "onnxruntime": 0.9}
    again = backends.resolve_backend("auto", net, _tiny_runtime(), "a" * 64, 1, 2, (32, 32), cache=tmp_path)
    assert again.name == "openvino" and len(calls) == 3 and "cached timing" in again.reason
    monkeypatch.setattr(select, "_probe_seconds", lambda name, *a: {"torch": 0.1, "openvino": 0.2, "onnxruntime": 0.9}[name])
    other_model = backends.resolve_backend("auto", net, _tiny_runtime(), "b" * 64, 1, 2, (32, 32), cache=tmp_path)
    assert other_model.name == "torch" and other_model.network is net and other_model.autocast_precision == "fp32"


def test_a_missing_package_or_a_broken_graph_falls_back_to_torch_with_one_warning(tmp_path, monkeypatch, caplog):
    net = ModularUNet(f0=4).eval()
    monkeypatch.setattr(select, "missing_package", lambda need: "openvino" if need == "openvino" else None)
    with caplog.at_level(logging.WARNING, logger="bundle.backends.select"):
        choice = backends.resolve_backend("openvino", net, _tiny_runtime(), "c" * 64, 1, 2, (32, 32), cache=tmp_path)
    assert choice.name == "torch" and "pip install openvino" in choice.reason
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [f"backend openvino -> torch (fp32): {choice.reason}"]
    monkeypatch.setattr(select, "missing_package", lambda need: None)

    def broken(name, *args, **kwargs):
        if name != "torch":
            raise RuntimeError("Cannot compile the graph")
        return args[0]

    monkeypatch.setattr(select, "build_forward", broken)
    choice = backends.resolve_backend("auto", net, _tiny_runtime(), "c" * 64, 1, 2, (32, 32), cache=tmp_path)
    assert choice.name == "torch" and "openvino failed to build (RuntimeError: Cannot compile the graph)" in choice.reason


def test_int8_asks_for_openvino_and_training_refuses_it(tmp_path):
    with pytest.raises(ValueError, match="int8 runs on the openvino backend"):
        backends.resolve_backend("onnxruntime", ModularUNet(f0=4).eval(), _tiny_runtime("int8"), "d" * 64, 1, 2, (32, 32), cache=tmp_path)
    with pytest.raises(ValueError, match="int8 is for inference"):
        runtime.resolve_precision("int8", "cpu", training=True)
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.resolve_backend("tensorrt", ModularUNet(f0=4).eval(), _tiny_runtime(), "d" * 64, 1, 2, (32, 32), cache=tmp_path)


@pytest.mark.skipif(backends.missing_package("int8") or backends.missing_package("openvino"), reason="needs nncf and openvino")
def test_int8_run_inference_with_the_shipped_model_is_calibrated_recorded_and_close_to_fp32(tiny_dataset, tmp_path, export_cache):
    args = ["run", "inference", "--config_file", str(CONFIGS / "inference.json"), "--input_path", str(tiny_dataset / "phantom.raw"),
            "--progress", "False", "--roi_size", "[256,256]"]
    bundle_run(*args, "--output_dir", str(tmp_path / "fp32"), "--backend", "torch", "--precision", "fp32")
    bundle_run(*args, "--output_dir", str(tmp_path / "int8"), "--precision", "int8")
    provenance = json.loads((tmp_path / "int8" / "phantom.provenance.json").read_text())
    assert provenance["backend"] == "openvino" and provenance["precision"] == "int8"
    model_file = provenance["runtime"]["backend"]["model_file"]
    calibration = json.loads(open(model_file[: -len(".xml")] + ".calibration.json").read())
    assert calibration["calibration_volume"] == str((tiny_dataset / "phantom.raw").resolve()) and len(calibration["samples"]) == 10
    fp32 = open_volume(tmp_path / "fp32" / "phantom.seg.raw").read()
    int8 = open_volume(tmp_path / "int8" / "phantom.seg.raw").read()
    assert (fp32 == int8).mean() > 0.99


def test_monai_onnx_export_command_writes_a_graph_with_dynamic_batch_and_plane(tmp_path):
    onnx = pytest.importorskip("onnx")
    target = tmp_path / "model.onnx"
    bundle_run("onnx_export", "network_def", "--filepath", str(target), "--ckpt_file", str(ROOT / "models" / "model.pt"),
               "--config_file", str(CONFIGS / "inference.json"), "--input_shape", "[1,5,64,64]", "--use_trace", "True",
               "--converter_kwargs", "{'dynamic_axes': {'image': {0: 'batch', 2: 'y', 3: 'x'}}, 'input_names': ['image'], 'dynamo': False}")
    dims = onnx.load(str(target)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 5, "y", "x"]


def test_an_unwritable_cache_still_runs_torch_with_a_warning(tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="bundle.backends.select"):
        choice = backends.resolve_backend("auto", ModularUNet(f0=4).eval(), _tiny_runtime(), "e" * 64, 1, 2, (32, 32), cache=blocked / "cache")
    assert choice.name == "torch" and choice.network is not None
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "cannot keep the backend timings" in messages and "failed to build" in choice.reason
