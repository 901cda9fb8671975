import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from bundle.io import open_volume, write_volume
from bundle.report import materials_report


def ball(shape, centre, radius):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


@pytest.fixture
def spheres(tmp_path):
    """Pores of radius 3, 5 and 8 (the last straddling several 4-slice slabs) and fibres along y."""
    shape = (40, 48, 48)
    labels = np.zeros(shape, np.uint8)
    for zc, xc in ((6, 6), (6, 30), (30, 6), (30, 30)):
        zz, xx = np.ogrid[: shape[0], : shape[2]]
        labels[((zz - zc) ** 2 + (xx - xc) ** 2 <= 9)[:, None, :].repeat(shape[1], 1)] = 1
    for centre, radius in (((20, 10, 20), 3), ((20, 30, 20), 5), ((21, 24, 40), 8)):
        labels[ball(shape, centre, radius)] = 2
    write_volume(tmp_path / "labels.raw", labels, {"VOXEL_SIZE": 1.3, "VOXEL_UNIT": "um"})
    return tmp_path / "labels.raw", labels


def test_pores_are_counted_once_across_slabs_with_their_sizes(spheres):
    path, labels = spheres
    report = materials_report(open_volume(path), voxel_size=1.3, slab=4)
    assert report["pores"]["count"] == 3
    volumes = sorted(p["voxels"] for p in report["pores"]["largest"])
    for radius, voxels in zip((3, 5, 8), volumes):
        assert voxels == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.12)
    diameters = sorted(report["pores"]["equivalent_diameter"]["all"])
    assert diameters[-1] == pytest.approx(2 * 8 * 1.3, rel=0.05)
    biggest = report["pores"]["largest"][0]
    assert biggest["bbox_lo_zyx"] == [13, 16, 32] and biggest["bbox_hi_zyx"] == [29, 32, 47]
    assert report["phases"]["fraction"]["porosity"] == pytest.approx((labels == 2).mean())


def test_fibre_orientation_along_a_known_axis(spheres):
    path, _ = spheres
    orientation = materials_report(open_volume(path), slab=8)["fibre_orientation"]
    tensor = np.array(orientation["tensor_zyx"])
    assert np.trace(tensor) == pytest.approx(1.0)
    assert tensor[1, 1] > 0.85
    assert abs(orientation["directions_zyx"][0][1]) > 0.97


def test_fractions_with_a_probability_band(tmp_path):
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:2] = 1
    probabilities = np.zeros((3, 4, 8, 8), np.uint8)
    probabilities[0, 2:] = 255
    probabilities[1, :2] = 200
    probabilities[0, :2] = 55
    write_volume(tmp_path / "l.raw", labels)
    write_volume(tmp_path / "p.raw", probabilities.reshape(12, 8, 8))
    phases = materials_report(open_volume(tmp_path / "l.raw"), open_volume(tmp_path / "p.raw"))["phases"]
    assert phases["fraction"]["fibre"] == pytest.approx(0.5)
    assert phases["fraction_low"]["fibre"] == pytest.approx(0.0)
    assert phases["fraction_high"]["fibre"] == pytest.approx(0.5)
    assert phases["fraction_high"]["matrix"] == pytest.approx(1.0)
    assert phases["fraction_expected"]["fibre"] == pytest.approx(0.5 * 200 / 255)


def test_report_script_writes_json_png_and_html(spheres, tmp_path):
    path, _ = spheres
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), str(path), "--output_dir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "labels.report.json").read_text())
    assert report["unit"] == "um" and report["voxel_size"] == 1.3 and report["pores"]["count"] == 3
    assert (tmp_path / "out" / "labels.report.png").stat().st_size > 10_000
    assert "labels.report.png" in (tmp_path / "out" / "labels.report.html").read_text()
