import json
import os

import pytest
from conftest import CONFIGS

MANDATORY = [
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
]


def test_metadata_against_monai_schema_or_mandatory_fields(tmp_path):
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    schema = os.environ.get("XCT_META_SCHEMA")
    if schema:
        from monai.bundle import verify_metadata

        verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=schema)
    for key in MANDATORY + ["intended_use", "data_source", "references"]:
        assert meta.get(key), f"metadata.json lacks {key}"
    assert meta["version"] in meta["changelog"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == 1 and image["dtype"] == "float32" and image["value_range"] == [0, 1]
    assert image["format"] == "magnitude"
    assert pred["num_channels"] == 3
    assert pred["channel_def"] == {"0": "matrix", "1": "fibre", "2": "porosity"}


@pytest.mark.parametrize("variant, channels", [("2.5d", 5), ("3d", 1)])
def test_variant_metadata_overlays(variant, channels):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_meta([CONFIGS / "metadata.json", CONFIGS / "variants" / f"{variant}.metadata.json"])
    image = parser["_meta_#network_data_format#inputs#image"]
    assert image["num_channels"] == channels
    assert len(image["spatial_shape"]) == (3 if variant == "3d" else 2)


def test_shipped_weights_match_large_files_yml():
    import hashlib

    import yaml
    from conftest import ROOT

    entries = yaml.safe_load((CONFIGS / "large_files.yml").read_text())["large_files"]
    assert {e["path"] for e in entries} == {"models/model.pt", "models/model.ts", "models/phantom_model.pt"}
    for entry in entries:
        assert entry["hash_type"] == "sha256"
        assert hashlib.sha256((ROOT / entry["path"]).read_bytes()).hexdigest() == entry["hash_val"], f"{entry['path']} changed"


def test_shipped_torchscript_gives_the_labels_of_the_shipped_weights(tiny_dataset):
    import torch
    from conftest import ROOT

    from bundle.checkpoints import load_weights
    from bundle.inference import normalise_grey
    from bundle.io import open_volume
    from bundle.networks import ModularUNet

    x = torch.from_numpy(normalise_grey(open_volume(tiny_dataset / "phantom.raw").read(20, 24), [0.0, 255.0]))[:, None]
    scripted = torch.jit.load(str(ROOT / "models" / "model.ts"))
    eager = load_weights(ModularUNet(), ROOT / "models" / "model.pt").eval()
    with torch.inference_mode():
        assert torch.equal(scripted(x).argmax(1), eager(x).argmax(1))
