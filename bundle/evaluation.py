"""The evaluation report (the paper's Appendix D) as a handler of MONAI's evaluator.

Accumulates one confusion matrix over every test slab, the grey/class histogram of the test
slices, writes the prediction and the error volume (1 = misclassified) of the test slices,
then computes the baselines ZeroOC and Bin-ZeroOC (fitted on the train slices: what a user
could do; and on the test slices themselves: the paper's "expected performance") from the
histograms alone, and writes metrics.json, CSV tables and PNG figures.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.inferers import Inferer

from .baselines import GreyClassHistogram, grey_bins
from .checkpoints import DEFAULT_SIDECAR
from .data.crops import SlabDataset
from .data.grey import model_window, volume_window
from .errors import SettingError
from .figures import class_histogram_figure, confusion_figure, overlay_figure
from .flags import as_flag
from .inference import Predictor
from .io import (
    RawInfo,
    atomic_output,
    atomic_path,
    ensure_writable_dir,
    format_sidecar,
    sidecar_path,
    volume_stem,
    write_atomically,
)
from .metrics import IGNORE_LABEL, confusion_matrix, metrics_summary

__all__ = ["EvaluationReport", "ScoredInferer", "ScoredSource", "baseline_confusions"]

logger = logging.getLogger(__name__)


class ScoredSource(torch.nn.Module):
    """What the evaluate workflow scores, as the network its evaluator runs: the predictor's model, or a
    segmentation file of another tool (`prediction_path`).

    A file is fed one-hot (by `SlabDataset`) and passed through unchanged, so the same metrics and
    report score it; the model's weights and sidecar are then never read, so a file can be scored
    without a checkpoint. The model runs as inference runs it (`Predictor`: sidecar checked, batch
    norm folded). `grey_window` and `grey_percentiles` are the model's grey rule for slabs that
    `SlabDataset` has already windowed per volume (`bundle.data.grey.model_window`).
    """

    def __init__(self, prediction_path: str | os.PathLike | None, predictor: Predictor) -> None:
        if predictor.adapt != "none" and not prediction_path:
            raise SettingError(
                f"--adapt {predictor.adapt} adapts the model to one scan; evaluation scores every test range of the dataset. "
                "Segment the scan with run inference --adapt and score that file with --prediction_path."
            )
        super().__init__()
        self.prediction_path = str(prediction_path) if prediction_path else None
        self.predictor = predictor

    @property
    def source(self) -> str:
        return self.prediction_path or self.predictor.ckpt_path

    @property
    def sidecar(self) -> dict:
        return dict(DEFAULT_SIDECAR) if self.prediction_path else self.predictor.sidecar

    @property
    def grey_percentiles(self) -> list[float] | None:
        return self.sidecar.get("grey_percentiles")

    @property
    def grey_window(self) -> list[float]:
        return model_window(self.sidecar)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.prediction_path else self.predictor(x)


class ScoredInferer(Inferer):
    """The model's inferer when the model is scored; a file's one-hot slabs pass straight through."""

    def __init__(self, scored: ScoredSource, model_inferer: Inferer) -> None:
        super().__init__()
        self.scored, self.model_inferer = scored, model_inferer

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if self.scored.prediction_path:
            return network(inputs)
        return self.model_inferer(inputs, network, *args, **kwargs)


def baseline_confusions(train: GreyClassHistogram, test: GreyClassHistogram) -> dict[str, np.ndarray]:
    """Confusion matrices on the test voxels of ZeroOC and Bin-ZeroOC, read off the histograms."""
    c = test.num_classes
    per_class = test.counts.sum(0)
    out = {}
    zero = np.zeros((c, c), np.int64)
    zero[:, train.zero_oc_class()] = per_class
    out["zero_oc"] = zero
    for name, table in (("bin_zero_oc_train", train.bin_zero_oc_table()), ("bin_zero_oc_test", test.bin_zero_oc_table())):
        confusion = np.zeros((c, c), np.int64)
        for predicted in range(c):
            confusion[:, predicted] = test.counts[table == predicted].sum(0)
        out[name] = confusion
    return out


class EvaluationReport:
    """Evaluator handler that writes the full report into `output_dir`.

    Args:
        dataset: the test `SlabDataset` the evaluator iterates (in order, batch size 1).
        output_dir: destination of metrics.json, CSVs, figures and volumes.
        class_names: names of the classes, in label order.
        source: what produced the predictions (a `ScoredSource`, or its checkpoint or prediction file), recorded.
        write_volumes: write `<stem>.test.prediction.raw` and `<stem>.test.error_volume.raw`.
    """

    def __init__(
        self,
        dataset: SlabDataset,
        output_dir: str,
        class_names: list[str],
        source: ScoredSource | str = "",
        write_volumes: bool = True,
    ) -> None:
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self._windows: dict[int, list[float]] = {}
        self.source = source
        self.write_volumes = as_flag(write_volumes)
        self.summary: dict = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        ensure_writable_dir(self.output_dir)
        n = len(self.class_names)
        self.confusion = np.zeros((n, n), np.int64)
        self.test_histogram = GreyClassHistogram(n)
        self.files: dict[tuple[int, str], object] = {}
        self.depths: dict[int, int] = {}
        first_volume = [(z0, z1) for volume, z0, z1 in self.dataset.items if volume == 0]
        self.figure_slice = (0, (first_volume[0][0] + first_volume[-1][1]) // 2)
        self.figure_data = None
        self.start_time = time.perf_counter()

    def _file(self, volume: int, kind: str):
        key = (volume, kind)
        if key not in self.files:
            path = self.output_dir / f"{volume_stem(self.dataset.entries[volume].image_path)}.test.{kind}.raw"
            self.files[key] = (path, open(atomic_path(path), "wb"))
        return self.files[key][1]

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        predictions, labels = output["pred"], output["label"]
        volumes, starts = engine.state.batch["volume"], engine.state.batch["z0"]
        for pred, label, volume, z0 in zip(predictions, labels, volumes, starts):
            volume, z0 = int(volume), int(z0)
            classes = pred.argmax(0).to(torch.uint8).cpu().numpy()
            truth = label[0].cpu().numpy().astype(np.uint8)
            self.confusion += confusion_matrix(classes, truth, len(self.class_names))
            grey = self.dataset.entries[volume].image().read(z0, z0 + classes.shape[0])
            self.test_histogram.add(grey_bins(grey, self._bins_window(volume)), truth)
            if self.write_volumes:
                self._file(volume, "prediction").write(classes.tobytes())
                self._file(volume, "error_volume").write(((classes != truth) & (truth != IGNORE_LABEL)).astype(np.uint8).tobytes())
                self.depths[volume] = self.depths.get(volume, 0) + classes.shape[0]
            fig_volume, fig_z = self.figure_slice
            if volume == fig_volume and z0 <= fig_z < z0 + classes.shape[0]:
                self.figure_data = (grey[fig_z - z0], truth[fig_z - z0], classes[fig_z - z0], fig_z)

    def _bins_window(self, volume: int) -> list[float] | None:
        """The range of the baselines' 256 grey bins for non-uint8 data: the volume's own 0.05-99.95 percentiles, so a
        baseline fitted on a volume does not depend on the model that is scored beside it."""
        image = self.dataset.entries[volume].image()
        if image.dtype == np.uint8:
            return None
        if volume not in self._windows:
            self._windows[volume] = volume_window(image, (0.05, 99.95))
        return self._windows[volume]

    def _train_histogram(self) -> GreyClassHistogram:
        histogram = GreyClassHistogram(len(self.class_names))
        for volume, entry in enumerate(self.dataset.entries):
            if entry.label_path is None:
                continue
            image, label = entry.image(), entry.label()
            for z0, z1 in entry.ranges("train"):
                for s in range(z0, z1, 16):
                    e = min(s + 16, z1)
                    histogram.add(grey_bins(image.read(s, e), self._bins_window(volume)), label.read(s, e))
        return histogram

    def completed(self, engine: Engine) -> None:
        for (volume, _), (path, handle) in self.files.items():
            handle.close()
            shape = (self.depths[volume],) + self.dataset.entries[volume].image().shape[1:]
            sidecar_path(path).write_text(format_sidecar(RawInfo(shape, np.dtype(np.uint8), "<", {"SLICES": "test split, in order"})))
            os.replace(atomic_path(path), path)
        train_histogram = self._train_histogram()
        if train_histogram.counts.sum() == 0:
            logger.warning("no labelled train slices: the train-fitted baselines fall back to the test histogram.")
            train_histogram = self.test_histogram
        summary = metrics_summary(self.confusion, self.class_names)
        summary["baselines"] = {name: metrics_summary(c, self.class_names) for name, c in baseline_confusions(train_histogram, self.test_histogram).items()}
        summary["source"] = str(getattr(self.source, "source", self.source))
        summary["test_voxels"] = int(self.confusion.sum())
        summary["seconds"] = round(time.perf_counter() - self.start_time, 2)
        self.summary = summary
        self._write_json(summary)
        self._write_tables(summary)
        confusion_figure(summary["confusion"], self.class_names, self.output_dir / "confusion.png", "model on the test slices")
        class_histogram_figure(self.test_histogram.counts, self.class_names, self.output_dir / "class_histograms.png", "test slices")
        if self.figure_data is not None:
            grey, truth, classes, z = self.figure_data
            overlay_figure(grey, truth, classes, self.output_dir / "overlay.png", f"test slice z={z}")
        rows = [("model", summary)] + list(summary["baselines"].items())
        lines = [f"{'':20s}" + "".join(f"{n:>10s}" for n in self.class_names) + f"{'mean':>10s}"]
        for name, s in rows:
            lines.append(f"{name:20s}" + "".join(f"{s['iou'][n] * 100:10.1f}" for n in self.class_names) + f"{s['mean_iou'] * 100:10.1f}")
        logger.info("IoU (%%) on %d test voxels:\n%s", summary["test_voxels"], "\n".join(lines))

    def _write_json(self, summary: dict) -> None:
        write_atomically(self.output_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")

    def _write_tables(self, summary: dict) -> None:
        def write(name: str, header: list[str], rows: list[list]) -> None:
            with atomic_output(self.output_dir / name) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows(rows)

        rows = [["model"] + [summary["iou"][n] for n in self.class_names] + [summary["mean_iou"]]]
        rows += [[name] + [s["iou"][n] for n in self.class_names] + [s["mean_iou"]] for name, s in summary["baselines"].items()]
        write("iou.csv", ["predictor"] + self.class_names + ["mean"], rows)
        fields = ["accuracy", "precision", "recall", "f1", "iou", "support"]
        write("report.csv", ["class"] + fields, [[name] + [values[f] for f in fields] for name, values in summary["report"].items()])
        for key in ("counts", "by_all", "by_row", "by_col"):
            matrix = summary["confusion"][key]
            write(f"confusion_{key}.csv", ["true \\ predicted"] + self.class_names, [[self.class_names[i]] + list(row) for i, row in enumerate(matrix)])
