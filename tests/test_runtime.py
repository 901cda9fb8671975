"""The one resolver of device precision, threads and loader workers (bundle.runtime)."""

import json
import logging

import pytest
import torch
from conftest import bundle_run

from bundle import runtime


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(runtime, "_WARNED", set())


def cpu(monkeypatch, bf16: bool, fp16: bool = False):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: bf16)
    monkeypatch.setattr(runtime, "cpu_has_native_fp16", lambda: fp16)


def gpu(monkeypatch, major: int):
    monkeypatch.setattr(runtime, "cuda_capability", lambda device: (major, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"test GPU sm_{major}0")


@pytest.mark.parametrize(("bf16", "expected"), [(False, "fp32"), (True, "bf16")])
def test_auto_on_a_cpu_is_bf16_only_where_onednn_has_it_natively(monkeypatch, bf16, expected):
    cpu(monkeypatch, bf16)
    assert runtime.resolve_precision("auto", "cpu") == expected
    assert runtime.resolve_precision("AUTO", "cpu", training=True) == expected


@pytest.mark.parametrize(("major", "expected"), [(6, "fp32"), (7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_on_a_gpu_follows_its_compute_capability(monkeypatch, major, expected):
    gpu(monkeypatch, major)
    assert runtime.resolve_precision("auto", "cuda:0", training=True) == expected


def test_fp16_training_on_a_gpu_gets_the_gradient_scaler_and_bf16_does_not(monkeypatch):
    gpu(monkeypatch, 7)
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 8)
    assert runtime.resolve_runtime("cuda:0", "auto", training=True).grad_scaler is True
    gpu(monkeypatch, 8)
    assert runtime.resolve_runtime("cuda:0", "auto", training=True).grad_scaler is False


def test_other_devices_run_fp32(monkeypatch):
    assert runtime.resolve_precision("auto", "mps") == "fp32"
    assert runtime.resolve_precision("auto", "meta") == "fp32"


def test_forcing_bf16_without_native_support_runs_with_one_warning(monkeypatch, caplog):
    cpu(monkeypatch, bf16=False)
    with caplog.at_level(logging.WARNING, logger="bundle.runtime"):
        assert runtime.resolve_precision("bf16", "cpu") == "bf16"
        assert runtime.resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no native bf16" in warnings[0].getMessage() and "auto (here: fp32)" in warnings[0].getMessage()
    caplog.clear()
    gpu(monkeypatch, 7)
    with caplog.at_level(logging.WARNING, logger="bundle.runtime"):
        runtime.resolve_precision("bf16", "cuda:0")
    assert "compute capability 7.0" in caplog.text


def test_forcing_a_native_or_full_precision_does_not_warn(monkeypatch, caplog):
    cpu(monkeypatch, bf16=True)
    with caplog.at_level(logging.WARNING, logger="bundle.runtime"):
        assert runtime.resolve_precision("bf16", "cpu") == "bf16"
        assert runtime.resolve_precision("fp32", "cpu") == "fp32"
    assert not caplog.records


def test_unknown_precisions_are_refused_by_name():
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp16, fp32, int8, got 'int4'"):
        runtime.resolve_precision("int4", "cpu")
    with pytest.raises(ValueError, match="resolved precision"):
        runtime.autocast_dtype("auto")


def test_usable_cpus_follow_affinity_and_the_cgroup_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert runtime.usable_cpus(tmp_path) == 16
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime.usable_cpus(tmp_path) == 16
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert runtime.usable_cpus(tmp_path) == 3
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert runtime.usable_cpus(v1) == 1


@pytest.mark.parametrize(("cpus", "workers", "threads"), [(1, 0, 1), (2, 0, 2), (4, 1, 3), (16, 4, 12), (64, 4, 60)])
def test_threads_and_workers_share_the_usable_cpus(monkeypatch, cpus, workers, threads):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "usable_cpus", lambda: cpus)
    try:
        resolved = runtime.resolve_runtime("cpu", "fp32")
        assert (resolved.num_workers, resolved.threads) == (workers, threads)
        explicit = runtime.resolve_runtime("cpu", "fp32", threads="1", num_workers=2)
        assert (explicit.num_workers, explicit.threads) == (2, 1)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_workers must be a whole number or 'auto', got 'many'"):
        runtime.resolve_runtime("cpu", "fp32", num_workers="many")


def test_a_real_inference_run_logs_and_records_what_this_machine_supports(tiny_dataset, tmp_path):
    from bundle.networks import ModularUNet

    torch.manual_seed(0)
    torch.save(ModularUNet(f0=4, in_channels=5).state_dict(), tmp_path / "model.pt")
    result = bundle_run(
        "run", "inference", "--config_file", "configs/inference.json", "--input_path", str(tiny_dataset / "phantom.raw"),
        "--output_dir", str(tmp_path / "out"), "--ckpt_path", str(tmp_path / "model.pt"), "--network_def#f0", "4",
        "--roi_size", "[256,256]", "--progress", "False",
    )
    expected = "bf16" if runtime.cpu_has_native_bf16() else "fp32"
    assert f"precision auto -> {expected}" in result.stdout + result.stderr
    record = json.loads((tmp_path / "out" / "phantom.provenance.json").read_text())
    assert record["precision"] == expected and record["runtime"]["precision"] == expected
    assert record["runtime"]["cpu_capability"] == runtime.cpu_capability()
    assert record["runtime"]["cpu_native_bf16"] == runtime.cpu_has_native_bf16()
