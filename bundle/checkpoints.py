"""Weights in and out: strict loading with clear errors, and the sidecar that travels with a model.

A model is `model.pt` (a plain state dict, what MONAI's `CheckpointLoader` and
`monai.bundle.load` expect) plus `model.json` beside it: the grey window used to normalise its
training data and the network's hyperparameters, so inference normalises the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from .flags import as_flag
from .io import write_atomically
from .launcher import config_file_list
from .networks import widened
from .variants import variant_config_names

__all__ = [
    "CheckpointError",
    "EpochCheckpoint",
    "ModelSidecarWriter",
    "ReplacingDiskSaver",
    "ResumeFromCheckpoint",
    "file_sha256",
    "load_weights",
    "read_model_sidecar",
    "sidecar_of",
    "variant_of",
    "width_of",
]

logger = logging.getLogger(__name__)
DEFAULT_SIDECAR = {"grey_window": [0.0, 255.0], "grey_percentiles": None}


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit the network."""


def load_weights(
    network: torch.nn.Module, path: str | os.PathLike | None, hint: str = "", device: torch.device | str | None = None,
    widen: bool = False,
) -> torch.nn.Module:
    """Load a state dict into `network`, every key and shape matching, or raise naming the file; then move it to `device`.

    `path` None leaves the weights as they are (no pretrained weights). A full training
    checkpoint (a dict with a "model" entry) is accepted too. `widen` lets a narrower model (a
    2D one, a smaller `f0`) start this one, computing what it did (`bundle.networks.widened`).
    """
    if path is None or str(path) == "":
        return network if device is None else network.to(device)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. {hint}".strip())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupted? {type(err).__name__}: {str(err)[:200]}). {hint}".strip()
        ) from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    target = network.module if hasattr(network, "module") else network
    own = target.state_dict()
    if as_flag(widen):
        try:
            state = widened(state, target)
        except ValueError as err:
            raise CheckpointError(f"{path}: cannot widen into this network: {err} {hint}".strip()) from err
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path}: checkpoint does not fit the network (a model of another variant or size?). "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}, "
            f"shape mismatches {mismatched[:3]}. {hint}".strip()
        )
    target.load_state_dict(state, strict=True)
    logger.info("loaded all %d tensors of %s", len(own), path)
    return network if device is None else network.to(device)


def file_sha256(path: str | os.PathLike, hint: str = "") -> str:
    """The sha256 of a file's bytes: what identifies a model, whatever its path."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: checkpoint not found. {hint}".strip())
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_of(checkpoint: str | os.PathLike) -> Path:
    """`models/model.pt` -> `models/model.json`."""
    return Path(checkpoint).with_suffix(".json")


_INFERENCE_HPARAMS = ("spatial_dims", "in_channels", "out_channels", "f0", "u_depth", "down", "up", "conv", "norm", "residual")


def read_model_sidecar(checkpoint: str | os.PathLike, variant: str | None = None, network: dict | None = None) -> dict:
    """The sidecar of a checkpoint, or the uint8 defaults (grey window [0, 255]) when it has none.

    With `variant` and `network` (the config's), a sidecar that records another variant or other
    network hyperparameters is refused here, naming both, before any weight is loaded.
    """
    path = sidecar_of(checkpoint)
    if not path.is_file():
        logger.warning("%s not found: assuming uint8 input normalised by /255.", path)
        return dict(DEFAULT_SIDECAR)
    try:
        sidecar = {**DEFAULT_SIDECAR, **json.loads(path.read_text())}
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: model sidecar is not valid JSON ({err}).") from err
    recorded_variant, recorded_net = sidecar.get("variant"), sidecar.get("network") or {}
    differences = []
    if variant is not None and recorded_variant is not None and recorded_variant != variant:
        differences.append(f"variant: model {recorded_variant}, config {variant}")
    for key in _INFERENCE_HPARAMS:
        if network is not None and key in recorded_net and key in network and recorded_net[key] != network[key]:
            differences.append(f"{key}: model {recorded_net[key]!r}, config {network[key]!r}")
    if differences:
        overlays = [f"configs/{name}" for name in variant_config_names(recorded_variant)] if recorded_variant else []
        merge = config_file_list(["configs/inference.json", *overlays])
        raise CheckpointError(
            f"{checkpoint}: the model (see {path.name}) does not match this config: {'; '.join(differences)}."
            + (f" Merge the overlay of its variant: --config_file \"{merge}\"." if overlays else "")
        )
    return sidecar


def variant_of(checkpoint: str | os.PathLike) -> str:
    """The variant a checkpoint was trained as (its sidecar's); "2d" for a sidecar from before variants were recorded."""
    return read_model_sidecar(checkpoint).get("variant") or "2d"


def width_of(checkpoint: str | os.PathLike, given: int | None = None) -> int:
    """`given` (a study's `--f0`) when there is one, else the `f0` a checkpoint was trained with (its sidecar's); 16, the
    paper's, for a sidecar that does not record it."""
    if given is not None:
        return int(given)
    return int((read_model_sidecar(checkpoint).get("network") or {}).get("f0", 16))


def pretrained_grey_percentiles(pretrained: str | os.PathLike | None) -> list[float] | None:
    """The `grey_percentiles` a pretrained model was trained with (its sidecar), so that fine-tuning feeds it the grey
    values it learnt on; None without pretrained weights or without a sidecar."""
    if not pretrained or not sidecar_of(pretrained).is_file():
        return None
    return read_model_sidecar(pretrained).get("grey_percentiles")


class ModelSidecarWriter:
    """Writes `model.json` into the checkpoint folder when training starts (rank 0 only).

    The grey rule is read from `grey` then, not when the config is built, so a config resolves with
    no data on disk and a dataset without its files fails before the first step.

    Args:
        ckpt_dir: folder of `model.pt`.
        grey: the training data's grey rule (`bundle.data.DatasetGrey`): its `grey_window`, [low, high] grey
            values mapped to [0, 1], and `grey_percentiles`, each volume's own percentiles mapped first, or None.
        network: the network trained (its `hparams` go into the sidecar).
        variant: "2d", "2.5d" or "3d".
        runtime: how training computed (`bundle.runtime.Runtime`): device, precision, CPU class.
        precise_bn_batches: training batches the batch-norm statistics are re-estimated over before each validation
            (`bundle.batch_norm_statistics.PreciseStatisticsBeforeValidation`); 0 for none, and then not recorded.
    """

    def __init__(self, ckpt_dir: str, grey, network: torch.nn.Module, variant: str, runtime=None, precise_bn_batches: int = 0) -> None:
        self.path = Path(ckpt_dir) / "model.json"
        self.grey, self.runtime, self.precise_bn_batches = grey, runtime, int(precise_bn_batches)
        self.hparams = dict((network.module if hasattr(network, "module") else network).hparams)
        self.variant = variant

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def content(self) -> dict:
        content = {"grey_window": [float(v) for v in self.grey.grey_window], "network": self.hparams, "variant": self.variant}
        if self.grey.grey_percentiles is not None:
            content["grey_percentiles"] = [float(v) for v in self.grey.grey_percentiles]
        if self.runtime is not None:
            content["training_runtime"] = self.runtime.as_dict()
        if self.precise_bn_batches:
            content["batch_norm_statistics"] = {"batches": self.precise_bn_batches, "when": "before each validation"}
        return content

    def __call__(self, engine: Engine) -> None:
        content = self.content()
        if idist.get_rank() == 0:
            write_atomically(self.path, json.dumps(content, indent=2) + "\n")


class ReplacingDiskSaver(DiskSaver):
    """Ignite's atomic `DiskSaver` for a checkpoint kept under one fixed name.

    Ignite's `Checkpoint` removes the file it supersedes before it writes the new one. Under a fixed
    name that is the same file, so a run killed in between would be left without its model; the
    atomic replace overwrites it instead, and `remove` does nothing. MONAI's `CheckpointSaver` is not
    used because it writes with `atomic=False` and removes first: a kill during a save loses the
    best model or leaves it truncated.
    """

    def remove(self, filename: str) -> None:
        return None


class EpochCheckpoint:
    """Ignite `Checkpoint` of `save_dict` to `<ckpt_dir>/<filename>` at each epoch end of the engine it is attached to.

    With `metric_name` (attach to the validation evaluator) it keeps the best model: it saves only
    when that metric improves on the best so far, and its `state_dict` (the best value) goes into
    the resumable checkpoint so a resumed run does not overwrite a better model with a worse one.
    Without it (attach to the trainer) it saves every epoch, with the trainer added to `save_dict`.

    Args:
        ckpt_dir: folder of the checkpoint.
        filename: its fixed name, e.g. "model.pt" or "checkpoint.pt".
        save_dict: objects with `state_dict()`; one object is saved as its plain state dict.
        metric_name: key metric of the evaluator, higher is better.
    """

    def __init__(self, ckpt_dir: str, filename: str, save_dict: dict, metric_name: str | None = None) -> None:
        self.metric_name = metric_name
        self.checkpoint = Checkpoint(
            dict(save_dict),
            ReplacingDiskSaver(ckpt_dir, require_empty=False),
            filename_pattern=filename,
            n_saved=1,
            score_function=(lambda engine: float(engine.state.metrics[metric_name])) if metric_name else None,
            score_name=metric_name,
        )
        self.path = Path(ckpt_dir) / filename

    def attach(self, engine: Engine) -> None:
        if self.metric_name is None:
            self.checkpoint.to_save["trainer"] = engine
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.checkpoint(engine)
        if self.metric_name is not None and self.checkpoint.state_dict()["_saved"][-1][0] == float(engine.state.metrics[self.metric_name]):
            logger.info("best %s %.4f: %s", self.metric_name, engine.state.metrics[self.metric_name], self.path)

    def state_dict(self) -> dict:
        return self.checkpoint.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.checkpoint.load_state_dict(state)


class ResumeFromCheckpoint:
    """With `enabled`, restores `<ckpt_dir>/checkpoint.pt` (and the trainer it is attached to) when training starts.

    A missing checkpoint fails when the handler is built, before any training step.

    Args:
        enabled: resume or not (the config's `resume`).
        ckpt_dir: folder of `checkpoint.pt`.
        load_dict: objects to restore besides the trainer.
        map_location: device to map the tensors to.
    """

    def __init__(self, enabled: bool, ckpt_dir: str, load_dict: dict, map_location=None) -> None:
        self.enabled = as_flag(enabled)
        self.path = Path(ckpt_dir) / "checkpoint.pt"
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        if self.enabled and not self.path.is_file():
            raise CheckpointError(
                f"{self.path}: nothing to resume from. Start without '--resume true', or point '--ckpt_dir' (or "
                "'--output_dir') at the folder of the interrupted run."
            )

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            from monai.handlers import CheckpointLoader

            loader = CheckpointLoader(str(self.path), {**self.load_dict, "trainer": engine}, map_location=self.map_location)
            loader.attach(engine)
