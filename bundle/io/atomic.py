"""Files appear whole or not at all: written under a temporary name in the same folder, flushed, then renamed.

A rename within one filesystem is atomic, and the bytes are flushed to the device (`fsync`)
before it, so neither a reader, a run killed half-way nor a power cut leaves a half-written
results file, checkpoint, figure or sidecar under the final name. A write that fails for want
of space or permission is an `OutputError` that names the file.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError

__all__ = ["atomic_output", "atomic_path", "durable_replace", "fsync_path", "write_atomically", "write_failure"]

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _gib(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**26 else f"{size / 2**20:.1f} MiB"


def write_failure(path: str | os.PathLike, err: OSError, still_needed: int | None = None, resumes: bool = False) -> OutputError:
    """The `OutputError` for a failed write of `path`: the cause, the bytes still to write, how to go on."""
    cause = err.strerror or str(err)
    needed = f" with {_gib(still_needed)} still to write" if still_needed is not None else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space (or choose another --output_dir)"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable --output_dir"
    else:
        fix = "check the disk"
    after = (
        "; then run the same command again: it resumes from the last slab written in full."
        if resumes
        else "; nothing under the final name was changed."
    )
    return OutputError(err.errno, f"{path}: writing failed ({cause}){needed}; {fix}{after}")


def atomic_path(path: str | os.PathLike) -> Path:
    """The fixed temporary name a streamed output is written under (found again by a resumed run)."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or every file and folder of a tree, to the device."""
    path = Path(path)
    paths = [path] if path.is_file() else [p for p in path.rglob("*")] + [path]
    for item in paths:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def durable_replace(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Flush `tmp`, rename it to `path`, and flush the folder so that the rename itself survives a power cut."""
    fsync_path(tmp)
    os.replace(tmp, path)
    try:
        fsync_path(Path(path).parent)
    except OSError:  # some filesystems refuse to fsync a folder; the rename is still atomic
        pass


@contextmanager
def atomic_output(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; flush and rename it to `path` when the block succeeds, remove it when it fails.

    `keep_suffix` ends the temporary name with the file's suffix, for writers that choose the
    format by it (matplotlib, nibabel). The name holds the process id, so two processes never
    write into one temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}" if keep_suffix else f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        durable_replace(tmp, path)
    except OSError as err:
        if err.errno in WRITE_ERRNOS and not isinstance(err, OutputError):
            raise write_failure(path, err) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomically(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to `path` through `atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
    return Path(path)
