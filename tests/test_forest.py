"""The random-forest baseline (`bundle.forest`) on a real projection-domain draw: fitted on two labelled slices, it
segments the test slices better than Bin-ZeroOC fitted on the same slices, the same way every time."""

import numpy as np
import pytest

from bundle.baselines import GreyClassHistogram, grey_bins
from bundle.data import load_dataset_description
from bundle.forest import SIGMAS, FilterForest, slice_features
from bundle.metrics import confusion_matrix, iou_per_class
from bundle.phantom import PhantomFamily, make_family


def test_features_respond_to_a_blob_at_its_scale():
    image = np.zeros((64, 64), np.float32)
    yy, xx = np.mgrid[:64, :64]
    image[(yy - 32) ** 2 + (xx - 32) ** 2 <= 9] = 1
    features = slice_features(image)
    assert features.shape == (64, 64, 4 * len(SIGMAS)) and features.dtype == np.float32
    smooth, gradient, laplacian = features[..., 0::4], features[..., 1::4], features[..., 2::4]
    fine = SIGMAS.index(1.6)
    assert smooth[32, 32, fine] > smooth[32, 40, fine] and gradient[32, 35, fine] > gradient[32, 32, fine]
    assert laplacian[32, 32, fine] < 0 < laplacian[32, 37, fine]


def test_forest_on_two_slices_beats_bin_zero_oc_and_repeats(tmp_path):
    make_family(tmp_path, [3], (24, 96, 96), family=PhantomFamily.projection_family())
    (entry,) = load_dataset_description(tmp_path)
    image, label = entry.image(), entry.label()
    z0, z1 = entry.ranges("train")[0]
    train = [int(z) for z in np.linspace(z0, z1 - 1, 4).round()[1:-1]]
    slices, truths = [image.read(z, z + 1)[0] for z in train], [label.read(z, z + 1)[0] for z in train]
    forest = FilterForest(n_estimators=30, samples_per_class=4000, seed=1, n_jobs=1).fit(slices, truths)
    grey_range = (float(min(s.min() for s in slices)), float(max(s.max() for s in slices)))
    histogram = GreyClassHistogram(3)
    for grey, truth in zip(slices, truths):
        histogram.add(grey_bins(grey, grey_range), truth)
    table = histogram.bin_zero_oc_table()
    ours, threshold = np.zeros((3, 3), np.int64), np.zeros((3, 3), np.int64)
    test = [z for a, b in entry.ranges("test") for z in range(a, b)]
    for z in test:
        grey, truth = image.read(z, z + 1)[0], label.read(z, z + 1)[0]
        predicted = forest.predict(grey)
        assert predicted.dtype == np.uint8 and predicted.shape == truth.shape
        ours += confusion_matrix(predicted, truth, 3)
        threshold += confusion_matrix(table[grey_bins(grey, grey_range)], truth, 3)
    assert np.nanmean(iou_per_class(ours)) > np.nanmean(iou_per_class(threshold)) + 0.03
    with pytest.raises(ValueError, match="no labelled slices"):
        FilterForest().fit([], [])
    again = FilterForest(n_estimators=30, samples_per_class=4000, seed=1, n_jobs=1).fit(slices, truths)
    assert np.array_equal(again.predict(image.read(test[0], test[0] + 1)[0]), forest.predict(image.read(test[0], test[0] + 1)[0]))
