import json
import re
from dataclasses import fields

import numpy as np
import pytest
from conftest import ROOT, run_script

from bundle.baselines import GreyClassHistogram
from bundle.data import DatasetError, combine_dataset_descriptions, load_dataset_description
from bundle.io import open_volume
from bundle.metrics import confusion_matrix, iou_per_class
from bundle.phantom import (
    PhantomConfig,
    PhantomFamily,
    PhantomGeometry,
    make_family,
    make_phantom,
    render_projection_slab,
    render_slab,
)
from bundle.phantom.image_domain import _slice_noise
from bundle.phantom.projection import padded_shape


def test_phantom_is_deterministic_whatever_the_slab(tmp_path):
    a = make_phantom(tmp_path / "a", (24, 48, 48), seed=7, slab=5)
    b = make_phantom(tmp_path / "b", (24, 48, 48), seed=7, slab=24)
    c = make_phantom(tmp_path / "c", (24, 48, 48), seed=8)
    for key in ("image", "label"):
        assert open(a[key], "rb").read() == open(b[key], "rb").read()
    assert open(a["image"], "rb").read() != open(c["image"], "rb").read()
    assert not list((tmp_path / "a").glob(".*partial"))


def test_default_phantom_fractions_and_bin_zero_oc_like_the_paper(tmp_path):
    summary = make_phantom(tmp_path, (128, 256, 256), seed=0)
    fractions = summary["fractions"]
    assert abs(fractions["fibre"] - 0.172) < 0.02
    assert 0.003 < fractions["porosity"] < 0.008
    (entry,) = load_dataset_description(tmp_path)
    image, label = entry.image().read(), entry.label().read()
    histogram = GreyClassHistogram(3)
    histogram.add(image, label)
    iou = iou_per_class(confusion_matrix(histogram.bin_zero_oc_table()[image], label, 3))
    assert 0.70 <= np.nanmean(iou) <= 0.80, iou
    assert iou[2] <= 0.40, iou
    assert entry.ranges("train") == [(0, 87)] and entry.ranges("test") == [(105, 125)]


CHANGED = {
    "fibre_fraction": 0.3, "fibre_radius": 2.5, "fibre_length": (20.0, 40.0), "fibre_spread": 0.6, "pore_fraction": 0.03,
    "large_pore_share": 5.0, "pore_elongation": 3.0, "crack_fraction": 0.01, "grey_matrix": 0.3, "grey_fibre": 0.5,
    "grey_pore": 0.2, "blur_sigma": 1.2, "noise_std": 0.06, "noise_kind": "fbp", "rings_per_100_voxels": 12.0,
    "ring_amplitude": 0.08, "dark_ring_share": 0.0, "dark_ring_amplitude": 0.1, "cupping": 0.12, "z_drift": 0.2,
    "bit_depth": "uint16", "grey_gain": 180.0, "grey_offset": 30.0, "fibre_radius_spread": 0.3, "random_fibre_share": 1.0,
    "bundle_share": 0.5, "domain": "projection",
}
PROJECTION_CHANGED = {
    "inclusion_fraction": 0.0, "photons": 500.0, "gain_std": 0.03, "dead_pixel_share": 0.05, "beam_hardening": 0.3,
    "phase_contrast": 1.5, "angles": 60, "recon_filter": "hann", "detector_blur": 2.0, "attenuation_path": 0.5,
    "fibre_attenuation": 3.0, "inclusion_attenuation": 9.0,
}


def _render(config: PhantomConfig, shape=(16, 160, 160), seed=5):
    if config.domain == "projection":
        return render_projection_slab(PhantomGeometry.draw(padded_shape(shape), seed, config), config, seed, 0, shape[0], shape)
    return render_slab(PhantomGeometry.draw(shape, seed, config), config, seed, 0, shape[0])


@pytest.mark.parametrize("field", [f.name for f in fields(PhantomConfig) if f.name != "voxel_size_um"])
def test_every_phantom_setting_changes_the_rendered_scan(field):
    assert field in CHANGED or field in PROJECTION_CHANGED, f"new PhantomConfig field {field}: add it to CHANGED or PROJECTION_CHANGED"
    base = PhantomConfig() if field in CHANGED else PhantomConfig(domain="projection", inclusion_fraction=0.003)
    shape = (16, 160, 160) if field in CHANGED else (3, 64, 64)
    grey, labels = _render(base, shape)
    other_grey, other_labels = _render(PhantomConfig(**{**vars(base), field: {**CHANGED, **PROJECTION_CHANGED}[field]}), shape)
    changed = other_grey.dtype != grey.dtype or not np.array_equal(other_grey, grey) or not np.array_equal(other_labels, labels)
    assert changed, f"{field} left the scan unchanged"


def test_cracks_and_elongated_pores_add_porosity():
    _, labels = _render(PhantomConfig())
    _, cracked = _render(PhantomConfig(crack_fraction=0.01))
    assert (cracked == 2).sum() > (labels == 2).sum() + 0.004 * labels.size


def test_fbp_noise_has_the_ramp_spectrum_and_the_asked_std():
    rng = np.random.default_rng(0)
    for kind in ("white", "fbp"):
        noise = np.stack([_slice_noise(rng, (128, 128), 0.05, kind) for _ in range(4)])
        power = np.abs(np.fft.fft2(noise)) ** 2
        k = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
        low, high = power[:, (k > 0) & (k < 0.05)].mean(), power[:, (k > 0.15) & (k < 0.3)].mean()
        assert abs(noise.std() - 0.05) < 0.005
        assert (high / low > 5) if kind == "fbp" else (0.8 < high / low < 1.25), (kind, high / low)


@pytest.mark.parametrize("bit_depth", ["uint8", "uint16", "float32"])
def test_bit_depths_write_readable_volumes_of_that_type(tmp_path, bit_depth):
    scale = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}[bit_depth]
    summary = make_phantom(tmp_path, (24, 48, 48), seed=2, config=PhantomConfig(bit_depth=bit_depth, grey_gain=0.7 * scale, grey_offset=0.05 * scale))
    image = open_volume(summary["image"]).read()
    assert image.dtype == np.dtype(bit_depth)
    assert 0.2 * scale < np.median(image) < 0.5 * scale


def test_family_draws_cover_the_ranges_and_edge_draws_their_outer_tenths():
    family = PhantomFamily()
    draws = [family.draw(seed) for seed in range(40)]
    assert family.draw(3) == family.draw(3)
    for name in ("fibre_fraction", "pore_fraction", "noise_std", "blur_sigma", "cupping"):
        low, high = getattr(family, name)
        values = [getattr(d, name) for d in draws]
        assert low <= min(values) and max(values) <= high and max(values) - min(values) > 0.5 * (high - low), name
        for value in (getattr(family.draw(seed, edge=True), name) for seed in range(10)):
            assert min(value - low, high - value) <= 0.1 * (high - low) + 1e-12, (name, value)
    assert {d.bit_depth for d in draws} == {"uint8", "uint16", "float32"} and {d.noise_kind for d in draws} == {"white", "fbp"}
    assert all(d.grey_fibre > d.grey_matrix > d.grey_pore for d in draws)


def test_make_family_lists_every_draw_with_its_config(tmp_path):
    summary = make_family(tmp_path, [4, 9], (24, 48, 48))
    entries = load_dataset_description(tmp_path)
    assert [e.image_path.name for e in entries] == ["draw4.raw", "draw9.raw"] and len(summary["volumes"]) == 2
    for entry, seed in zip(entries, (4, 9)):
        assert entry.extra["phantom"]["bit_depth"] == PhantomFamily().draw(seed).bit_depth
        assert entry.image().dtype == np.dtype(entry.extra["phantom"]["bit_depth"])


def test_paper_seeds_list_the_paper_style_phantom_after_the_draws(tmp_path):
    run_script("phantom.py", "family", "--output_dir", str(tmp_path / "mixed"), "--seeds", "[4]", "--shape", "[24,48,48]", "--paper_seeds", "[1]")
    make_phantom(tmp_path / "paper", (24, 48, 48), seed=1)
    entries = load_dataset_description(tmp_path / "mixed")
    assert [e.image_path.name for e in entries] == ["draw4.raw", "paper1.raw"]
    assert (tmp_path / "mixed" / "paper1.raw").read_bytes() == (tmp_path / "paper" / "phantom.raw").read_bytes()
    assert entries[1].extra["phantom"]["seed"] == 1 and entries[1].extra["phantom"]["domain"] == "image"


def test_combine_lists_the_volumes_of_several_datasets_without_copying_them(tmp_path):
    make_family(tmp_path / "a", [4], (24, 48, 48), paper_seeds=[1])
    make_family(tmp_path / "b", [9], (24, 48, 48), edge=True)
    run_script("phantom.py", "combine", "--output_dir", str(tmp_path / "both"), "--datasets", f'["{tmp_path / "a"}","{tmp_path / "b"}"]')
    combined, parts = load_dataset_description(tmp_path / "both"), load_dataset_description(tmp_path / "a") + load_dataset_description(tmp_path / "b")
    assert [(e.image_path, e.label_path, e.splits, e.extra) for e in combined] == [(e.image_path, e.label_path, e.splits, e.extra) for e in parts]
    assert sorted(p.name for p in (tmp_path / "both").iterdir()) == ["dataset.json"]
    assert json.loads((tmp_path / "both" / "dataset.json").read_text())["volumes"][0]["image"] == "../a/draw4.raw"
    with pytest.raises(DatasetError, match="draw4.raw: listed by both"):
        combine_dataset_descriptions(tmp_path / "twice", [tmp_path / "a", tmp_path / "both"])


def test_family_command_writes_edge_draws(tmp_path):
    printed = json.loads(run_script("phantom.py", "family", "--output_dir", str(tmp_path), "--seeds", "[5]", "--shape", "[24,48,48]", "--edge", "True", cli=True))
    (entry,) = load_dataset_description(tmp_path)
    assert printed["volumes"][0]["image"] == str(tmp_path / "draw5.raw")
    assert entry.extra["phantom"]["noise_std"] == PhantomFamily().draw(5, edge=True).noise_std


def test_the_documented_family_ranges_are_the_code_s():
    text = (ROOT / "docs" / "phantom.md").read_text()
    for f in fields(PhantomFamily):
        value = getattr(PhantomFamily(), f.name)
        if isinstance(value, (str, float)):
            shown = f"{value:g}" if isinstance(value, float) else value
        else:
            shown = ", ".join(value) if isinstance(value[0], str) else f"{value[0]:g} - {value[1]:g}"
        assert re.search(rf"^\| `{f.name}` \| [^|]+ \| {re.escape(shown)} \|$", text, re.M), f"docs/phantom.md: {f.name} should read {shown}"
