import json
import os
import subprocess
import sys

import pytest
from conftest import CONFIGS, ROOT

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
    assert image["num_channels"] == 5 and image["dtype"] == "float32" and image["value_range"] == [0, 1]
    assert image["format"] == "magnitude"
    assert pred["num_channels"] == 3
    assert pred["channel_def"] == {"0": "matrix", "1": "fibre", "2": "porosity"}


@pytest.mark.parametrize("variant, channels", [("2d", 1), ("3d", 1)])
def test_variant_metadata_overlays(variant, channels):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_meta([CONFIGS / "metadata.json", CONFIGS / "variants" / f"{variant}.metadata.json"])
    image = parser["_meta_#network_data_format#inputs#image"]
    assert image["num_channels"] == channels
    assert len(image["spatial_shape"]) == (3 if variant == "3d" else 2)


def test_shipped_torchscript_is_scripted_and_carries_this_metadata():
    """model-zoo's CI scripts the network and compares the metadata a `.ts` embeds with metadata.json."""
    import torch
    from conftest import ROOT

    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(ROOT / "models" / "model.ts"), _extra_files=extra)
    assert json.loads(extra["metadata.json"]) == json.loads((CONFIGS / "metadata.json").read_text()), (
        "models/model.ts embeds other metadata: re-export it with the ckpt_export command of docs/README.md"
    )
    assert "ModularUNet with u_depth" in scripted.code, "models/model.ts is a trace, not a script: its input checks are gone"
    with pytest.raises(torch.jit.Error, match="multiples of 8"):
        scripted(torch.zeros(1, 5, 12, 16))


def test_shipped_torchscript_gives_the_labels_of_the_shipped_weights(tiny_dataset):
    import torch
    from conftest import ROOT

    from bundle.checkpoints import load_weights
    from bundle.data.grey import normalise_grey
    from bundle.io import open_volume
    from bundle.networks import ModularUNet

    slices = torch.from_numpy(normalise_grey(open_volume(tiny_dataset / "phantom.raw").read(18, 26), [0.0, 255.0]))
    x = slices.unfold(0, 5, 1).permute(0, 3, 1, 2).contiguous()  # slices 20-23, each with two neighbours on each side
    scripted = torch.jit.load(str(ROOT / "models" / "model.ts"))
    eager = load_weights(ModularUNet(in_channels=5), ROOT / "models" / "model.pt").eval()
    with torch.inference_mode():
        assert torch.equal(scripted(x).argmax(1), eager(x).argmax(1))


def test_metadata_packages_are_the_projects_and_the_pins_satisfy_pyproject():
    """model-zoo installs `name==version` for every package of `required_packages_version` (MONAI 1.6 reads the
    old `optional_packages_version` as that key, replacing it): each must be one the project asks for (a dependency
    or an extra), every dependency must be listed, and each pin must satisfy pyproject.toml's range."""
    import tomllib

    from conftest import ROOT
    from packaging.requirements import Requirement

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    optional = {Requirement(r).name: Requirement(r) for extra in ("onnxruntime", "int8", "napari") for r in project["optional-dependencies"][extra]}
    optional["ome-zarr"] = next(Requirement(r) for r in project["optional-dependencies"]["test"] if r.startswith("ome-zarr"))
    pinned = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"], **meta["required_packages_version"]}
    assert "optional_packages_version" not in meta
    assert set(pinned) == set(required) | set(optional), f"metadata.json and pyproject.toml list other packages: {set(pinned) ^ (set(required) | set(optional))}"
    for name, version in pinned.items():
        requirement = required.get(name) or optional[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} is outside pyproject's {requirement}"
    assert not any(s.operator in ("<", "<=", "==", "~=") for s in required["torch"].specifier), "torch must have no upper bound"


def test_the_bundle_and_the_package_have_one_version():
    import tomllib

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert next(iter(meta["changelog"])) == meta["version"], "the changelog's first entry is this version's"


STAND_IN_VERIFY = '''
import os, sys
def verify_metadata_format(bundle_path):
    raise RuntimeError("the model_zoo_verify command must replace this step where no schema is given")
def verify(bundle, models_path="models", mode="full"):
    bundle_path = os.path.join(models_path, bundle)
    for part in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "models/model.ts", "LICENSE", "bundle/__init__.py"):
        if not os.path.isfile(os.path.join(bundle_path, part)):
            raise ValueError(f"necessary file {part} is not existing.")
    assert open(os.path.join(models_path, "model_info.json")).read().strip() == "{}"
    print(f"start verifying {bundle}: {mode}")
    verify_metadata_format(bundle_path)
    if mode == "broken":
        raise ValueError("version number: 0.0.0 is missing in 'changelog'")
'''


@pytest.mark.parametrize("mode", ["full", "broken"])
def test_model_zoo_verify_lays_the_bundle_out_as_model_zoo_checks_it(tmp_path, mode):
    """The command builds models/xct_modular_unet/ from the repo and runs a model-zoo checkout's ci/verify_bundle.py
    there (a stand-in: CI has no model-zoo checkout); its verdict is written, or a failure ends in one line naming it."""
    (tmp_path / "zoo" / "ci").mkdir(parents=True)
    (tmp_path / "zoo" / "ci" / "verify_bundle.py").write_text(STAND_IN_VERIFY)
    output = tmp_path / "verify.txt"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "model_zoo_verify.py"), "--model_zoo", str(tmp_path / "zoo"), "--output", str(output), "--mode", mode],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    if mode == "full":
        assert result.returncode == 0, result.stderr[-2000:]
        lines = output.read_text().splitlines()
        assert lines == ["start verifying xct_modular_unet: full", lines[1], "verify_bundle -m full: all steps passed"]
        assert lines[1].startswith("metadata schema check skipped")
    else:
        assert result.returncode != 0 and not output.exists()
        assert result.stderr.strip().splitlines()[-1].startswith("model-zoo verify_bundle -m broken failed on ")
        assert "is missing in 'changelog'" in result.stderr.strip().splitlines()[-1]
