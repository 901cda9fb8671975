"""Beamline formats read through `open_volume`: HDF5 written by h5py (Blosc-compressed with hdf5plugin), Zarr arrays
written by zarr, OME-Zarr written by the ome-zarr package; bad inputs named; `run inference` on an HDF5 dataset."""

import gc
import json
import re

import numpy as np
import pytest
import torch
from conftest import CONFIGS, VARIANT_ARGS, bundle_run, config_list, infer

from bundle.io import VolumeError, open_volume

h5py = pytest.importorskip("h5py")
hdf5plugin = pytest.importorskip("hdf5plugin")
zarr = pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def grey():
    return np.random.default_rng(0).integers(0, 255, (20, 40, 48), dtype=np.uint8)


def test_hdf5_compressed_exchange_data_is_the_default_and_other_datasets_are_named(tmp_path, grey):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("exchange/data", data=grey, chunks=(4, 40, 48), **hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE))
        f.create_dataset("entry/data/data", data=grey.astype(np.float32) / 255, chunks=(2, 20, 24), **hdf5plugin.Zstd())
        f.create_dataset("entry/flat", data=grey[0])
    volume = open_volume(path)
    assert volume.key == "/exchange/data" and volume.shape == grey.shape and volume.dtype == np.uint8
    np.testing.assert_array_equal(volume.read(3, 9, slice(5, 30), slice(0, 17)), grey[3:9, 5:30, :17])
    floats = open_volume(f"{path}::/entry/data/data")
    np.testing.assert_allclose(floats.read(10, 20), grey[10:20].astype(np.float32) / 255)
    with pytest.raises(VolumeError, match="entry/flat has shape \\(40, 48\\); a \\(z, y, x\\) volume has 3 axes"):
        open_volume(f"{path}::/entry/flat")
    with pytest.raises(VolumeError, match="no dataset /entry/missing; its 3D datasets: /entry/data/data, /exchange/data"):
        open_volume(f"{path}::entry/missing")


def test_hdf5_without_exchange_data_must_name_one_of_several_volumes(tmp_path, grey):
    path = tmp_path / "two.nxs"
    with h5py.File(path, "w") as f:
        f["a"] = grey
        f["b"] = grey[None]
    assert open_volume(path).key == "/a"
    with h5py.File(path, "a") as f:
        f["c"] = grey
    with pytest.raises(VolumeError, match=r"two.nxs: holds several 3D datasets \(/a, /c\); name one as .*two.nxs::/path/to/data"):
        open_volume(path)
    with pytest.raises(VolumeError, match="HDF5 file not found"):
        open_volume(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["image"] = grey[0]
    with pytest.raises(VolumeError, match="flat.h5: holds no 3D dataset"):
        open_volume(tmp_path / "flat.h5")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(VolumeError, match="broken.h5: not a readable HDF5 file"):
        open_volume(tmp_path / "broken.h5")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_zarr_arrays_of_both_formats(tmp_path, grey, zarr_format):
    path = tmp_path / f"scan_v{zarr_format}.zarr"
    array = zarr.create_array(str(path), shape=grey.shape, chunks=(5, 40, 48), dtype=grey.dtype, zarr_format=zarr_format)
    array[:] = grey
    volume = open_volume(path)
    assert volume.shape == grey.shape and volume.chunks == (5, 40, 48)
    np.testing.assert_array_equal(volume.read(4, 13, slice(1, 39), slice(2, 47)), grey[4:13, 1:39, 2:47])


def test_ome_zarr_written_by_ome_zarr_is_read_at_full_resolution_with_its_voxel_size(tmp_path, grey):
    writer = pytest.importorskip("ome_zarr.writer")
    from ome_zarr.io import parse_url

    path = tmp_path / "image.ome.zarr"
    root = zarr.group(store=parse_url(str(path), mode="w").store)
    writer.write_image(grey[None], root, axes="czyx", storage_options={"chunks": (1, 4, 40, 48)})
    ome = dict(root.attrs)
    multiscales = (ome.get("ome") or ome)["multiscales"]
    multiscales[0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [1.0, 2.0, 0.5, 0.5]
    root.attrs.update(ome)
    volume = open_volume(path)
    assert volume.shape == grey.shape and volume.axes == "czyx" and volume.meta["voxel_size"] == [2.0, 0.5, 0.5]
    np.testing.assert_array_equal(volume.read(2, 7), grey[2:7])


def test_zarr_group_without_multiscales_and_extra_channels_are_refused(tmp_path, grey):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    group.create_array("raw", shape=grey.shape, dtype=grey.dtype)
    with pytest.raises(VolumeError, match="without OME-Zarr multiscales; name an array as .*plain.zarr::NAME \\(raw\\)"):
        open_volume(tmp_path / "plain.zarr")
    assert open_volume(f"{tmp_path / 'plain.zarr'}::raw").shape == grey.shape
    zarr.create_array(str(tmp_path / "four.zarr"), shape=(2,) + grey.shape, dtype=grey.dtype)
    with pytest.raises(VolumeError, match="a \\(z, y, x\\) volume needs z, y and x axes"):
        open_volume(tmp_path / "four.zarr")


def test_unknown_compressors_and_chunks_too_large_to_decompress_are_named_with_the_file(tmp_path, grey, monkeypatch):
    import bundle.io.base as volumes_module

    with h5py.File(tmp_path / "mystery.h5", "w") as f:
        dataset = f.create_dataset("exchange/data", shape=grey.shape, dtype=grey.dtype, chunks=(4, 40, 48), compression=32099,
                                   allow_unknown_filter=True)
        for z0 in range(0, grey.shape[0], 4):
            dataset.id.write_direct_chunk((z0, 0, 0), grey[z0 : z0 + 4].tobytes())
    volume = open_volume(tmp_path / "mystery.h5")
    with pytest.raises(VolumeError, match="mystery.h5: cannot read /exchange/data z 0-4 .*needs its filter"):
        volume.read(0, 4)
    zarr.create_array(str(tmp_path / "mystery.zarr"), data=grey, chunks=(5, 40, 48))
    metadata = json.loads((tmp_path / "mystery.zarr" / "zarr.json").read_text())
    metadata["codecs"].append({"name": "mystery_codec"})
    (tmp_path / "mystery.zarr" / "zarr.json").write_text(json.dumps(metadata))
    with pytest.raises(VolumeError, match="mystery.zarr: not a readable Zarr store .*mystery_codec"):
        open_volume(tmp_path / "mystery.zarr").read(0, 5)
    zarr.create_array(str(tmp_path / "one_chunk.zarr"), shape=(8, 1024, 1024), dtype=np.uint8, chunks=(8, 1024, 1024))
    assert open_volume(tmp_path / "one_chunk.zarr").shape == (8, 1024, 1024)
    monkeypatch.setattr(volumes_module, "usable_memory_bytes", lambda: 8 * 2**20)
    with pytest.raises(VolumeError, match=r"one_chunk.zarr: chunks \(8, 1024, 1024\) .* decompress 0.01 GiB, more than half of the 0.01 GiB"):
        open_volume(tmp_path / "one_chunk.zarr")


def test_usable_memory_is_capped_by_the_cgroup_limit(tmp_path):
    from bundle.io.base import usable_memory_bytes

    physical = usable_memory_bytes(tmp_path)
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert usable_memory_bytes(tmp_path) == min(physical, 2**30)
    (tmp_path / "memory.max").write_text("max\n")
    assert usable_memory_bytes(tmp_path) == physical


def test_run_inference_on_an_hdf5_dataset_gives_the_labels_of_the_raw_file(tiny_dataset, models, tmp_path):
    grey = open_volume(tiny_dataset / "phantom.raw").read()
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.create_dataset("entry/data/data", data=grey, chunks=(4,) + grey.shape[1:], **hdf5plugin.Blosc(cname="lz4"))
        f["entry/dark"] = grey[:3]
    common = ("--backend", "torch", "--precision", "fp32", "--progress", "False")
    infer(tiny_dataset / "phantom.raw", tmp_path / "raw", models["2d"], "2d", *common)
    infer(f"{tmp_path / 'scan.h5'}::/entry/data/data", tmp_path / "h5", models["2d"], "2d", *common)
    assert (tmp_path / "h5" / "scan.seg.raw").read_bytes() == (tmp_path / "raw" / "phantom.seg.raw").read_bytes()


@pytest.fixture(scope="module")
def formats_dataset(tiny_dataset, tmp_path_factory):
    """The tiny phantom's dataset.json with the image as a Blosc-LZ4 HDF5 dataset and the labels as a Zarr array."""
    folder = tmp_path_factory.mktemp("formats_dataset")
    grey, labels = open_volume(tiny_dataset / "phantom.raw").read(), open_volume(tiny_dataset / "phantom.ground_truth.raw").read()
    with h5py.File(folder / "scan.h5", "w") as f:
        f.create_dataset("entry/data/data", data=grey, chunks=(4,) + grey.shape[1:], **hdf5plugin.Blosc(cname="lz4"))
    zarr.create_array(str(folder / "labels.zarr"), data=labels, chunks=(8,) + labels.shape[1:])
    described = json.loads((tiny_dataset / "dataset.json").read_text())["volumes"][0]
    volume = {"image": "scan.h5::/entry/data/data", "label": "labels.zarr", "splits": described["splits"]}
    (folder / "dataset.json").write_text(json.dumps({"volumes": [volume]}))
    return folder


def test_a_dataset_of_an_hdf5_image_and_zarr_labels_evaluates_like_the_raw_one(tiny_dataset, formats_dataset, models, tmp_path):
    scores = {}
    for name, folder in (("raw", tiny_dataset), ("formats", formats_dataset)):
        bundle_run("run", "evaluate", "--config_file", config_list("inference.json", "evaluate.json"), "--dataset_dir", str(folder),
                   "--output_dir", str(tmp_path / f"eval_{name}"), "--ckpt_path", str(models["2.5d"]), "--network_def#f0", "4",
                   "--write_volumes", "False", *VARIANT_ARGS["2.5d"])
        scores[name] = json.loads((tmp_path / f"eval_{name}" / "metrics.json").read_text())["confusion"]["counts"]
    assert scores["formats"] == scores["raw"]


def test_training_on_an_hdf5_image_and_zarr_labels_equals_training_on_the_raw_files(tiny_dataset, formats_dataset, tmp_path):
    """Same crops, same steps: the weights after a short fp32 run are identical, and so are the validation IoUs."""
    weights, logs = {}, {}
    for name, folder in (("raw", tiny_dataset), ("formats", formats_dataset)):
        result = bundle_run("run", "training", "--config_file", config_list("train.json"), "--dataset_dir", str(folder),
                            "--output_dir", str(tmp_path / name), "--max_epochs", "2", "--steps_per_epoch", "2", "--batch_size", "2",
                            "--val_interval", "1", "--network_def#f0", "4", "--num_workers", "0", "--crop_size", "[32,32]",
                            "--val_roi", "[256,256]", "--precision", "fp32")
        logs[name] = re.findall(r"val_mean_iou: ([0-9.]+)", result.stdout + result.stderr)
        weights[name] = torch.load(tmp_path / name / "models" / "model.pt", weights_only=True)
    assert len(logs["raw"]) >= 2 and logs["formats"] == logs["raw"]
    assert all(torch.equal(weights["formats"][k], v) for k, v in weights["raw"].items())


def test_chunks_of_the_full_depth_are_reported_with_a_hint(tmp_path, caplog):
    deep = np.zeros((70, 8, 8), np.uint16)
    with h5py.File(tmp_path / "deep.h5", "w") as f:
        f.create_dataset("exchange/data", data=deep, chunks=(70, 8, 8))
    zarr.create_array(str(tmp_path / "deep.zarr"), data=deep, chunks=(70, 4, 4))
    with caplog.at_level("WARNING", logger="bundle.io.base"):
        open_volume(tmp_path / "deep.h5")
        open_volume(tmp_path / "deep.zarr")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("span the full depth" in m for m in messages)
    assert "h5repack -l /exchange/data:CHUNK=8x8x8" in messages[0]


def test_run_inference_writes_ome_zarr_that_ome_zarr_opens_with_its_labels_and_an_hdf5_file(tiny_dataset, models, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    common = ("--backend", "torch", "--precision", "fp32", "--progress", "False", "--save_probabilities", "True")
    infer(tiny_dataset / "phantom.raw", tmp_path / "raw", models["2d"], "2d", *common)
    seg = open_volume(tmp_path / "raw" / "phantom.seg.raw").read()
    prob = open_volume(tmp_path / "raw" / "phantom.prob.raw").read().reshape(3, *seg.shape)
    uncertainty = open_volume(tmp_path / "raw" / "phantom.uncertainty.raw").read()
    infer(tiny_dataset / "phantom.raw", tmp_path / "zarr", models["2d"], "2d", *common, "--output_ext", ".zarr")
    store = tmp_path / "zarr" / "phantom.zarr"
    assert sorted(p.name for p in (tmp_path / "zarr").iterdir()) == ["phantom.provenance.json", "phantom.zarr"]
    nodes = list(Reader(parse_url(str(store)))())
    image = next(n for n in nodes if n.load(Multiscales) and not n.load(Label))
    labels = next(n for n in nodes if n.load(Label))
    np.testing.assert_array_equal(np.asarray(image.data[0]), uncertainty)
    np.testing.assert_array_equal(np.asarray(labels.data[0]), seg)
    np.testing.assert_array_equal(np.asarray(labels.data[1]), seg[::2, ::2, ::2])
    group = zarr.open_group(str(store), mode="r")
    np.testing.assert_array_equal(np.asarray(group["probabilities"]["0"]), prob)
    assert group["labels"]["segmentation"].attrs["ome"]["image-label"]["properties"][2] == {"label-value": 2, "class": "porosity"}
    infer(tiny_dataset / "phantom.raw", tmp_path / "h5", models["2d"], "2d", *common, "--output_ext", ".h5")
    with h5py.File(tmp_path / "h5" / "phantom.h5", "r") as f:
        np.testing.assert_array_equal(f["segmentation"][:], seg)
        np.testing.assert_array_equal(f["probabilities"][:], prob)
        assert list(f["segmentation"].attrs["class_names"]) == ["matrix", "fibre", "porosity"]


def test_a_run_stopped_while_writing_the_store_converts_again_without_segmenting_and_gives_the_same_bytes(
    tiny_dataset, models, tmp_path, monkeypatch
):
    from monai.bundle import run

    import bundle.io.chunked_writer as chunked_writer

    common = ("--backend", "torch", "--precision", "fp32", "--progress", "False", "--output_ext", ".zarr")
    infer(tiny_dataset / "phantom.raw", tmp_path / "whole", models["2.5d"], "2.5d", *common)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped while writing the store")

    monkeypatch.setattr(chunked_writer, "_downsample", stopped)
    with pytest.raises(KeyboardInterrupt):
        run("inference", config_file=str(CONFIGS / "inference.json"), input_path=str(tiny_dataset / "phantom.raw"),
            output_dir=str(tmp_path / "stopped"), ckpt_path=str(models["2.5d"]), roi_size=[256, 256], **{"network_def#f0": 4},
            backend="torch", precision="fp32", progress=False, output_ext=".zarr")
    monkeypatch.undo()
    gc.collect()
    assert not (tmp_path / "stopped" / "phantom.zarr").exists(), sorted(p.name for p in (tmp_path / "stopped").rglob("*"))
    result = infer(tiny_dataset / "phantom.raw", tmp_path / "stopped", models["2.5d"], "2.5d", *common)
    assert "resuming phantom.raw: 1 of 1 slabs done, 0 to go" in result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["phantom.provenance.json", "phantom.zarr"]
    files = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*") if p.is_file() and "zarr" in p.parts[-1] + str(p))
    for name in files:
        if name.suffix != ".json" or name.name == "zarr.json":
            assert (tmp_path / "stopped" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
