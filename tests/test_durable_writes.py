"""A disk that fills mid-run: the error names the file and what is still needed, no slab is marked done that is not
written in full, and the same command resumed after space is freed gives the uninterrupted run's bytes."""

import errno
import hashlib
import os
import re
import subprocess

import pytest
from conftest import run_workflow

from bundle.errors import OutputError, root_cause
from bundle.io import atomic_path
from bundle.phantom import make_phantom

OUTPUTS = ("phantom.seg.raw", "phantom.uncertainty.raw", "phantom.prob.raw")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def segment(dataset, output, model, **extra):
    return run_workflow("inference", ["inference.json"], input_path=dataset / "phantom.raw", output_dir=output, ckpt_path=model, slab=8,
                        save_probabilities=True, prob_dtype="float16", **extra)


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, models, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    segment(tiny_dataset, out, models["2.5d"])
    return {name: sha256(out / name) for name in OUTPUTS}


def test_a_short_write_then_enospc_half_way_through_a_slab_resumes_to_the_same_bytes(tiny_dataset, models, uninterrupted, tmp_path, monkeypatch):
    real_pwrite = os.pwrite
    written = {"bytes": 0, "short": 0}
    budget = 3 * 8 * 64 * 64 + 4 * 64 * 64  # the seg file's first three slabs, then half of the fourth's planes

    def faulty(fd, data, offset):
        view = memoryview(data).cast("B")
        if written["short"] < 2:  # the kernel may write fewer bytes than asked
            written["short"] += 1
            view = view[: max(1, len(view) // 3)]
        room = budget - written["bytes"]
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = real_pwrite(fd, view[:room], offset)
        written["bytes"] += count
        return count

    monkeypatch.setattr(os, "pwrite", faulty)
    with pytest.raises(Exception) as caught:
        segment(tiny_dataset, tmp_path, models["2.5d"])
    monkeypatch.undo()
    error = root_cause(caught.value)
    message = str(error)
    assert isinstance(error, OutputError) and error.errno == errno.ENOSPC
    assert re.search(r"/\.phantom\.(seg|prob|uncertainty)\.raw\.partial: writing failed \(No space left on device\) with ", message)
    assert "MiB still to write; free some space (or choose another --output_dir); then run the same command again" in message
    markers = sorted(p.name for p in (tmp_path / ".phantom.progress").glob("slab_*"))
    assert len(markers) < 6, markers  # 6 slabs of 8: the slab that hit the full disk is not marked
    segment(tiny_dataset, tmp_path, models["2.5d"])
    assert {name: sha256(tmp_path / name) for name in OUTPUTS} == uninterrupted


def test_a_slab_marked_done_whose_bytes_were_lost_is_segmented_again(tiny_dataset, models, uninterrupted, tmp_path, monkeypatch, capfd):
    from bundle.inference import StreamedSegmentation

    real_write = StreamedSegmentation.write

    def killed_after_three(self, index, *args):
        if len(self.done) == 3:
            raise KeyboardInterrupt("killed")
        real_write(self, index, *args)

    monkeypatch.setattr(StreamedSegmentation, "write", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        segment(tiny_dataset, tmp_path, models["2.5d"])
    monkeypatch.undo()
    partial = atomic_path(tmp_path / "phantom.seg.raw")
    with open(partial, "r+b") as f:  # what a torn write leaves: the marker of slab 1 vouches for bytes that are zeros
        f.seek(8 * 64 * 64)
        f.write(bytes(8 * 64 * 64))
    capfd.readouterr()
    segment(tiny_dataset, tmp_path, models["2.5d"])
    assert "slabs [1] are marked done but their bytes differ; they are segmented again" in capfd.readouterr().out
    assert {name: sha256(tmp_path / name) for name in OUTPUTS} == uninterrupted


def test_a_real_full_tmpfs_then_freed_gives_the_uninterrupted_bytes(models, tmp_path, monkeypatch):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        data = tmp_path / "data"
        make_phantom(data, (40, 128, 128), seed=5)
        settings = dict(input_path=data / "phantom.raw", ckpt_path=models["2.5d"], slab=8, save_uncertainty=False)
        run_workflow("inference", ["inference.json"], output_dir=tmp_path / "whole", **settings)
        from bundle.inference import StreamedSegmentation

        real_write = StreamedSegmentation.write

        def fill_after_two(self, index, *args):
            if len(self.done) == 2 and not (mount / "filler").exists():
                free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
                (mount / "filler").write_bytes(bytes(free - 8 * 128 * 64))  # room for half a slab
            real_write(self, index, *args)

        monkeypatch.setattr(StreamedSegmentation, "write", fill_after_two)
        with pytest.raises(Exception) as caught:
            run_workflow("inference", ["inference.json"], output_dir=mount / "out", **settings)
        monkeypatch.undo()
        assert re.search(r"small_disk/out/.phantom.seg.raw.partial: writing failed \(No space left on device\)", str(root_cause(caught.value)))
        (mount / "filler").unlink()
        run_workflow("inference", ["inference.json"], output_dir=mount / "out", **settings)
        assert sha256(mount / "out" / "phantom.seg.raw") == sha256(tmp_path / "whole" / "phantom.seg.raw")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
