"""Every reader through every workflow: the tiny phantom written by each format's own library, then `run inference`,
`run evaluate` (image and `--prediction_path`) and `run training` from a dataset.json naming that format, each run
in-process and compared with the raw run (TIFF inference with DataLoader workers in a process of its own: forking
workers from a test worker that has loaded OpenVINO or ONNX Runtime once killed it by SIGSEGV); plus the readers'
fitness for MONAI's DataLoader (set_rnd, pickle, deepcopy)."""

import copy
import json
import pickle

import numpy as np
import pytest
from conftest import TINY_NETWORK, bundle_run, config_list, run_workflow

from bundle.io import open_volume, write_volume
from bundle.launcher import command_line

h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")
nibabel = pytest.importorskip("nibabel")

FORMATS = ("raw", "tiff", "tiff_folder", "nifti", "hdf5", "zarr", "ome_zarr")


def write_format(array: np.ndarray, folder, stem: str, kind: str) -> str:
    """`array` (z, y, x) written by the format's own library; the name open_volume takes for it."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "raw":
        write_volume(folder / f"{stem}.raw", array)
        return f"{stem}.raw"
    if kind == "tiff":
        tifffile.imwrite(folder / f"{stem}.tif", array, photometric="minisblack")
        return f"{stem}.tif"
    if kind == "tiff_folder":
        (folder / stem).mkdir()
        for z, plane in enumerate(array):
            tifffile.imwrite(folder / stem / f"slice_{z}.tiff", plane)
        return stem
    if kind == "nifti":
        nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), np.eye(4)), str(folder / f"{stem}.nii.gz"))
        return f"{stem}.nii.gz"
    if kind == "hdf5":
        with h5py.File(folder / f"{stem}.h5", "w") as f:
            f.create_dataset("exchange/data", data=array, chunks=(4,) + array.shape[1:])
        return f"{stem}.h5"
    if kind == "zarr":
        zarr.create_array(str(folder / f"{stem}.zarr"), data=array, chunks=(4,) + array.shape[1:])
        return f"{stem}.zarr"
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    write_image(array, zarr.open_group(parse_url(str(folder / f"{stem}.ome.zarr"), mode="w").store), axes="zyx")
    return f"{stem}.ome.zarr"


@pytest.fixture(scope="module")
def raw_results(tiny_dataset, models, tmp_path_factory):
    """The raw run's labels and confusion matrix, and the tiny phantom's arrays."""
    out = tmp_path_factory.mktemp("raw_run")
    run_workflow("inference", ["inference.json"], input_path=tiny_dataset / "phantom.raw", output_dir=out / "infer", ckpt_path=models["2.5d"])
    run_workflow("evaluate", ["inference.json", "evaluate.json"], dataset_dir=tiny_dataset, output_dir=out / "eval", ckpt_path=models["2.5d"])
    return {
        "image": open_volume(tiny_dataset / "phantom.raw").read(),
        "label": open_volume(tiny_dataset / "phantom.ground_truth.raw").read(),
        "seg": open_volume(out / "infer" / "phantom.seg.raw").read(),
        "confusion": json.loads((out / "eval" / "metrics.json").read_text())["confusion"]["counts"],
        "test_prediction": open_volume(out / "eval" / "phantom.test.prediction.raw").read(),
    }


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_through_inference_evaluation_and_training(kind, tiny_dataset, models, raw_results, tmp_path):
    data = tmp_path / "data"
    image = write_format(raw_results["image"], data, "scan", kind)
    label = write_format(raw_results["label"], data, "scan_labels", kind)
    description = json.loads((tiny_dataset / "dataset.json").read_text())
    description["volumes"][0].update(image=image, label=label)
    (data / "dataset.json").write_text(json.dumps(description))

    run_workflow("inference", ["inference.json"], input_path=data / image, output_dir=tmp_path / "infer", ckpt_path=models["2.5d"], num_workers=0)
    np.testing.assert_array_equal(open_volume(tmp_path / "infer" / "scan.seg.raw").read(), raw_results["seg"], err_msg=kind)
    if kind.startswith("tiff"):
        overrides = {**TINY_NETWORK, "input_path": str(data / image), "output_dir": str(tmp_path / "workers"), "ckpt_path": str(models["2.5d"]),
                     "num_workers": 2}
        bundle_run("run", "inference", "--config_file", config_list("inference.json"), *command_line(overrides))
        np.testing.assert_array_equal(open_volume(tmp_path / "workers" / "scan.seg.raw").read(), raw_results["seg"], err_msg=f"{kind}, 2 workers")

    run_workflow("evaluate", ["inference.json", "evaluate.json"], dataset_dir=data, output_dir=tmp_path / "eval", ckpt_path=models["2.5d"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["confusion"]["counts"] == raw_results["confusion"]

    prediction = write_format(raw_results["test_prediction"], tmp_path / "other_tool", "prediction", kind)
    run_workflow("evaluate", ["inference.json", "evaluate.json"], dataset_dir=data, output_dir=tmp_path / "scored",
                 prediction_path=tmp_path / "other_tool" / prediction, write_volumes=False)
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["confusion"]["counts"] == raw_results["confusion"]

    run_workflow("training", ["train.json"], dataset_dir=data, output_dir=tmp_path / "train", max_epochs=1, steps_per_epoch=1,
                 batch_size=2, val_interval=1, crop_size=[32, 32], val_roi=[256, 256], num_workers=0)
    assert (tmp_path / "train" / "models" / "model.pt").is_file()


@pytest.mark.parametrize("kind", FORMATS)
def test_readers_survive_set_rnd_pickle_and_deepcopy_after_a_read(kind, tmp_path):
    from monai.data.utils import set_rnd

    array = np.random.default_rng(0).integers(0, 255, (6, 16, 24), dtype=np.uint8)
    volume = open_volume(tmp_path / write_format(array, tmp_path, "grey", kind))
    np.testing.assert_array_equal(volume.read(1, 3), array[1:3])
    set_rnd(volume, 0)
    for twin in (pickle.loads(pickle.dumps(volume)), copy.deepcopy(volume)):
        np.testing.assert_array_equal(twin.read(2, 6, slice(3, 9)), array[2:6, 3:9])


def test_a_tiff_rewritten_in_place_is_read_again_not_from_the_open_handle(tmp_path):
    first = np.zeros((8, 8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "scan.tif", first)
    np.testing.assert_array_equal(open_volume(tmp_path / "scan.tif").read(), first)
    tifffile.imwrite(tmp_path / "scan.tif", first + 7)
    np.testing.assert_array_equal(open_volume(tmp_path / "scan.tif").read(), first + 7)
