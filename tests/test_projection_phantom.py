"""The projection-domain phantom: each acquisition setting acts as its physics says, measured on small slices."""

import numpy as np
import pytest

from bundle.phantom import PhantomConfig, PhantomFamily, PhantomGeometry, make_family, render_projection_slab
from bundle.phantom.projection import padded_shape

SHAPE = (2, 80, 80)
CLEAN = dict(domain="projection", photons=1e9, gain_std=0.0, detector_blur=0.0, bit_depth="float32", grey_gain=1.0, grey_offset=0.0)


def render(seed=4, shape=SHAPE, **settings):
    config = PhantomConfig(**{**CLEAN, **settings})
    return render_projection_slab(PhantomGeometry.draw(padded_shape(shape), seed, config), config, seed, 0, shape[0], shape)


def radius(shape=SHAPE):
    yy, xx = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape[1:]), indexing="ij")
    return np.hypot(yy, xx)


def matrix_std(grey, labels):
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(labels == 0, structure=np.ones((1, 3, 3)), iterations=3)
    return float(grey[inner].std())


def test_fewer_photons_give_more_noise():
    low, labels = render(photons=1e3)
    high, _ = render(photons=1e5)
    assert matrix_std(low, labels) > 3 * matrix_std(high, labels)


def test_detector_gain_errors_make_rings_centred_on_the_rotation_axis():
    clean, _ = render()
    ringed, _ = render(gain_std=0.02, dead_pixel_share=0.02)
    diff = np.abs(ringed - clean)[0]
    r = np.rint(radius()).astype(int)
    counts = np.bincount(r.ravel())
    profile = np.bincount(r.ravel(), diff.ravel())[counts > 0] / counts[counts > 0]  # a ring is a radius where the error piles up
    assert diff.mean() > 0.01 and profile.max() > 4 * np.median(profile), profile.round(3)


def test_beam_hardening_cups_the_matrix():
    def cupping(grey, labels):
        r = radius()
        matrix = labels[0] == 0
        return float(grey[0][matrix & (r > 0.45 * SHAPE[1])].mean() - grey[0][matrix & (r < 0.2 * SHAPE[1])].mean())

    flat, labels = render(seed=6)
    hard, _ = render(seed=6, beam_hardening=0.3)
    assert cupping(hard, labels) > cupping(flat, labels) + 0.01


def test_phase_contrast_overshoots_at_edges():
    plain, labels = render()
    fringed, _ = render(phase_contrast=1.5)
    fibre = labels == 1
    assert fringed.max() - np.median(fringed[fibre]) > 1.5 * (plain.max() - np.median(plain[fibre]))


def test_few_angles_streak_and_the_filter_sets_the_noise_texture():
    many, labels = render(angles=720)
    few, _ = render(angles=40)
    assert matrix_std(few, labels) > 2 * matrix_std(many, labels)
    ramp, _ = render(photons=3e3, recon_filter="ramp")
    hann, _ = render(photons=3e3, recon_filter="hann")
    assert matrix_std(ramp, labels) > 1.3 * matrix_std(hann, labels)


def test_detector_blur_softens_edges():
    sharp, _ = render()
    blurred, _ = render(detector_blur=2.0)
    edges = lambda grey: float(np.abs(np.diff(grey, axis=-1)).mean())  # noqa: E731
    assert edges(blurred) < 0.8 * edges(sharp)


def test_inclusions_are_brighter_than_fibre_and_labelled_matrix():
    without, labels = render(seed=8)
    grey, with_labels = render(seed=8, inclusion_fraction=0.004, inclusion_attenuation=8.0)
    np.testing.assert_array_equal(labels, with_labels)
    assert grey.max() > without.max() + 0.5


def test_slabs_of_any_size_give_the_same_scan(tmp_path):
    family = PhantomFamily.projection_family()
    a = make_family(tmp_path / "a", [300], (20, 40, 40), slab=3, family=family)
    b = make_family(tmp_path / "b", [300], (20, 40, 40), slab=20, family=family)
    for key in ("image", "label"):
        assert open(a["volumes"][0][key], "rb").read() == open(b["volumes"][0][key], "rb").read()
    assert a["volumes"][0]["domain"] == "projection"


def test_mixed_family_keeps_each_seeds_material_and_draws_both_domains():
    image, mixed = PhantomFamily(fibre_radius=(1.5, 8.0)), PhantomFamily.projection_family("mixed")
    draws = [mixed.draw(seed) for seed in range(20)]
    assert {d.domain for d in draws} == {"image", "projection"}
    for seed, draw in enumerate(draws):
        if draw.domain == "image":
            assert draw == image.draw(seed)


@pytest.mark.parametrize("bit_depth", ["uint8", "uint16"])
def test_integer_storage_keeps_matrix_mid_range(bit_depth):
    scale = {"uint8": 255.0, "uint16": 65535.0}[bit_depth]
    grey, labels = render(photons=1e4, bit_depth=bit_depth, grey_gain=0.7 * scale, grey_offset=0.05 * scale)
    assert grey.dtype == np.dtype(bit_depth) and 0.2 * scale < np.median(grey[labels == 0]) < 0.5 * scale
