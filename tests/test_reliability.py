"""Faults and bad input: resume that cannot mix runs, a lock, a full disk, booleans that mean false, the cause printed last."""

import errno
import subprocess
import sys
import time
from collections import namedtuple

import pytest
import torch
from conftest import CONFIGS, ROOT, bundle_run, run_in_process

from bundle.errors import last_line
from bundle.inference import StreamedSegmentation
from bundle.inference import streamed as streamed_module
from bundle.networks import ModularUNet


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability_models")
    torch.manual_seed(2)
    torch.save(ModularUNet(f0=4, in_channels=5).state_dict(), folder / "model.pt")
    return folder / "model.pt"


def inference_args(dataset, output, model, *extra):
    return ["run", "inference", "--config_file", str(CONFIGS / "inference.json"), "--input_path", str(dataset / "phantom.raw"),
            "--output_dir", str(output), "--ckpt_path", str(model), "--network_def#f0", "4", "--roi_size", "[256,256]",
            "--progress", "False", *extra]


def failing(*args) -> list[str]:
    """A run that must fail, in this interpreter: what it printed, then the line the bundle's hook prints last."""
    result = run_in_process(args)
    assert result.returncode != 0
    return (result.stdout + result.stderr).strip().splitlines() + [last_line(result.error)]


def kill_after(args, progress, slabs: int) -> None:
    """Start `monai.bundle ARGS` and SIGKILL it once `slabs` slabs are marked done."""
    process = subprocess.Popen([sys.executable, "-m", "monai.bundle", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(progress.glob("slab_*"))) < slabs and process.poll() is None:
        time.sleep(0.002)
    process.kill()
    process.wait()
    assert list(progress.glob("slab_*")) and process.returncode != 0, "the run finished before it could be interrupted"


@pytest.mark.slow
def test_resume_refuses_another_model_precision_or_backend_naming_it_and_overwrite_starts_over(tiny_dataset, tmp_path, model):
    out, progress = tmp_path / "out", tmp_path / "out" / ".phantom.progress"
    settings = ("--slab", "1", "--precision", "fp32", "--backend", "torch")
    kill_after(inference_args(tiny_dataset, out, model, *settings), progress, 2)
    other = tmp_path / "other.pt"
    torch.manual_seed(3)
    torch.save(ModularUNet(f0=4, in_channels=5).state_dict(), other)
    lines = failing(*inference_args(tiny_dataset, out, other, *settings))
    assert lines[-1].startswith("error: ResumeMismatchError:") and "model_sha256: was" in lines[-1] and "--overwrite True" in lines[-1]
    lines = failing(*inference_args(tiny_dataset, out, model, "--slab", "1", "--precision", "bf16", "--backend", "torch"))
    assert "precision: was 'fp32', now 'bf16'" in lines[-1]
    lines = failing(*inference_args(tiny_dataset, out, model, "--slab", "1", "--precision", "fp32", "--backend", "openvino"))
    assert "backend: was 'torch', now 'openvino'" in lines[-1]
    lines = failing(*inference_args(tiny_dataset, out, model, *settings, "--tta", "True"))
    assert "tta: was False, now True" in lines[-1]
    lines = failing(*inference_args(tiny_dataset, out, model, "--slab", "2", "--precision", "fp32", "--backend", "torch"))
    assert "of 48 slabs done) made with other settings" in lines[-1] and "slab: was 1, now 2" in lines[-1]
    assert not (out / "phantom.seg.raw").exists()
    same_bytes_elsewhere = tmp_path / "copy" / "model.pt"
    same_bytes_elsewhere.parent.mkdir()
    same_bytes_elsewhere.write_bytes(model.read_bytes())
    resumed = bundle_run(*inference_args(tiny_dataset, out, same_bytes_elsewhere, *settings))
    assert "resuming phantom.raw:" in resumed.stdout + resumed.stderr
    bundle_run(*inference_args(tiny_dataset, out, other, *settings, "--overwrite", "True"))
    reference = tmp_path / "reference"
    bundle_run(*inference_args(tiny_dataset, reference, other, *settings))
    assert (out / "phantom.seg.raw").read_bytes() == (reference / "phantom.seg.raw").read_bytes() and not progress.exists()


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_holds_the_lock(tiny_dataset, tmp_path):
    first = StreamedSegmentation(tiny_dataset / "phantom.raw", tmp_path, slab=8)
    first.prepare()
    second = StreamedSegmentation(tiny_dataset / "phantom.raw", tmp_path, slab=8)
    with pytest.raises(RuntimeError, match="another inference run is writing phantom.raw into this folder"):
        second.prepare()
    first.progress.release()
    third = StreamedSegmentation(tiny_dataset / "phantom.raw", tmp_path, slab=8)
    third.prepare()
    third.progress.release()


def test_a_full_disk_is_refused_before_anything_is_written(tiny_dataset, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(streamed_module.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    stream = StreamedSegmentation(tiny_dataset / "phantom.raw", tmp_path / "out", slab=8, save_probabilities=True)
    with pytest.raises(OSError) as caught:
        stream.prepare()
    assert caught.value.errno == errno.ENOSPC
    message = str(caught.value)
    assert "writes 0.00 GiB (seg 1 B/voxel, prob 3 B/voxel, uncertainty 1 B/voxel) but only 0.00 GiB is free" in message
    assert "--save_probabilities False / --save_uncertainty False" in message and "Nothing was written" in message
    assert [p.name for p in (tmp_path / "out").iterdir()] == []
    assert stream.required_bytes() == 5 * 48 * 64 * 64


def test_booleans_in_every_config_accept_false_in_any_spelling(tiny_dataset, tmp_path, model):
    """Every boolean id of inference.json set to false/False/0 reaches its component as False."""
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(CONFIGS / "inference.json"))
    booleans = [k for k, v in config.items() if isinstance(v, bool)]
    assert {"fold_bn", "channels_last", "save_probabilities", "save_uncertainty", "tta", "progress", "overwrite"} <= set(booleans)
    for spelling in ("false", "False", "0"):
        parser = ConfigParser(config)
        parser.update({"input_path": str(tiny_dataset / "phantom.raw"), "output_dir": str(tmp_path), "ckpt_path": str(model),
                       "network_def#f0": 4, **{k: spelling for k in booleans}})
        network = parser.get_parsed_content("predictor").torch_network
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()), f"--fold_bn {spelling} still folded"
        wide = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1)
        assert wide.weight.is_contiguous(), f"--channels_last {spelling} still converted the network"
        stream = parser.get_parsed_content("stream")
        assert set(stream.outputs) == {"seg"} and stream.overwrite is False
        assert parser.get_parsed_content("inferer").inner.tta is False
        assert parser.get_parsed_content("handlers")[0].progress is False


@pytest.mark.parametrize("spelling", ["false", "False"])
def test_booleans_of_training_and_evaluation_accept_false(tiny_dataset, tmp_path, model, spelling):
    from monai.bundle import ConfigParser

    train = ConfigParser(ConfigParser.load_config_file(str(CONFIGS / "train.json")))
    train.update({"dataset_dir": str(tiny_dataset), "output_dir": str(tmp_path), "resume": spelling})
    resume = next(h for h in train.get_parsed_content("train#handlers") if type(h).__name__ == "ResumeFromCheckpoint")
    assert resume.enabled is False
    config = ConfigParser.load_config_files([str(CONFIGS / "inference.json"), str(CONFIGS / "evaluate.json")])
    booleans = [k for k, v in config.items() if isinstance(v, bool)]
    evaluate = ConfigParser(config)
    evaluate.update({"dataset_dir": str(tiny_dataset), "output_dir": str(tmp_path), "ckpt_path": str(model), "network_def#f0": 4,
                     **{k: spelling for k in booleans}})
    network = evaluate.get_parsed_content("network")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    assert evaluate.get_parsed_content("report").write_volumes is False
    assert evaluate.get_parsed_content("model_inferer").inner.tta is False


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_training_stopped_by_a_signal_resumes_at_the_next_epoch_with_lr_and_best_metric(tiny_dataset, tmp_path, signal_name):
    import signal

    args = ["run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(tiny_dataset), "--output_dir",
            str(tmp_path), "--max_epochs", "40", "--steps_per_epoch", "2", "--batch_size", "2", "--val_interval", "1",
            "--network_def#f0", "4", "--num_workers", "0", "--crop_size", "[32,32]", "--val_roi", "[256,256]"]
    checkpoint = tmp_path / "models" / "checkpoint.pt"
    # a shell delivers Ctrl-C to a process whose SIGINT is not ignored; the test worker's may be (inherited over exec)
    process = subprocess.Popen([sys.executable, "-m", "monai.bundle", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=False)["trainer"]["iteration"] >= 4:
            break
        time.sleep(0.05)
    process.send_signal(getattr(signal, signal_name))
    process.wait(timeout=120)
    assert process.returncode != 0, "training finished before it could be stopped"
    saved = torch.load(checkpoint, weights_only=False)
    epoch, best = saved["trainer"]["iteration"] // saved["trainer"]["epoch_length"], saved["best_model"]["_saved"][0][0]
    assert 2 <= epoch < 40 and sorted(p.name for p in (tmp_path / "models").iterdir()) == ["checkpoint.pt", "model.json", "model.pt"]
    result = bundle_run(*[a if a != "40" else str(epoch + 2) for a in args], "--resume", "True")
    log = result.stdout + result.stderr
    assert f"Epoch: {epoch + 1}/{epoch + 2}" in log and f"Epoch: {epoch}/" not in log
    final = torch.load(checkpoint, weights_only=False)
    assert final["trainer"]["iteration"] == (epoch + 2) * 2
    assert final["lr_scheduler"]["last_epoch"] == saved["lr_scheduler"]["last_epoch"] + 2
    assert final["best_model"]["_saved"][0][0] >= best


def test_the_last_line_names_the_error_raised_from_none_not_the_library_error_it_replaced():
    from bundle.errors import root_cause

    def locked():
        try:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        except BlockingIOError:
            raise RuntimeError("out: another inference run is writing scan.raw into this folder") from None

    try:
        try:
            locked()
        except RuntimeError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression") from err
    except RuntimeError as wrapped:
        assert str(root_cause(wrapped)) == "out: another inference run is writing scan.raw into this folder"
