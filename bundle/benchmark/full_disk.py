"""A disk that fills mid-run, for real: a small tmpfs as `--output_dir`, filled by another process once the run
has started writing, then freed; the same command resumes, and its labels are compared with an uninterrupted run's.

Needs the right to mount a tmpfs (root); the unit tests inject the same fault at the write call.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

from ..launcher import bundle_command
from ..runtime import machine_class

__all__ = ["full_disk_run"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inference(input_path: Path, output_dir: Path, ckpt_path: Path, slab: int, config: Path) -> subprocess.Popen:
    command = bundle_command("inference", [config], {
        "input_path": str(input_path), "output_dir": str(output_dir), "ckpt_path": str(ckpt_path), "slab": int(slab),
        "save_uncertainty": False, "progress": False,
    })
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _fill(folder: Path) -> int:
    """Write zeros into `folder` until the filesystem refuses; the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as f:
        block = bytes(2**16)
        while True:
            try:
                written += f.write(block)
            except OSError:
                return written


def full_disk_run(input_path: str | os.PathLike, ckpt_path: str | os.PathLike, config: str | os.PathLike, size_mib: int = 20, slab: int = 8,
                  fill_after: int = 3) -> dict:
    """Segment `input_path` into a `size_mib` tmpfs that another process fills once `fill_after` slabs are done, free it,
    run the same command again, and compare with an uninterrupted run (outside the tmpfs)."""
    input_path, ckpt_path, config = Path(input_path), Path(ckpt_path), Path(config)
    with tempfile.TemporaryDirectory(prefix="xct_full_disk_") as scratch:
        scratch = Path(scratch)
        started = time.time()
        reference = _inference(input_path, scratch / "whole", ckpt_path, slab, config)
        _, err = reference.communicate()
        if reference.returncode:
            raise RuntimeError(f"the uninterrupted run failed:\n{err[-3000:]}")
        reference_seconds = time.time() - started
        stem = input_path.name.split(".")[0]
        mount = scratch / "small_disk"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mount)], check=True, capture_output=True)
        try:
            out = mount / "out"
            run = _inference(input_path, out, ckpt_path, slab, config)
            progress = out / f".{stem}.progress"
            while len(list(progress.glob("slab_*"))) < fill_after and run.poll() is None:
                time.sleep(0.01)
            filled = _fill(mount)
            _, err = run.communicate()
            failed_line = err.rstrip().splitlines()[-1] if err.strip() else ""
            markers = len(list((out / f".{stem}.progress").glob("slab_*")))
            (mount / "filler").unlink()
            resumed = _inference(input_path, out, ckpt_path, slab, config)
            log, err = resumed.communicate()
            resume_line = next((line.split(" - ")[-1] for line in (log + err).splitlines() if f"resuming {input_path.name}" in line), "")
            identical = resumed.returncode == 0 and _sha256(out / f"{stem}.seg.raw") == _sha256(scratch / "whole" / f"{stem}.seg.raw")
        finally:
            subprocess.run(["umount", str(mount)], check=False, capture_output=True)
    return {
        "machine": machine_class(),
        "input": str(input_path.name),
        "tmpfs_mib": size_mib,
        "slab": slab,
        "filled_after_slabs": fill_after,
        "uninterrupted_seconds": round(reference_seconds, 1),
        "interrupted_rc": run.returncode,
        "filler_bytes": filled,
        "last_line_of_failed_run": failed_line.replace(str(mount), "<tmpfs>"),
        "slabs_marked_done_at_failure": markers,
        "resumed_rc": resumed.returncode,
        "resume_log": resume_line,
        "resumed_labels_identical": identical,
    }
