import numpy as np

from bundle.baselines import GreyClassHistogram
from bundle.data import load_dataset_description
from bundle.metrics import confusion_matrix, iou_per_class
from bundle.phantom import make_phantom


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
