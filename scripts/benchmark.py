"""Benchmarks behind docs/: parameter counts, forward-pass time, streamed inference speed and peak memory.

    python scripts/benchmark.py params
    python scripts/benchmark.py forward --size 160 --repeats 20
    python scripts/benchmark.py inference --shape '[256,512,512]'
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import torch

from bundle.networks import ModularUNet

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"2d": dict(spatial_dims=2, in_channels=1), "2.5d": dict(spatial_dims=2, in_channels=5), "3d": dict(spatial_dims=3, in_channels=1)}
ABLATIONS = {
    "default": {},
    "no dropout": dict(dropout=0.0),
    "no noise": dict(noise_std=0.0),
    "no residual": dict(residual=False),
    "no normalisation": dict(norm="none"),
    "layer norm": dict(norm="layer"),
    "separable": dict(conv="separable"),
    "rigid up/down": dict(down="rigid", up="rigid"),
    "depth 2": dict(u_depth=2),
    "depth 4": dict(u_depth=4),
}


def _count(**kwargs) -> int:
    return sum(p.numel() for p in ModularUNet(**kwargs).parameters() if p.requires_grad)


def params() -> None:
    """Trainable parameters of 2D / 2.5D / 3D for f0 in 8, 16, 32 and of each 2D f0=16 ablation, as JSON."""
    table = {variant: {f0: _count(f0=f0, **kwargs) for f0 in (8, 16, 32)} for variant, kwargs in VARIANTS.items()}
    table["ablations_2d_f0_16"] = {name: _count(**kwargs) for name, kwargs in ABLATIONS.items()}
    print(json.dumps(table, indent=2))


def forward(variant: str = "2d", f0: int = 16, size: int = 160, batch: int = 1, repeats: int = 20, threads: int | None = None) -> None:
    """Median seconds of an eval-mode forward pass of a [batch, C, size, size(, size)] input, under inference_mode."""
    if threads:
        torch.set_num_threads(threads)
    kwargs = VARIANTS[variant]
    net = ModularUNet(f0=f0, **kwargs).eval()
    x = torch.rand(batch, kwargs["in_channels"], *(size,) * kwargs["spatial_dims"])
    times = []
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    print(json.dumps({"variant": variant, "f0": f0, "input": list(x.shape), "threads": torch.get_num_threads(),
                      "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "repeats": repeats}))


def inference(shape: tuple = (256, 512, 512), ckpt_path: str | None = None, slab: int = 16, roi_size: tuple = (256, 256), work_dir: str | None = None, **overrides) -> None:
    """Streamed 2D inference on a phantom of `shape`: wall time, voxels/s and the child's peak RSS (ru_maxrss)."""
    from bundle.phantom import make_phantom

    work = Path(work_dir or tempfile.mkdtemp(prefix="xct_bench_"))
    data = work / "data"
    if not (data / "phantom.raw").exists():
        make_phantom(data, tuple(shape), seed=11)
    command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(ROOT / "configs" / "inference.json"),
               "--input_path", str(data / "phantom.raw"), "--output_dir", str(work / "out"), "--slab", str(slab),
               "--roi_size", json.dumps(list(roi_size)), "--progress", "False"]
    if ckpt_path:
        command += ["--ckpt_path", ckpt_path]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    voxels = int(shape[0]) * int(shape[1]) * int(shape[2])
    print(json.dumps({"shape_zyx": list(shape), "voxels": voxels, "seconds_incl_startup": round(seconds, 1),
                      "voxels_per_s": round(voxels / seconds), "peak_rss_mib": round(peak_kib / 1024, 1),
                      "slab": slab, "roi_size": list(roi_size), "threads": os.cpu_count(), **overrides}))


if __name__ == "__main__":
    fire.Fire({"params": params, "forward": forward, "inference": inference})
