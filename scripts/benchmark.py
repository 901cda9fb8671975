"""Benchmarks behind docs/: parameters, FLOPs, forward time, training steps/s, streamed inference speed and memory.

    python scripts/benchmark.py params
    python scripts/benchmark.py flops
    python scripts/benchmark.py matmul --dtype bfloat16
    python scripts/benchmark.py forward --size 160 --repeats 20
    python scripts/benchmark.py train-steps --variant 2d --bf16 True
    python scripts/benchmark.py inference --shape '[256,512,512]'
    python scripts/benchmark.py compare --shape '[16,512,512]' --ckpt_path models/model.pt
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
import numpy as np
import torch

from bundle.networks import ModularUNet
from bundle.variants import VARIANT_NETWORK, ablation_overlays, network_kwargs

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = VARIANT_NETWORK
ABLATIONS = {name: network_kwargs("2d", overlay) for name, overlay in ablation_overlays().items()}


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


def _flops_per_voxel(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / (x.shape[0] * x[0, 0].numel())


def flops(variant: str = "2d", f0: int = 16, size: int = 160) -> None:
    """Counted forward FLOPs per output voxel (torch's FlopCounterMode: 2 per multiply-add)."""
    kwargs = VARIANTS[variant]
    x = torch.rand(1, kwargs["in_channels"], *(size,) * kwargs["spatial_dims"])
    print(json.dumps({"variant": variant, "f0": f0, "input": list(x.shape), "flops_per_voxel": round(_flops_per_voxel(ModularUNet(f0=f0, **kwargs).eval(), x))}))


def _matmul_flops(size: int, dtype: torch.dtype, repeats: int) -> float:
    a, b = torch.rand(size, size, dtype=dtype), torch.rand(size, size, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def matmul(size: int = 2048, dtype: str = "bfloat16", repeats: int = 10) -> None:
    """Median FLOP/s of a square matmul: this machine's dense-compute ceiling."""
    print(json.dumps({"size": size, "dtype": dtype, "gflops": round(_matmul_flops(size, getattr(torch, dtype), repeats) / 1e9, 1)}))


def train_steps(variant: str = "2d", f0: int = 16, bf16: bool = True, batch: int = 10, steps: int = 5) -> None:
    """Training steps/s at the paper's batch and crop sizes (160^2, 160^2 x 5, 32^3), AdaBelief + Jaccard2."""
    from adabelief_pytorch import AdaBelief

    from bundle.losses import Jaccard2Loss

    kwargs = VARIANTS[variant]
    crop = (32,) * 3 if kwargs["spatial_dims"] == 3 else (160, 160)
    torch.manual_seed(0)
    net = ModularUNet(f0=f0, **kwargs).train()
    optimizer = AdaBelief(net.parameters(), lr=1e-3, eps=1e-16, rectify=True, print_change_log=False)
    loss = Jaccard2Loss()
    x, y = torch.rand(batch, kwargs["in_channels"], *crop), torch.randint(0, 3, (batch, 1, *crop))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
            out = net(x)
        value = loss(out, y)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if i:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(json.dumps({"variant": variant, "f0": f0, "bf16": bool(bf16), "batch": batch, "crop": list(crop), "seconds_per_step": round(median, 3),
                      "steps_per_s": round(1 / median, 3), "seconds_per_epoch_of_10_steps": round(10 * median, 1)}))


def compare(shape: tuple = (16, 512, 512), ckpt_path: str = str(ROOT / "models" / "model.pt"), repeats: int = 3, **overrides) -> None:
    """Our streamed 2D inference against the plain MONAI path on the same volume, in one run.

    Plain path: the whole volume in RAM, MONAI `SliceInferer(roi 160x160, overlap 0.25, gaussian)`, fp32,
    the same trained model (eval mode, no_grad); MONAI's `BasicUNet(spatial_dims=2)` through the same path
    for scale. Ours: the bundle's inference workflow file to file with its defaults (plus `overrides`).
    Also the model's counted FLOPs/voxel and the bf16 2048^2 matmul FLOP/s, giving the fraction of the
    hardware limit.
    """
    from monai.inferers import SliceInferer
    from monai.networks.nets import BasicUNet

    from bundle.checkpoints import load_weights
    from bundle.inference import normalise_grey
    from bundle.io import open_volume
    from bundle.phantom import make_phantom

    work = Path(tempfile.mkdtemp(prefix="xct_compare_"))
    make_phantom(work / "data", tuple(shape), seed=12)
    voxels = int(np.prod(shape))
    volume = torch.from_numpy(normalise_grey(open_volume(work / "data" / "phantom.raw").read(), [0, 255]))[None, None]
    model = load_weights(ModularUNet(), ckpt_path).eval()
    plain = SliceInferer(roi_size=(160, 160), sw_batch_size=4, overlap=0.25, mode="gaussian", spatial_dim=0)

    def plain_seconds(net):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            with torch.no_grad():
                plain(volume, net).argmax(1)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    plain_model = plain_seconds(model)
    plain_basic = plain_seconds(BasicUNet(spatial_dims=2, in_channels=1, out_channels=3).eval())
    ours = []
    for i in range(repeats):
        command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", str(ROOT / "configs" / "inference.json"),
                   "--input_path", str(work / "data" / "phantom.raw"), "--output_dir", str(work / f"out{i}"), "--ckpt_path", ckpt_path,
                   "--progress", "False", *[a for k, v in overrides.items() for a in (f"--{k}", json.dumps(v) if not isinstance(v, str) else v)]]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours.append(time.perf_counter() - start)
    ours_s = statistics.median(ours)
    reference = open_volume(work / "out0" / "phantom.seg.raw").read()
    with torch.no_grad():
        plain_labels = plain(volume, model).argmax(1)[0].numpy()
    flops_voxel = _flops_per_voxel(model, torch.rand(1, 1, 160, 160))
    bf16_flops = _matmul_flops(2048, torch.bfloat16, 10)
    fp32_flops = _matmul_flops(2048, torch.float32, 10)
    print(json.dumps({
        "shape_zyx": list(shape), "voxels": voxels, "threads": torch.get_num_threads(), "overrides": overrides,
        "ours_s_file_to_file_incl_startup": round(ours_s, 2), "ours_voxels_per_s": round(voxels / ours_s),
        "monai_slice_inferer_s": round(plain_model, 2), "monai_voxels_per_s": round(voxels / plain_model),
        "speedup_vs_monai": round(plain_model / ours_s, 2),
        "basic_unet_slice_inferer_s": round(plain_basic, 2),
        "labels_equal_to_monai_path": float((reference == plain_labels).mean()),
        "flops_per_voxel": round(flops_voxel), "matmul_bf16_gflops": round(bf16_flops / 1e9, 1), "matmul_fp32_gflops": round(fp32_flops / 1e9, 1),
        "fraction_of_bf16_limit": round(flops_voxel * voxels / ours_s / bf16_flops, 3),
        "fraction_of_fp32_limit": round(flops_voxel * voxels / ours_s / fp32_flops, 3),
    }, indent=2))


if __name__ == "__main__":
    fire.Fire({"params": params, "flops": flops, "matmul": matmul, "forward": forward, "train-steps": train_steps,
               "inference": inference, "compare": compare})
