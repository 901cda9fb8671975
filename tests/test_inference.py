import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import CONFIGS, ROOT, VARIANT_NETS, config_list, infer

from bundle.data.grey import normalise_grey
from bundle.io import open_volume
from bundle.networks import ModularUNet
from bundle.phantom import make_phantom


@pytest.mark.parametrize("variant", VARIANT_NETS)
def test_inference_run_writes_every_output(tiny_dataset, models, tmp_path, variant):
    infer(tiny_dataset / "phantom.raw", tmp_path, models[variant], variant, "--slab", "8", "--save_probabilities", "True")
    seg = open_volume(tmp_path / "phantom.seg.raw")
    assert seg.shape == (48, 64, 64) and seg.dtype == np.uint8 and seg.read().max() <= 2
    prob = open_volume(tmp_path / "phantom.prob.raw").read().reshape(3, 48, 64, 64).astype(int)
    assert np.all(np.abs(prob.sum(0) - 255) <= 2)
    np.testing.assert_array_equal(prob.argmax(0)[prob.max(0) > 130], seg.read()[prob.max(0) > 130])
    assert open_volume(tmp_path / "phantom.uncertainty.raw").shape == (48, 64, 64)
    provenance = json.loads((tmp_path / "phantom.provenance.json").read_text())
    assert provenance["variant"] == variant and provenance["versions"]["torch"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_default_outputs_cost_two_bytes_per_voxel(tiny_dataset, models, tmp_path):
    infer(tiny_dataset / "phantom.raw", tmp_path, models["2d"], "2d")
    written = {p.name: p.stat().st_size for p in tmp_path.iterdir() if p.name.endswith(".raw")}
    assert written == {"phantom.seg.raw": 48 * 64 * 64, "phantom.uncertainty.raw": 48 * 64 * 64}


def test_streamed_output_equals_one_pass_of_the_network_over_each_plane(tiny_dataset, models, tmp_path):
    """Tiles, slabs and margins change nothing: the file equals the plain network on each whole plane."""
    infer(tiny_dataset / "phantom.raw", tmp_path, models["2d"], "2d", "--slab", "5", "--save_probabilities", "True", "--prob_dtype", "float32",
          "--save_uncertainty", "false", "--precision", "fp32", "--roi_size", "[144,160]", "--roi", "[[3,11],[0,64],[0,64]]")
    net = ModularUNet(f0=4)
    net.load_state_dict(torch.load(models["2d"], weights_only=True))
    net.eval()
    volume = torch.from_numpy(normalise_grey(open_volume(tiny_dataset / "phantom.raw").read(3, 11), [0, 255]))[:, None]
    with torch.inference_mode():
        logits = net(volume)
    expected = torch.softmax(logits, dim=1).permute(1, 0, 2, 3).numpy()
    prob = open_volume(tmp_path / "phantom.prob.raw").read().reshape(expected.shape)
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    assert (open_volume(tmp_path / "phantom.seg.raw").read() == expected.argmax(0)).mean() >= 0.9999
    assert not (tmp_path / "phantom.uncertainty.raw").exists()


def test_roi_and_nifti_output(tiny_dataset, models, tmp_path):
    infer(tiny_dataset / "phantom.raw", tmp_path, models["2d"], "2d", "--roi", "[[10,20],[0,32],[16,64]]", "--output_ext", ".nii.gz")
    seg = open_volume(tmp_path / "phantom.seg.nii.gz")
    assert seg.shape == (10, 32, 48)
    assert not (tmp_path / "phantom.seg.raw").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_identical_files(tmp_path, models):
    make_phantom(tmp_path / "data", (64, 128, 128), seed=5)
    reference = tmp_path / "reference"
    infer(tmp_path / "data" / "phantom.raw", reference, models["2.5d"], "2.5d", "--slab", "1", "--roi_size", "[256,256]")
    interrupted = tmp_path / "interrupted"
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(CONFIGS / "inference.json"),
               "--input_path", str(tmp_path / "data" / "phantom.raw"), "--output_dir", str(interrupted), "--ckpt_path", str(models["2.5d"]),
               "--network_def#f0", "4", "--slab", "1", "--roi_size", "[256,256]"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "2"})
    markers = interrupted / ".phantom.progress"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(markers.glob("slab_*"))) < 3 and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(markers.glob("slab_*")))
    assert 0 < done < 64 and not (interrupted / "phantom.seg.raw").exists()
    result = infer(tmp_path / "data" / "phantom.raw", interrupted, models["2.5d"], "2.5d", "--slab", "1", "--roi_size", "[256,256]")
    assert f"resuming phantom.raw: {done} of 64 slabs done, {64 - done} to go" in result.stdout + result.stderr
    assert "Epoch[1] Complete" in result.stdout + result.stderr
    record = json.loads((interrupted / "phantom.provenance.json").read_text())
    assert record["slabs_computed_last_session"] == 64 - done
    for name in ("seg", "uncertainty"):
        assert (interrupted / f"phantom.{name}.raw").read_bytes() == (reference / f"phantom.{name}.raw").read_bytes()


@pytest.mark.slow
def test_two_process_inference_equals_single_process(tiny_dataset, models, tmp_path):
    single = tmp_path / "single"
    infer(tiny_dataset / "phantom.raw", single, models["2.5d"], "2.5d", "--slab", "4", env={"OMP_NUM_THREADS": "1"})
    configs = config_list("inference.json", "multi_gpu_inference.json")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519", "-m", "monai.bundle", "run", "inference",
               "--config_file", configs, "--input_path", str(tiny_dataset / "phantom.raw"), "--output_dir", str(tmp_path / "multi"),
               "--ckpt_path", str(models["2.5d"]), "--network_def#f0", "4", "--roi_size", "[256,256]", "--slab", "4", "--progress", "false"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("seg", "uncertainty"):
        assert (tmp_path / "multi" / f"phantom.{name}.raw").read_bytes() == (single / f"phantom.{name}.raw").read_bytes()


def test_config_workflow_infer_properties_with_no_scan_on_disk(tmp_path, monkeypatch):
    """A client checks the shipped inference workflow before any scan exists: nothing is read, exported, timed or written."""
    from monai.bundle import ConfigWorkflow

    monkeypatch.setenv("XCT_CACHE_DIR", str(tmp_path / "cache"))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"), meta_file=str(CONFIGS / "metadata.json"), workflow_type="infer",
        input_path=str(tmp_path / "no_such_scan.raw"), output_dir=str(tmp_path / "never"),
    )
    workflow.initialize()
    assert not workflow.check_properties()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_app_injects_its_data_list_and_a_list_of_two_is_refused(tiny_dataset, models, tmp_path):
    from monai.bundle import ConfigWorkflow

    from bundle.inference import single_image

    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"), workflow_type="infer", data=[{"image": str(tiny_dataset / "phantom.raw")}],
        output_dir=str(tmp_path / "app"), ckpt_path=str(models["2.5d"]), backend="torch", progress=False,
        **{"network_def#f0": 4, "roi_size": [256, 256]},
    )
    workflow.initialize()
    workflow.run()
    assert open_volume(tmp_path / "app" / "phantom.seg.raw").shape == (48, 64, 64)
    with pytest.raises(ValueError, match="a list of one"):
        single_image([{"image": "a.raw"}, {"image": "b.raw"}])


def test_the_configs_postprocessing_gives_probabilities_labels_and_normalised_entropy():
    """The `postprocessing` id other MONAI apps run after the `inferer`: what the streamed writer writes."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    chain = parser.get_parsed_content("postprocessing")
    logits = torch.tensor([[[[9.0, 0.0]]], [[[0.0, 0.0]]], [[[0.0, 0.0]]]])
    result = chain({"pred": logits})
    np.testing.assert_allclose(torch.as_tensor(result["pred"]).sum(0), 1.0, rtol=1e-6)
    assert torch.as_tensor(result["label"]).tolist() == [[[0, 0]]]
    uncertainty = torch.as_tensor(result["uncertainty"])[0, 0]
    assert uncertainty[1] == pytest.approx(1.0) and 0 < uncertainty[0] < 0.01
