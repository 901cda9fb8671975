"""The napari reader, headless through napari's ViewerModel and the plugin's installed npe2 manifest."""

import numpy as np
import pytest
from conftest import infer

napari = pytest.importorskip("napari")


def test_napari_opens_a_scan_and_its_outputs_with_class_names_and_colours(tiny_dataset, models, tmp_path):
    from napari.components import ViewerModel
    from npe2 import PluginManager

    from bundle.io import open_volume
    from bundle.io.chunked_writer import COLOURS

    infer(tiny_dataset / "phantom.raw", tmp_path, models["2d"], "2d", "--backend", "torch", "--save_probabilities", "True", "--progress", "False")
    PluginManager.instance().discover()
    viewer = ViewerModel()
    viewer.open([str(tiny_dataset / "phantom.raw")], plugin="xct-modular-unet")
    for name in ("seg", "uncertainty", "prob"):
        viewer.open(str(tmp_path / f"phantom.{name}.raw"), plugin="xct-modular-unet")
    layers = {layer.name: layer for layer in viewer.layers}
    assert sorted(layers) == sorted(["phantom", "phantom.seg", "phantom.uncertainty", "phantom.prob matrix", "phantom.prob fibre",
                                     "phantom.prob porosity"])
    seg = layers["phantom.seg"]
    assert type(seg).__name__ == "Labels" and type(layers["phantom"]).__name__ == "Image"
    np.testing.assert_array_equal(np.asarray(seg.data), open_volume(tmp_path / "phantom.seg.raw").read())
    assert list(seg.features["class"]) == ["matrix", "fibre", "porosity"]
    np.testing.assert_allclose(seg.colormap.map(np.array([2]))[0], np.array(COLOURS[2]) / 255)
    prob = open_volume(tmp_path / "phantom.prob.raw").read().reshape(3, *seg.data.shape)
    np.testing.assert_array_equal(np.asarray(layers["phantom.prob porosity"].data), prob[2])
    assert layers["phantom"].scale[0] == pytest.approx(1.3)
