"""Streamed, resumable segmentation of a volume larger than memory, z-slab by z-slab.

The pieces follow MONAI's inference properties so other pipelines can use them:
`StreamedSegmentation` plans the slabs and owns the output files; `StreamedSlabDataset`
reads each pending slab (with its z halo) from disk; a MONAI `SupervisedEvaluator` runs the
network through the bundle's `ZStackInferer`; `StreamedWriter` (an evaluator handler) writes
each finished slab into the outputs and records it, so a killed run restarted with the same
command continues from the last completed slab and gives byte-identical files.

Outputs for input `<stem>.<ext>` in `output_dir`: `<stem>.seg.raw` (uint8 labels),
`<stem>.prob.raw` (uint8 probabilities x255, classes as the slowest axis) and
`<stem>.uncertainty.raw` (uint8 entropy / log C x255), each with a `.raw.info` sidecar, and
`<stem>.provenance.json`. They are written under temporary names and renamed when complete.
Under `torchrun` the slabs are dealt round-robin to the ranks, which write into the same files.

Resume is safe by construction: the progress folder records every fact that changes the
output (input file, model bytes by sha256, precision, tiles, TTA, axes, roi, ...); a rerun
whose facts differ stops and names them instead of mixing two runs in one file, and a lock
keeps a second run out of a folder that one is writing. Before the first slab the free disk
space is checked against what the run will write.

This module plans and orchestrates; the rooms it uses: `resume` (facts stamp, markers, lock),
`partial_outputs` (the files while written, by slab), `publish` (final names and formats).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ignite.distributed as idist
import monai
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.utils import convert_to_tensor

from ..data.crops import read_with_halo
from ..errors import OutputError
from ..flags import as_flag
from ..io import VolumeError, ensure_writable_dir, open_volume, volume_stem, write_atomically
from ..planning import PlannedOnFirstUse
from .partial_outputs import PartialOutputs
from .publish import OUTPUT_EXTENSIONS, publish_outputs
from .resume import SlabProgress
from .roi import validated_roi

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ["StreamedSegmentation", "StreamedSlabDataset", "StreamedWriter", "single_image"]

logger = logging.getLogger(__name__)


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB"


def single_image(data: Sequence[dict] | str | os.PathLike) -> str:
    """The image of a MONAI data list of one item (`[{"image": path}]`, what apps inject as `data`), or a path as is."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    items = list(data)
    if len(items) != 1 or not isinstance(items[0], dict) or "image" not in items[0]:
        raise ValueError(f"data must be a list of one {{'image': path}} (a run segments one volume; start one per volume), got {data!r}.")
    return str(items[0]["image"])


class StreamedSegmentation(PlannedOnFirstUse):
    """The plan and the output files of one streamed segmentation.

    Building it reads nothing: the volume is opened and the slabs planned on first use (when the
    evaluator starts), and nothing is written until `prepare()`, so a config resolves
    (`ConfigWorkflow.check_properties`) with no scan on disk.

    Args:
        input_path: the volume (.raw + .raw.info, .tif/.tiff or a TIFF folder, .nii/.nii.gz, .h5[::dataset], .zarr), or
            the MONAI data list of it that an app injects (`[{"image": path}]`).
        output_dir: where outputs go.
        slab: output slices per slab (memory grows linearly with it), or "auto": as many as fit in
            `slab_voxels` (at least 1, at most 64), so that memory does not grow with the plane size.
        slab_voxels: the voxel budget of one slab when `slab` is "auto".
        z_halo: context slices read each side (2 for 2.5D).
        roi: optional [[z0, z1], [y0, y1], [x0, x1]] to segment only part of the volume.
        num_classes: classes of the network.
        save_probabilities: also write `<stem>.prob.raw`.
        save_uncertainty: also write `<stem>.uncertainty.raw`.
        output_ext: ".raw" (streamed), ".nii.gz"/".nii"/".tif" converted at the end in memory, or ".zarr" (one
            OME-Zarr image with labels and pyramid) / ".h5" (one HDF5 file) converted at the end slab by slab.
        prob_dtype: "uint8" (x255, rounded) or "float16"/"float32" probabilities.
        provenance: facts to record in `<stem>.provenance.json` (model, config...); they are part of the resume fingerprint.
        runtime: how this run computes (`bundle.runtime.Runtime.as_dict()`), recorded but not fingerprinted.
        overwrite: discard partial outputs made with other settings instead of refusing to resume.
        margin: y/x context read around the box where the volume has it (the inferer's margin), its start
            on a multiple of `size_multiple` in volume coordinates, so that a sub-box gets the labels the
            whole-volume run gives it.
        size_multiple: the network's 2**u_depth.
        class_names: names of the classes, written with the labels of a .zarr output.
        predictor: the `Predictor` whose provenance (model, grey window, backend) and runtime are recorded
            beside `provenance` and `runtime`.
    """

    def __init__(
        self,
        input_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        slab: int | str = "auto",
        slab_voxels: int = 8 * 2**20,
        z_halo: int = 0,
        roi: Sequence[Sequence[int]] | None = None,
        num_classes: int = 3,
        save_probabilities: bool = False,
        save_uncertainty: bool = True,
        output_ext: str = ".raw",
        prob_dtype: str = "uint8",
        provenance: dict | None = None,
        runtime: dict | None = None,
        overwrite: bool = False,
        margin: int = 0,
        size_multiple: int = 8,
        class_names: Sequence[str] | None = None,
        predictor: Predictor | None = None,
    ) -> None:
        self._defer(locals())

    PLANNED = frozenset((
        "input_path", "volume", "output_dir", "z_halo", "num_classes", "output_ext", "prob_dtype", "class_names", "box", "shape",
        "slab", "outputs", "provenance_path", "progress_dir", "progress", "slabs", "provenance", "runtime", "overwrite", "margin",
        "context", "facts", "fingerprint", "done", "computed", "_started",
    ))

    def _plan(
        self, input_path, output_dir, slab, slab_voxels, z_halo, roi, num_classes, save_probabilities, save_uncertainty,
        output_ext, prob_dtype, provenance, runtime, overwrite, margin, size_multiple, class_names, predictor,
    ) -> None:
        """Open the volume, check the settings and plan the slabs: what `__init__` leaves for the first use."""
        self.input_path = Path(single_image(input_path))
        self.volume = open_volume(self.input_path)
        self.output_dir = Path(output_dir)
        self.z_halo = int(z_halo)
        self.num_classes = int(num_classes)
        self.output_ext = output_ext
        self.prob_dtype = np.dtype(prob_dtype)
        if self.prob_dtype not in (np.uint8, np.float16, np.float32):
            raise ValueError(f"prob_dtype must be uint8, float16 or float32, got {prob_dtype!r}.")
        if output_ext not in OUTPUT_EXTENSIONS:
            raise ValueError(f"output_ext must be one of {', '.join(OUTPUT_EXTENSIONS)}, got {output_ext!r}.")
        self.class_names = list(class_names) if class_names else [f"class {i}" for i in range(int(num_classes))]
        depth = self.volume.shape[0]
        if self.z_halo and depth < 2 * self.z_halo + 1:
            raise VolumeError(
                f"{self.input_path}: the volume has {depth} slice(s), fewer than the {2 * self.z_halo + 1} slices of context "
                f"this model needs (z_halo {self.z_halo}); the 2D variant segments it: merge configs/variants/2d.json."
            )
        self.box = validated_roi(roi, self.volume.shape, self.input_path) or [slice(0, s) for s in self.volume.shape]
        self.shape = tuple(s.stop - s.start for s in self.box)
        plane = self.shape[1] * self.shape[2]
        self.slab = max(1, min(64, int(slab_voxels) // plane)) if str(slab).lower() == "auto" else int(slab)
        if self.slab < 1:
            raise ValueError(f"slab must be a positive number of slices or 'auto', got {slab!r}.")
        stem = volume_stem(self.input_path)
        self.outputs = {"seg": self.output_dir / f"{stem}.seg.raw"}
        if as_flag(save_probabilities):
            self.outputs["prob"] = self.output_dir / f"{stem}.prob.raw"
        if as_flag(save_uncertainty):
            self.outputs["uncertainty"] = self.output_dir / f"{stem}.uncertainty.raw"
        self.partials = PartialOutputs(self.outputs, self.shape, self.box[0].start, self.num_classes, self.prob_dtype)
        self.provenance_path = self.output_dir / f"{stem}.provenance.json"
        self.progress_dir = self.output_dir / f".{stem}.progress"
        self.progress = SlabProgress(self.progress_dir)
        self.slabs = [(z, min(z + self.slab, self.box[0].stop)) for z in range(self.box[0].start, self.box[0].stop, self.slab)]
        self.provenance = {**(predictor.provenance() if predictor else {}), **(provenance or {})}
        self.runtime = dict(runtime or {}) or ({**predictor.runtime.as_dict(), "backend": predictor.backend.as_dict()} if predictor else {})
        self.overwrite = as_flag(overwrite)
        self.margin = int(margin)
        self.context = [self._context(axis, int(size_multiple)) for axis in (1, 2)]
        self.facts = self._facts()
        self.fingerprint = hashlib.sha256(json.dumps(self.facts, sort_keys=True, default=str).encode()).hexdigest()
        self.done: set[int] | None = None
        self.computed = 0
        self._started = time.time()

    def _facts(self) -> dict:
        """Everything that changes the output bytes; equal facts mean slabs of two sessions may share a file.

        The model counts by its sha256, not by the path it was named by (recorded in provenance only).
        """
        stat = self.volume.path.stat()
        provenance = {k: v for k, v in self.provenance.items() if k != "model"}
        return json.loads(json.dumps({
            "input": str(self.volume.path.resolve()) + (f"::{self.volume.key}" if getattr(self.volume, "key", "") else ""),
            "size": stat.st_size,
            "mtime": stat.st_mtime_ns,
            "box": [[s.start, s.stop] for s in self.box],
            "slab": self.slab,
            "halo": self.z_halo,
            "margin": self.margin,
            "outputs": sorted(self.outputs),
            "prob_dtype": self.prob_dtype.name,
            **provenance,
        }, default=str))

    def scan(self) -> set[int]:
        """The slabs finished by an earlier session with the same facts (`SlabProgress.finished`), read once."""
        if self.done is None:
            self.done = self.progress.finished(self.facts, self.partials, self.slabs, self.overwrite, self.input_path.name)
        return self.done

    def required_bytes(self) -> int:
        """Disk space the outputs still need: their full size, less what finished slabs already hold."""
        total = sum(self.partials.sizes().values())
        done = self.scan()
        if not done:
            return total
        depth = self.shape[0]
        finished = sum(self.slabs[i][1] - self.slabs[i][0] for i in done)
        return int(total * (depth - finished) / depth)

    def _check_free_space(self) -> None:
        needed = self.required_bytes()
        free = shutil.disk_usage(self.output_dir).free
        if needed > free:
            per_voxel = {name: size / int(np.prod(self.shape)) for name, size in self.partials.sizes().items()}
            costs = ", ".join(f"{name} {per_voxel[name]:g} B/voxel" for name in self.outputs)
            savers = [f"--save_{'probabilities' if n == 'prob' else n} False" for n in ("prob", "uncertainty") if n in self.outputs]
            raise OutputError(
                errno.ENOSPC,
                f"{self.output_dir}: this run writes {_gib(needed)} ({costs}) but only {_gib(free)} is free. "
                f"Free some space, choose another --output_dir"
                + (f", or shrink the outputs with {' / '.join(savers)}" if savers else "")
                + (", --prob_dtype uint8" if "prob" in self.outputs and self.prob_dtype != np.uint8 else "")
                + ", or segment a sub-box with --roi. Nothing was written.",
            )

    def prepare(self) -> None:
        """Check space and settings, lock the folder, create (or pick up) the partial outputs."""
        rank = idist.get_rank()
        if rank == 0:
            ensure_writable_dir(self.output_dir)
            done = self.scan()
            self._check_free_space()
            self.progress.lock(
                f"{self.output_dir}: another inference run is writing {self.input_path.name} into this folder; "
                "wait for it to finish or choose another --output_dir."
            )
            if done:
                for index in set(self.progress.markers()) - done:
                    self.progress.forget(index)
            else:
                self.progress.start_over(self.facts)
                self.partials.create()
        idist.barrier()
        if rank:
            self.done = set(self.progress.markers())
        if self.done:
            logger.info(
                "resuming %s: %d of %d slabs done, %d to go",
                self.input_path.name,
                len(self.done),
                len(self.slabs),
                len(self.slabs) - len(self.done),
            )

    def pending(self) -> list[int]:
        """Indices of the slabs this rank still has to segment (the finished ones are read from disk, not redone)."""
        rank, world = idist.get_rank(), idist.get_world_size()
        done = self.scan()
        return [i for i in range(len(self.slabs)) if i % world == rank and i not in done]

    def _context(self, axis: int, step: int) -> tuple[int, int]:
        """(start, stop) in volume coordinates of what is read along y or x: the box, aligned and widened by the margin."""
        box = self.box[axis]
        if not self.margin:
            return box.start, box.stop
        start = max(0, box.start // step * step - self.margin)
        return start, min(self.volume.shape[axis], -(-box.stop // step) * step + self.margin)

    def read(self, index: int) -> np.ndarray:
        """Grey values of slab `index` with its z halo and y/x context, [Z + 2*halo, Y', X']."""
        z0, z1 = self.slabs[index]
        (y0, y1), (x0, x1) = self.context
        data = read_with_halo(self.volume, z0, z1, self.z_halo, slice(y0, y1), slice(x0, x1))
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            bad = np.argwhere(~np.isfinite(data))[0]
            raise VolumeError(
                f"{self.input_path}: NaN or infinite grey values, first at z {int(bad[0]) + z0 - self.z_halo} "
                f"(slab {z0}-{z1}); replace them (e.g. with the matrix grey level) before segmenting."
            )
        return data

    def _planes(self, logits: torch.Tensor, postprocessing: Callable[[dict], dict]) -> dict[str, np.ndarray]:
        """The output arrays of [C, Z, Y, X] logits, computed a few planes at a time to bound temporaries.

        `postprocessing` (the config's chain) maps {"pred": logits} to probabilities under "pred", labels
        under "label" and, where the uncertainty is written, the normalised entropy under "uncertainty".
        """
        _, depth, height, width = logits.shape
        planes = {"seg": np.empty((depth, height, width), np.uint8)}
        if "prob" in self.outputs:
            planes["prob"] = np.empty((self.num_classes, depth, height, width), self.prob_dtype)
        if "uncertainty" in self.outputs:
            planes["uncertainty"] = np.empty((depth, height, width), np.uint8)
        step = max(1, 2**22 // (height * width))
        for z in range(0, depth, step):
            result = postprocessing({"pred": logits[:, z : z + step].float()})
            planes["seg"][z : z + step] = torch.as_tensor(result["label"]).to(torch.uint8).numpy()
            if "prob" in planes:
                probabilities = torch.as_tensor(result["pred"])
                if self.prob_dtype == np.uint8:
                    planes["prob"][:, z : z + step] = torch.round(probabilities * 255).to(torch.uint8).numpy()
                else:
                    planes["prob"][:, z : z + step] = probabilities.numpy()
            if "uncertainty" in planes:
                entropy = torch.as_tensor(result["uncertainty"])
                planes["uncertainty"][z : z + step] = torch.round(entropy.clamp(0, 1) * 255).to(torch.uint8).numpy()
        return planes

    def write(self, index: int, logits: torch.Tensor, postprocessing: Callable[[dict], dict]) -> None:
        """Write slab `index` from its [C, Z, Y, X] logits (`PartialOutputs.write`: positioned, flushed), then mark it
        done. A failed write (full disk, I/O error) leaves the slab unmarked, so the same command redoes it."""
        (y0, _), (x0, _) = self.context
        dy, dx = self.box[1].start - y0, self.box[2].start - x0
        planes = self._planes(logits[:, :, dy : dy + self.shape[1], dx : dx + self.shape[2]], postprocessing)
        digests = self.partials.write(*self.slabs[index], planes, self.required_bytes)
        self.progress.mark(index, digests)
        self.done.add(index)
        self.computed += 1

    def finalize(self) -> dict[str, Path]:
        """Final names and formats (`publish_outputs`), provenance, progress folder removed (rank 0)."""
        idist.barrier()
        rank = idist.get_rank()
        if rank != 0:
            return dict(self.outputs)
        missing = sorted(set(range(len(self.slabs))) - set(self.progress.markers()))
        if missing:
            raise RuntimeError(f"{self.input_path}: slabs {missing[:5]} were not segmented; run the same command again to finish.")
        voxel = self.volume.meta.get("voxel_size", self.volume.meta.get("VOXEL_SIZE", 1.0))
        voxel = [float(v) for v in voxel] if isinstance(voxel, (list, tuple)) else [float(voxel)] * 3
        final = publish_outputs(
            self.partials, self.partials.infos(self.volume.meta), self.output_ext,
            self.output_dir / f"{volume_stem(self.input_path)}{self.output_ext}", self.class_names, voxel,
            lambda: sum(self.partials.sizes().values()),
        )
        elapsed = time.time() - self._started
        record = {
            **self.provenance,
            "runtime": self.runtime,
            "input": self.facts["input"],
            "roi_zyx": [[s.start, s.stop] for s in self.box],
            "outputs": {k: str(v) for k, v in final.items()},
            "voxels": int(np.prod(self.shape)),
            "seconds_last_session": round(elapsed, 3),
            "slabs": len(self.slabs),
            "slabs_computed_last_session": self.computed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "monai": monai.__version__},
        }
        write_atomically(self.provenance_path, json.dumps(record, indent=2, default=str) + "\n")
        self.progress.release()
        return final


class StreamedSlabDataset(torch.utils.data.Dataset):
    """The pending slabs of a `StreamedSegmentation`, each {"image": [1, Z + 2*halo, Y, X], "slab": index}.

    The plan is the slabs still to do, read from the progress markers (without writing) when the
    run starts, so a resumed epoch is exactly the pending slabs. Before that the dataset has no
    length (`len` raises `TypeError`, which MONAI's Workflow takes as "unknown"), so building the
    evaluator reads no volume.
    `transform` is the bundle's `preprocessing` (MONAI dictionary transforms on "image"), the
    same chain evaluation applies.
    """

    def __init__(self, stream: StreamedSegmentation, transform: Callable[[dict], dict] | None = None) -> None:
        self.stream = stream
        self.transform = transform
        self.indices: list[int] | None = None
        self.started = False

    def _plan(self) -> list[int]:
        if self.indices is None:
            self.indices = self.stream.pending()
        return self.indices

    def __len__(self) -> int:
        if not self.started:  # MONAI's Workflow asks at construction; without a length it leaves the epoch to Ignite
            raise TypeError("the pending slabs are known once the run starts (StreamedWriter.started)")
        return len(self._plan())

    def __getitem__(self, i: int) -> dict:
        index = self._plan()[i]
        item = {"image": self.stream.read(index)[None]}
        if self.transform is not None:
            item = self.transform(item)
        return {"image": convert_to_tensor(item["image"], dtype=torch.float32, track_meta=False), "slab": index}


class StreamedWriter:
    """Evaluator handler: prepares the outputs at start, writes each slab as it completes, finalises at the end.

    Also shows a progress bar with voxels/s and the time left.

    Args:
        stream: the `StreamedSegmentation`.
        dataset: its `StreamedSlabDataset` (planned after `prepare`).
        postprocessing: the config's chain from {"pred": logits} to probabilities, "label" and "uncertainty".
        progress: show a tqdm progress bar.
    """

    def __init__(
        self, stream: StreamedSegmentation, dataset: StreamedSlabDataset, postprocessing: Callable[[dict], dict], progress: bool = True
    ) -> None:
        self.stream = stream
        self.dataset = dataset
        self.postprocessing = postprocessing
        self.progress = as_flag(progress)
        self._bar = None
        self.outputs: dict[str, Path] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.failed)

    def started(self, engine: Engine | None) -> None:
        self.dataset.started = True
        self.stream.prepare()
        pending = self.dataset._plan()
        if self.progress and idist.get_rank() == 0:
            from tqdm import tqdm

            plane = self.stream.shape[1] * self.stream.shape[2]
            total = sum(self.stream.slabs[i][1] - self.stream.slabs[i][0] for i in pending) * plane
            self._bar = tqdm(total=total, unit="vox", unit_scale=True, desc=f"segmenting {self.stream.input_path.name}")

    def run(self, evaluator: Engine) -> None:
        """Run `evaluator` over the pending slabs, or only prepare and finalise when none is left."""
        self.dataset.started = True
        if len(self.dataset):
            evaluator.run()
        else:
            self.run_without_slabs()

    def run_without_slabs(self) -> None:
        """Prepare and finalise when this rank has no slab left to segment (an earlier session did them all).

        Ignite does not run an engine with nothing to iterate, so none of the events above would fire:
        the outputs would stay partial, and under DDP the other ranks would wait at the barriers.
        """
        self.started(None)
        self.completed(None)

    def iteration_completed(self, engine: Engine) -> None:
        predictions = engine.state.output["pred"] if isinstance(engine.state.output, dict) else [o["pred"] for o in engine.state.output]
        slabs = engine.state.batch["slab"]
        for logits, index in zip(predictions, slabs):
            index = int(index)
            self.stream.write(index, logits.detach().cpu(), self.postprocessing)
            if self._bar is not None:
                z0, z1 = self.stream.slabs[index]
                self._bar.update((z1 - z0) * self.stream.shape[1] * self.stream.shape[2])

    def failed(self, engine: Engine, error: BaseException) -> None:
        """Close the progress bar and unlock the folder (its markers stay for the next run), then let the error through."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.stream.progress.unlock()
        raise error

    def completed(self, engine: Engine | None) -> None:
        if self._bar is not None:
            self._bar.close()
        self.outputs = self.stream.finalize()
        if idist.get_rank() == 0:
            logger.info("wrote %s", ", ".join(str(p) for p in self.outputs.values()))
