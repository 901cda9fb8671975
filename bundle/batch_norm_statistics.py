"""A trained model's batch-norm statistics re-estimated over many batches of its training data ("precise BN").

Training keeps exponential running statistics with the paper's momentum 0.5: each update halves
the weight of all before it, so a trained model normalises with the statistics of its last
two or three batches, crops of a few volumes of a varied family. One pass over many training
batches (no gradient, dropout and noise off, a cumulative average) gives the statistics of the
whole training distribution instead; the weights stay as they are.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .adaptation import adapt_batch_norm
from .checkpoints import CheckpointError, read_model_sidecar, sidecar_of
from .io import atomic_output, write_atomically

__all__ = ["write_precise_statistics"]

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
