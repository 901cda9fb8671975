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
