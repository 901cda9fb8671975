"""The shipped model's quality through the default `run inference`, scored by `run evaluate`: a change that breaks the
weights, the pre-processing, the tiling or a backend cannot land."""

import json

import pytest
from conftest import bundle_run, config_list

from bundle.phantom import make_phantom

# measured with the default backend and precision on this phantom (seed 0, the demo's generator settings, 48 x 128 x 128):
# the 2D weights (0.8.0, models/model_2d.pt) 97.9 / 91.4 / 70.1 on an AVX2 CPU (fp32), the default 2.5D weights (0.9.0,
# models/model.pt in 0.10.0) 98.2 / 92.4 / 79.2 on an AVX512-bf16 CPU (bf16); the floors sit a few
# points under them (more for the rare porosity), and the 0.11.0 weights pass the same floors
SHIPPED = {
    "2d": (["inference.json", "variants/2d.json"], {"matrix": 0.95, "fibre": 0.88, "porosity": 0.62}),
    "2.5d (default)": (["inference.json"], {"matrix": 0.95, "fibre": 0.88, "porosity": 0.70}),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", SHIPPED)
def test_shipped_model_through_default_run_inference_keeps_its_quality(tmp_path, variant):
    configs, floors = SHIPPED[variant]
    make_phantom(tmp_path / "data", (48, 128, 128), seed=0)
    bundle_run("run", "inference", "--config_file", config_list(*configs), "--input_path", str(tmp_path / "data" / "phantom.raw"),
               "--output_dir", str(tmp_path / "out"), "--progress", "False")
    bundle_run("run", "evaluate", "--config_file", config_list(*configs, "evaluate.json"), "--dataset_dir", str(tmp_path / "data"),
               "--prediction_path", str(tmp_path / "out" / "phantom.seg.raw"), "--output_dir", str(tmp_path / "eval"), "--write_volumes", "False")
    iou = json.loads((tmp_path / "eval" / "metrics.json").read_text())["iou"]
    assert all(iou[name] > floor for name, floor in floors.items()), iou
