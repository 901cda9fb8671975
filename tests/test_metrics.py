import numpy as np
import pytest

from bundle.baselines import GreyClassHistogram, grey_bins
from bundle.evaluation import baseline_confusions
from bundle.metrics import (
    classification_report,
    confusion_matrix,
    iou_per_class,
    metrics_summary,
    normalised_confusions,
)

NAMES = ["matrix", "fibre", "porosity"]


def test_confusion_iou_and_report_against_hand_computation():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 255])
    pred = np.array([0, 0, 0, 1, 1, 1, 0, 2, 0, 2])
    c = confusion_matrix(pred, truth, 3)
    assert c.tolist() == [[3, 1, 0], [1, 2, 0], [1, 0, 1]]
    iou = iou_per_class(c)
    assert iou.tolist() == pytest.approx([3 / 6, 2 / 4, 1 / 2])
    report = classification_report(c, NAMES)
    assert report["matrix"]["precision"] == pytest.approx(3 / 5) and report["matrix"]["recall"] == pytest.approx(3 / 4)
    assert report["porosity"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert report["fibre"]["accuracy"] == pytest.approx(7 / 9)
    assert report["micro avg"]["precision"] == pytest.approx(6 / 9)
    assert report["macro avg"]["iou"] == pytest.approx(np.mean([0.5, 0.5, 0.5]))
    confusions = normalised_confusions(c)
    assert np.allclose(np.sum(confusions["by_row"], 1), 1) and np.allclose(np.sum(confusions["by_col"], 0), 1)
    assert confusions["by_all"][0][0] == pytest.approx(3 / 9)
    assert metrics_summary(c, NAMES)["mean_iou"] == pytest.approx(0.5)


def test_baselines_on_a_constructed_case():
    grey = np.array([10, 10, 10, 20, 20, 30, 30, 30, 30], np.uint8)
    train_labels = np.array([0, 0, 1, 1, 1, 0, 0, 2, 2])
    test_labels = np.array([0, 1, 1, 1, 1, 2, 2, 2, 0])
    train, test = GreyClassHistogram(3), GreyClassHistogram(3)
    train.add(grey, train_labels)
    test.add(grey, test_labels)
    assert train.zero_oc_class() == 0
    table = train.bin_zero_oc_table()
    assert table[10] == 0 and table[20] == 1 and table[30] == 0 and table[0] == 0
    confusions = baseline_confusions(train, test)
    np.testing.assert_array_equal(confusions["zero_oc"], confusion_matrix(np.zeros(9, int), test_labels, 3))
    np.testing.assert_array_equal(confusions["bin_zero_oc_train"], confusion_matrix(table[grey], test_labels, 3))
    np.testing.assert_array_equal(confusions["bin_zero_oc_test"], confusion_matrix(test.bin_zero_oc_table()[grey], test_labels, 3))
    assert test.bin_zero_oc_table()[10] == 1 and test.bin_zero_oc_table()[30] == 2


def test_grey_bins_of_non_uint8_use_256_bins_of_the_window():
    bins = grey_bins(np.array([0.0, 0.5, 0.999, 2.0, -1.0], np.float32), (0.0, 1.0))
    assert bins.tolist() == [0, 128, 255, 255, 0]


def test_global_iou_counts_once_over_all_batches_ignores_255_and_leaves_absent_classes_out():
    import torch
    from ignite.engine import Engine
    from ignite.metrics import ConfusionMatrix

    from bundle.metrics import global_iou, logits_and_labels

    labels = [torch.tensor([[[0, 0, 1, 255]]]), torch.tensor([[[0, 1, 1, 1]]])]
    predictions = [torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 0])]
    batches = [{"pred": [torch.nn.functional.one_hot(p, 3).T.float()[:, None]], "label": [t]} for p, t in zip(predictions, labels)]
    engine = Engine(lambda e, batch: batch)
    confusion = ConfusionMatrix(3, output_transform=logits_and_labels)
    global_iou(confusion).attach(engine, "mean")
    global_iou(confusion, 1).attach(engine, "fibre")
    global_iou(confusion, 2).attach(engine, "pores")
    metrics = engine.run(batches).metrics
    assert metrics["fibre"] == pytest.approx(3 / 5) and metrics["pores"] == 0.0
    assert metrics["mean"] == pytest.approx((2 / 4 + 3 / 5) / 2)
