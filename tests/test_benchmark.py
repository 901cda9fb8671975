import json

import numpy as np
import pytest
import torch
from conftest import run_script

from bundle.io import open_volume
from bundle.networks import ModularUNet


def benchmark(*args, cli=False):
    stdout = run_script("benchmark.py", *args, timeout=600, cli=cli)
    lines = stdout.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


@pytest.mark.slow
def test_big_volume_repeats_the_source_and_inference_reports_the_childs_own_peak_rss(tiny_dataset, tmp_path):
    big = tmp_path / "big" / "volume.raw"
    made = benchmark(
        "big-volume", "--source", str(tiny_dataset / "phantom.raw"), "--output", str(big), "--repeats", "3", cli=True
    )
    assert made["shape_zyx"] == [144, 64, 64]
    source, volume = open_volume(tiny_dataset / "phantom.raw").read(), open_volume(big)
    assert volume.dtype == np.float32 and big.stat().st_size == 144 * 64 * 64 * 4
    np.testing.assert_array_equal(volume.read(96, 144), source.astype(np.float32))
    torch.manual_seed(0)
    torch.save(ModularUNet(f0=4).state_dict(), tmp_path / "model.pt")
    measured = benchmark(
        "inference",
        "--input_path",
        str(big),
        "--ckpt_path",
        str(tmp_path / "model.pt"),
        "--work_dir",
        str(tmp_path / "work"),
        "--network_def#f0",
        "4",
        "--roi_size",
        "[256,256]",
    )
    assert measured["voxels"] == 144 * 64 * 64 and measured["dtype"] == "float32"
    assert 100 < measured["peak_rss_mib"] < 4096
    assert open_volume(tmp_path / "work" / "out" / "volume.seg.raw").shape == (144, 64, 64)


@pytest.mark.slow
def test_suite_writes_every_measurement_of_the_performance_page(tmp_path):
    from bundle.variants import VARIANT_NETWORK

    torch.manual_seed(0)
    torch.save(ModularUNet(**VARIANT_NETWORK["2.5d"]).state_dict(), tmp_path / "model_25d.pt")
    output = tmp_path / "benchmark.json"
    benchmark(
        "suite",
        "--output",
        str(output),
        "--compare_shape",
        "[16,64,64]",
        "--inference_shape",
        "[40,64,64]",
        "--repeats",
        "1",
        "--train_epochs",
        "1",
        "--steps",
        "3",
        "--train_batch",
        "2",
        "--models",
        json.dumps({"2.5d": str(tmp_path / "model_25d.pt")}),
        "--matmul_size",
        "256",
        "--backend",
        "torch",
    )
    result = json.loads(output.read_text())
    assert not list(tmp_path.glob(".*.partial"))
    assert result["matmul_gflops"]["bfloat16"] > 0 and result["matmul_gflops"]["float32"] > 0
    assert (
        5e5 < result["flops_per_voxel"]["2d"] < 6e5
        and result["flops_per_voxel"]["3d"] > result["flops_per_voxel"]["2d"]
    )
    machine = result["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and isinstance(machine["cpu_native_bf16"], bool)
    assert [(r["variant"], r["precision_requested"]) for r in result["inference"]] == [
        ("2d", "auto"), ("2d", "fp32"), ("2.5d", "auto"), ("2.5d", "fp32")
    ]
    assert {r["precision"] for r in result["inference"] if r["precision_requested"] == "fp32"} == {"fp32"}
    assert all(
        r["voxels"] == 40 * 64 * 64 and r["peak_rss_mib"] > 100 and 0 < r["fraction_of_bf16_limit"]
        for r in result["inference"]
    )
    assert result["compare_2d"]["voxels"] == 16 * 64 * 64 and result["compare_2d"]["speedup_vs_monai"] > 0
    default = "bf16" if machine["cpu_native_bf16"] else "fp32"
    assert [(r["variant"], r["precision"]) for r in result["train_workflow"]] == [("2d", default), ("2d", "fp32")]
    assert all(r["steps_timed"] == 2 and r["seconds_per_step"] > 0 and r["peak_rss_mib"] > 100 for r in result["train_workflow"])


@pytest.mark.slow
def test_formats_reads_and_segments_the_same_volume_from_raw_hdf5_and_zarr_and_ome_zarr_opens_the_result(tmp_path):
    result = benchmark("formats", "--plane", "64", "--source_depth", "16", "--compare_depth", "24", "--big_gib", "0.0002",
                       "--chunks", "[8,32,32]", "--work_dir", str(tmp_path), "--output", str(tmp_path / "formats.json"))
    assert [row["format"] for row in result["compare"]] == ["raw", "hdf5", "zarr"]
    assert all(row["labels_equal_raw_input"] and row["read_mib_per_s"] > 0 and row["shape_zyx"] == [24, 64, 64] for row in result["compare"])
    assert [row["format"] for row in result["big"]] == ["hdf5", "zarr"]
    for row in result["big"]:
        assert row["shape_zyx"] == [52, 64, 64] and row["labels_shape"] == row["image_shape"] == [52, 64, 64]
        assert 100 < row["peak_rss_mib"] < 4096
    assert json.loads((tmp_path / "formats.json").read_text()) == result


@pytest.mark.parametrize("model", ["model_2d.pt", "model.pt"])
def test_edges_scores_each_scheme_with_the_shipped_2d_and_2_5d_weights(tmp_path, model):
    """A 2D and a 2.5D checkpoint (each test slice with its four neighbours, mirrored past the end of this phantom,
    whose test slices run to its last one): every scheme scored, the shipped weights segmenting the phantom."""
    from conftest import ROOT

    from bundle.phantom import make_phantom

    make_phantom(tmp_path / "data", (32, 96, 96), seed=3)
    benchmark("edges", "--dataset_dir", str(tmp_path / "data"), "--ckpt_path", str(ROOT / "models" / model), "--output", str(tmp_path / "edges.json"))
    result = json.loads((tmp_path / "edges.json").read_text())
    rows = {row["scheme"]: row for row in result["rows"]}
    assert set(rows) == {"stop", "replicate", "reflect", "zeros", "blended_sliding_window_512_zeros"}
    assert rows["stop"]["iou_matrix"] > 90 and rows["stop"]["iou_fibre"] > 80, rows["stop"]
