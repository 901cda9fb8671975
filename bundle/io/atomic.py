"""Files appear whole or not at all: written under a temporary name in the same folder, then renamed.

A rename within one filesystem is atomic, so a reader (or a run killed half-way) never sees a
half-written results file, checkpoint, figure or sidecar.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output", "atomic_path", "write_atomically"]


def atomic_path(path: str | os.PathLike) -> Path:
    """The fixed temporary name a streamed output is written under (found again by a resumed run)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


@contextmanager
def atomic_output(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds, remove it when it fails.

    `keep_suffix` ends the temporary name with the file's suffix, for writers that choose the
    format by it (matplotlib, nibabel). The name holds the process id, so two processes never
    write into one temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}" if keep_suffix else f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomically(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to `path` through `atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    return Path(path)
