"""The bookkeeping that lets a killed segmentation continue: facts stamp, per-slab markers, folder lock.

A slab's marker is written only after its bytes are written in full and flushed, and it holds
a digest of those bytes per output; a resumed run reads them back and recomputes any slab whose
marker is missing or whose bytes differ (a disk that filled, a torn write), so a finished
output is byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io import write_atomically

if TYPE_CHECKING:
    from .partial_outputs import PartialOutputs

__all__ = ["ResumeMismatchError", "SlabProgress", "digest", "pwrite_all"]

logger = logging.getLogger(__name__)


class ResumeMismatchError(RuntimeError):
    """Partial outputs in the folder were made with other settings or another model than this run."""


def digest(data: np.ndarray) -> str:
    """A short checksum of an array's bytes (BLAKE2b, 128 bits)."""
    return hashlib.blake2b(np.ascontiguousarray(data).data, digest_size=16).hexdigest()


def pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    """Write every byte of `data` at `offset`, looping on short writes; a write of nothing is a full disk."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


class SlabProgress:
    """The progress folder of one output: `fingerprint.json` (the facts), `slab_<i>` markers (digests), `lock`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = None

    @property
    def stamp(self) -> Path:
        return self.folder / "fingerprint.json"

    def recorded_facts(self) -> dict | None:
        try:
            return json.loads(self.stamp.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def markers(self) -> dict[int, dict]:
        """Slab index -> the digests its marker vouches for (an unreadable marker vouches for nothing)."""
        found = {}
        for path in self.folder.glob("slab_*") if self.folder.is_dir() else ():
            try:
                found[int(path.name.split("_")[1])] = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
        return found

    def finished(
        self, facts: dict, outputs: PartialOutputs, slabs: Sequence[tuple[int, int]], overwrite: bool, input_name: str
    ) -> set[int]:
        """Indices of `slabs` an earlier session with the same `facts` finished, read without writing anything.

        Empty when there is nothing to resume (no record, `overwrite`, or partial files missing or cut short).
        A slab whose bytes differ from its marker's digests is left out (segmented again, with a warning).
        Raises `ResumeMismatchError` naming the differing facts when the record is another configuration's.
        """
        recorded = self.recorded_facts()
        markers = self.markers()
        if recorded is None or overwrite or not outputs.intact():
            return set()
        if recorded != facts:
            differing = sorted(k for k in set(recorded) | set(facts) if recorded.get(k) != facts.get(k))
            details = "; ".join(f"{k}: was {recorded.get(k)!r}, now {facts.get(k)!r}" for k in differing[:6])
            (z0, z1), step = recorded.get("box", [[0, 0]])[0], int(recorded.get("slab", 1)) or 1
            raise ResumeMismatchError(
                f"{self.folder.parent}: holds a partial segmentation of {input_name} ({len(markers)} of "
                f"{len(range(z0, z1, step))} slabs done) made with other settings, which this run would mix into the same files: "
                f"{details}. Rerun with the earlier settings to finish it, or add --overwrite True to start over."
            )
        done = {i for i, digests in markers.items() if i < len(slabs) and digests == outputs.digests(*slabs[i])}
        torn = sorted(set(markers) - done)
        if torn:
            logger.warning("%s: slabs %s are marked done but their bytes differ; they are segmented again", self.folder.parent, torn[:8])
        return done

    def lock(self, busy_message: str) -> None:
        """Create the folder and hold its lock, or raise `RuntimeError(busy_message)` when another run holds it."""
        self.folder.mkdir(exist_ok=True)
        self._lock = open(self.folder / "lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise RuntimeError(busy_message) from None

    def start_over(self, facts: dict) -> None:
        """Forget every marker and record the facts of the run that now owns the outputs."""
        for marker in self.folder.glob("slab_*"):
            marker.unlink()
        write_atomically(self.stamp, json.dumps(facts, indent=1, sort_keys=True))

    def forget(self, index: int) -> None:
        (self.folder / f"slab_{index}").unlink(missing_ok=True)

    def mark(self, index: int, digests: dict[str, str]) -> None:
        """Record slab `index` as done; call only after its bytes are written and flushed."""
        write_atomically(self.folder / f"slab_{index}", json.dumps(digests, sort_keys=True))

    def unlock(self) -> None:
        """Let another run (or this process again) take the folder; the markers stay for it to resume from."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def release(self) -> None:
        """Unlock and remove the folder (the outputs are complete)."""
        self.unlock()
        shutil.rmtree(self.folder, ignore_errors=True)
