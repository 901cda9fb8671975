"""A trained model's batch-norm statistics re-estimated over many batches of its training data ("precise BN").

Training keeps exponential running statistics with the paper's momentum 0.5: each update halves
the weight of all before it, so a trained model normalises with the statistics of its last
two or three batches, crops of a few volumes of a varied family. One pass over many training
batches (no gradient, dropout and noise off, a cumulative average) gives the statistics of the
whole training distribution instead; the weights stay as they are. `run precise_bn` does it once
after training; `PreciseStatisticsBeforeValidation` before each validation, so the checkpoint is
chosen (and saved) on the statistics it will be used with.
"""

from __future__ import annotations

import json
import logging
import random
import time
from contextlib import contextmanager
from itertools import chain, islice, repeat
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from .adaptation import adapt_batch_norm
from .checkpoints import CheckpointError, read_model_sidecar, sidecar_of
from .io import atomic_output, write_atomically

__all__ = ["PreciseStatisticsBeforeValidation", "write_precise_statistics"]

logger = logging.getLogger(__name__)


def write_precise_statistics(network: torch.nn.Module, dataset, loader, pretrained: str | None, ckpt_dir: str, dataset_dir: str) -> Path:
    """`pretrained` with its batch-norm statistics re-estimated over every batch of `loader` (one epoch of the training
    crops: `steps_per_epoch` batches of `batch_size`), written to `ckpt_dir`/model.pt with its sidecar, which records
    how (`batch_norm_statistics`). `network` holds `pretrained`'s weights; `dataset` is the loader's, planned here so
    that bad data fails before the pass."""
    if not pretrained:
        raise CheckpointError("precise_bn re-estimates the statistics of a trained model: give it with --pretrained MODEL.pt.")
    target = Path(ckpt_dir) / "model.pt"
    if target.resolve() == Path(pretrained).resolve():
        raise CheckpointError(f"{target}: would overwrite --pretrained; choose another --output_dir.")
    dataset.plan()
    started = time.time()
    adapt_batch_norm(network, (batch["image"] for batch in loader))
    seconds = time.time() - started
    read_model_sidecar(pretrained)  # refuses a sidecar that is not valid JSON, naming it
    sidecar = json.loads(sidecar_of(pretrained).read_text()) if sidecar_of(pretrained).is_file() else {}
    sidecar["batch_norm_statistics"] = {
        "from": str(pretrained), "dataset_dir": str(dataset_dir), "batches": len(loader),
        "crops": len(dataset), "seconds": round(seconds, 1),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        torch.save((network.module if hasattr(network, "module") else network).state_dict(), tmp)
    write_atomically(sidecar_of(target), json.dumps(sidecar, indent=2) + "\n")
    logger.info("batch-norm statistics of %s over %d batches (%d crops) in %.0f s: %s", pretrained, len(loader), len(dataset), seconds, target)
    return target


def _random_streams(dataset) -> list[np.random.RandomState]:
    """Every MONAI `Randomizable.R` reachable from `dataset` through attributes, lists, tuples and dicts, as MONAI's
    DataLoader seeds them: a dictionary transform holds an array transform with a stream of its own, and a Compose
    its transforms (walked here: `Compose.flatten()` builds a Compose, which re-seeds every transform it holds)."""
    streams, seen, todo = [], set(), [dataset]
    while todo:
        part = todo.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        if isinstance(part, (list, tuple)):
            todo.extend(part)
        elif isinstance(part, dict):
            todo.extend(part.values())
        elif hasattr(part, "__dict__"):
            if hasattr(part, "set_random_state") and isinstance(getattr(part, "R", None), np.random.RandomState):
                streams.append(part.R)
            todo.extend(vars(part).values())
    return streams


@contextmanager
def untouched_random_streams(dataset):
    """Whatever is drawn inside leaves the random streams as they were: torch's, NumPy's and Python's global ones
    (a loader's worker seeds come from torch's) and those of `dataset` and its transforms."""
    streams = _random_streams(dataset)
    saved = (torch.get_rng_state(), np.random.get_state(), random.getstate(), [stream.get_state() for stream in streams])
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        for stream, state in zip(streams, saved[3]):
            stream.set_state(state)


def _batches(loader, count: int):
    """`count` batches of `loader`, passing over it again (fresh random crops) when one pass has fewer."""
    return islice(chain.from_iterable(repeat(loader)), count)


class PreciseStatisticsBeforeValidation:
    """Before each validation (every `interval` epochs, attached ahead of the `ValidationHandler`), the batch-norm
    statistics re-estimated over `batches` batches of `loader` (the training's), so the validation score, the best
    checkpoint and the model saved are those of the statistics of the training distribution, not of the last two or
    three batches. The pass leaves every random stream as it found it and training normalises with batch statistics,
    so training draws the same crops and takes the same steps as without it. `batches` 0 attaches nothing."""

    def __init__(self, loader, batches: int, interval: int) -> None:
        if int(batches) < 0 or int(interval) < 1:
            raise ValueError(f"--precise_bn_batches {batches} must be >= 0 and --val_interval {interval} >= 1")
        self.loader, self.batches, self.interval = loader, int(batches), int(interval)

    def attach(self, engine: Engine) -> None:
        if self.batches:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        started = time.time()
        with untouched_random_streams(self.loader.dataset):
            adapt_batch_norm(engine.network, (batch["image"] for batch in _batches(self.loader, self.batches)))
        logger.info("epoch %d: batch-norm statistics over %d training batches in %.0f s", engine.state.epoch, self.batches, time.time() - started)
