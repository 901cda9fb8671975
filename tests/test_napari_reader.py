"""The napari reader, headless through napari's ViewerModel and the plugin's installed npe2 manifest.

napari runs in a process of its own (as it does for a user): its threads and handlers stay out of the
test worker, which goes on to start other processes."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from conftest import infer

napari = pytest.importorskip("napari")


def _layers_napari_opens(scan: str, outputs: list[str]) -> dict[str, dict]:
    """What a headless viewer shows for the scan and the outputs, opened with this plugin: per layer its type, data,
    scale and, for labels, the class names and the colour of class 2."""
    from napari.components import ViewerModel
    from npe2 import PluginManager

    PluginManager.instance().discover()
    viewer = ViewerModel()
    viewer.open([scan], plugin="xct-modular-unet")
    for path in outputs:
        viewer.open(path, plugin="xct-modular-unet")
    layers = {}
    for layer in viewer.layers:
        kind = type(layer).__name__
        layers[layer.name] = {"type": kind, "data": np.asarray(layer.data), "scale": list(layer.scale)}
        if kind == "Labels":
            layers[layer.name].update(classes=list(layer.features["class"]), colour_2=layer.colormap.map(np.array([2]))[0])
    return layers


def test_napari_opens_a_scan_and_its_outputs_with_class_names_and_colours(tiny_dataset, models, tmp_path):
    from bundle.io import open_volume
    from bundle.io.chunked_writer import COLOURS

    infer(tiny_dataset / "phantom.raw", tmp_path, models["2d"], "2d", "--backend", "torch", "--save_probabilities", "True", "--progress", "False")
    outputs = [str(tmp_path / f"phantom.{name}.raw") for name in ("seg", "uncertainty", "prob")]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as napari_process:
        layers = napari_process.submit(_layers_napari_opens, str(tiny_dataset / "phantom.raw"), outputs).result(timeout=300)
    assert sorted(layers) == sorted(["phantom", "phantom.seg", "phantom.uncertainty", "phantom.prob matrix", "phantom.prob fibre",
                                     "phantom.prob porosity"])
    seg = layers["phantom.seg"]
    assert seg["type"] == "Labels" and layers["phantom"]["type"] == "Image"
    np.testing.assert_array_equal(seg["data"], open_volume(tmp_path / "phantom.seg.raw").read())
    assert seg["classes"] == ["matrix", "fibre", "porosity"]
    np.testing.assert_allclose(seg["colour_2"], np.array(COLOURS[2]) / 255)
    prob = open_volume(tmp_path / "phantom.prob.raw").read().reshape(3, *seg["data"].shape)
    np.testing.assert_array_equal(layers["phantom.prob porosity"]["data"], prob[2])
    assert layers["phantom"]["scale"][0] == pytest.approx(1.3)
