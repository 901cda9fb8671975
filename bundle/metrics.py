"""Confusion-matrix metrics of the paper's Appendix D, accumulated slab by slab, and the Ignite metric built on them."""

from __future__ import annotations

import numpy as np
import torch
from ignite.metrics import ConfusionMatrix, MetricsLambda
from monai.handlers import from_engine

__all__ = ["classification_report", "global_iou", "logits_and_labels", "confusion_matrix", "iou_per_class", "metrics_summary", "normalised_confusions"]

IGNORE_LABEL = 255


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """Counts [true class, predicted class]; voxels whose target is `ignore` are skipped."""
    prediction = np.asarray(prediction).ravel()
    target = np.asarray(target).ravel()
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target differ in size: {prediction.size} vs {target.size}.")
    keep = target != ignore
    t = target[keep].astype(np.int64)
    p = prediction[keep].astype(np.int64)
    if t.size and (t.max() >= num_classes or p.max() >= num_classes or min(t.min(), p.min()) < 0):
        raise ValueError(f"class values must lie in 0..{num_classes - 1} (or {ignore} in the target).")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """Jaccard index per class: TP / (TP + FP + FN); NaN for a class absent from both."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def normalised_confusions(confusion: np.ndarray) -> dict[str, list]:
    """The paper's Fig. D.10: by all cells, by row (recall on the diagonal), by column (precision)."""
    c = np.asarray(confusion, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        by_row = np.nan_to_num(c / c.sum(1, keepdims=True))
        by_col = np.nan_to_num(c / c.sum(0, keepdims=True))
    return {
        "counts": c.astype(np.int64).tolist(),
        "by_all": (c / max(c.sum(), 1)).tolist(),
        "by_row": by_row.tolist(),
        "by_col": by_col.tolist(),
    }


def classification_report(confusion: np.ndarray, class_names: list[str]) -> dict:
    """Per-class accuracy, precision, recall, F1, IoU, support, with macro and micro averages (Table D.5)."""
    c = np.asarray(confusion, np.float64)
    total = c.sum()
    tp = np.diag(c)
    fp = c.sum(0) - tp
    fn = c.sum(1) - tp
    tn = total - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        accuracy = (tp + tn) / total if total else np.zeros_like(tp)
    iou = iou_per_class(c)
    report = {
        name: {
            "accuracy": float(accuracy[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "iou": float(iou[i]),
            "support": int(c.sum(1)[i]),
        }
        for i, name in enumerate(class_names)
    }
    report["macro avg"] = {
        "accuracy": float(np.mean(accuracy)),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "f1": float(np.mean(f1)),
        "iou": float(np.nanmean(iou)),
        "support": int(total),
    }
    micro = float(tp.sum() / total) if total else 0.0
    report["micro avg"] = {
        "accuracy": micro,
        "precision": micro,
        "recall": micro,
        "f1": micro,
        "iou": float(tp.sum() / (tp.sum() + 2 * (total - tp.sum()))) if total else 0.0,
        "support": int(total),
    }
    return report


def metrics_summary(confusion: np.ndarray, class_names: list[str]) -> dict:
    """IoU per class name, mean IoU, report and normalised confusions: the stable keys of metrics.json."""
    iou = iou_per_class(confusion)
    return {
        "iou": {name: float(iou[i]) for i, name in enumerate(class_names)},
        "mean_iou": float(np.nanmean(iou)),
        "report": classification_report(confusion, class_names),
        "confusion": normalised_confusions(confusion),
    }


def logits_and_labels(output) -> tuple[torch.Tensor, torch.Tensor]:
    """An engine's output as Ignite's `ConfusionMatrix` takes it: logits [B, C, ...] and integer labels [B, ...]."""
    pred, label = from_engine(["pred", "label"])(output)
    pred = torch.stack(list(pred)) if isinstance(pred, (list, tuple)) else pred
    label = torch.stack(list(label)) if isinstance(label, (list, tuple)) else label
    return pred, label[:, 0].long()


def global_iou(confusion: ConfusionMatrix, class_index: int | None = None) -> MetricsLambda:
    """IoU from one confusion matrix over the whole evaluation (not a mean of per-batch IoUs): the mean, or one class.

    The counting is Ignite's `ConfusionMatrix` (labels outside 0..C-1, such as 255 for
    unannotated voxels, are left out; synchronised under DDP); several of these share one. Not
    Ignite's `IoU` / `mIoU`: they score a class absent from both prediction and labels as 0 and
    average it in, so a validation slab without pores would lose a third of its mean; the paper's
    metric leaves such a class out of the mean (`iou_per_class` gives it NaN).
    """

    def value(counts: torch.Tensor) -> float:
        iou = iou_per_class(counts.cpu().numpy())
        return float(np.nan_to_num(iou[class_index] if class_index is not None else np.nanmean(iou)))

    return MetricsLambda(value, confusion)
