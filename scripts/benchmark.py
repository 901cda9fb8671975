"""Benchmarks behind docs/: parameters, FLOPs, forward time, training steps/s, streamed inference speed and memory.

    python scripts/benchmark.py params
    python scripts/benchmark.py flops
    python scripts/benchmark.py matmul --dtype bfloat16
    python scripts/benchmark.py forward --size 160 --repeats 20
    python scripts/benchmark.py train-steps --variant 2d --bf16 True
    python scripts/benchmark.py inference --shape '[256,512,512]'
    python scripts/benchmark.py compare --shape '[16,512,512]' --ckpt_path models/model.pt
    python scripts/benchmark.py big-volume --source data/bench512/phantom.raw --output data/big/volume.raw --repeats 8
    python scripts/benchmark.py inference --input_path data/big/volume.raw --ckpt_path M --network_def#f0 8
    python scripts/benchmark.py suite --output docs/benchmark.json --models '{"2.5d": "...", "3d": "..."}'

`suite` runs the measurements of docs/performance.md in one go and writes them as one JSON file.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
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


def _scratch(prefix: str) -> Path:
    """A temporary folder for phantoms and outputs, removed when the process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return Path(path)


def _count(**kwargs) -> int:
    return sum(p.numel() for p in ModularUNet(**kwargs).parameters() if p.requires_grad)


def params() -> None:
    """Trainable parameters of 2D / 2.5D / 3D for f0 in 8, 16, 32 and of each 2D f0=16 ablation, as JSON."""
    table = {variant: {f0: _count(f0=f0, **kwargs) for f0 in (8, 16, 32)} for variant, kwargs in VARIANTS.items()}
    table["ablations_2d_f0_16"] = {name: _count(**kwargs) for name, kwargs in ABLATIONS.items()}
    print(json.dumps(table, indent=2))


def forward(
    variant: str = "2d", f0: int = 16, size: int = 160, batch: int = 1, repeats: int = 20, threads: int | None = None
) -> None:
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
    print(
        json.dumps(
            {
                "variant": variant,
                "f0": f0,
                "input": list(x.shape),
                "threads": torch.get_num_threads(),
                "median_s": round(statistics.median(times), 4),
                "min_s": round(min(times), 4),
                "repeats": repeats,
            }
        )
    )


def _run_child(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process, from its own rusage (what /usr/bin/time -v reports)."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        causes = [line for line in log.splitlines() if re.match(r"^[\w.]+(Error|Exception): ", line)]
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n" + ("\n".join(causes) or log[-3000:]))
    return seconds, usage.ru_maxrss / 1024


def _inference(input_path: str, ckpt_path: str | None, variant: str, output_dir: Path, **overrides) -> dict:
    configs = [ROOT / "configs" / "inference.json"] + (
        [ROOT / "configs" / "variants" / f"{variant}.json"] if variant != "2d" else []
    )
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inference",
        "--config_file",
        "[" + ",".join(f"'{c}'" for c in configs) + "]",
        "--input_path",
        str(input_path),
        "--output_dir",
        str(output_dir),
        "--progress",
        "False",
    ]
    if ckpt_path:
        command += ["--ckpt_path", str(ckpt_path)]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else repr(value)]
    seconds, peak_mib = _run_child(command)
    from bundle.io import open_volume

    volume = open_volume(input_path)
    voxels = int(np.prod(volume.shape))
    return {
        "variant": variant,
        "input": str(input_path),
        "shape_zyx": list(volume.shape),
        "dtype": str(volume.dtype),
        "gib_on_disk": round(Path(input_path).stat().st_size / 2**30, 3),
        "voxels": voxels,
        "seconds_incl_startup": round(seconds, 1),
        "voxels_per_s": round(voxels / seconds),
        "peak_rss_mib": round(peak_mib, 1),
        "threads": torch.get_num_threads(),
        **overrides,
    }


def inference(
    shape: tuple = (256, 512, 512),
    input_path: str | None = None,
    ckpt_path: str | None = None,
    variant: str = "2d",
    work_dir: str | None = None,
    **overrides,
) -> None:
    """Streamed inference file to file (a phantom of `shape`, or `input_path`): wall time, voxels/s, the child's peak RSS.

    Config overrides pass through, e.g. `--network_def#f0 8 --slab 32`.
    """
    from bundle.phantom import make_phantom

    work = Path(work_dir) if work_dir else _scratch("xct_bench_")
    if input_path is None:
        input_path = work / "data" / "phantom.raw"
        if not input_path.exists():
            make_phantom(input_path.parent, tuple(shape), seed=11)
    print(json.dumps(_inference(str(input_path), ckpt_path, variant, work / "out", **overrides)))


def big_volume(source: str, output: str, repeats: int = 8, dtype: str = "float32") -> None:
    """A large test volume: `source` repeated `repeats` times along z as `dtype`, written slab by slab (atomically)."""
    from bundle.io import RawInfo, atomic_path, format_sidecar, open_volume, sidecar_path

    volume = open_volume(source)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(atomic_path(out), "wb") as f:
        for _ in range(int(repeats)):
            for z in range(0, volume.shape[0], 32):
                f.write(volume.read(z, min(z + 32, volume.shape[0])).astype(dtype).tobytes())
    shape = (volume.shape[0] * int(repeats),) + tuple(volume.shape[1:])
    sidecar_path(out).write_text(
        format_sidecar(RawInfo(shape, np.dtype(dtype), "<", {"SOURCE": f"{source} repeated {repeats} times along z"}))
    )
    os.replace(atomic_path(out), out)
    print(json.dumps({"output": str(out), "shape_zyx": list(shape), "gib": round(out.stat().st_size / 2**30, 3)}))


def _flops_per_voxel(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / (x.shape[0] * x[0, 0].numel())


def flops(variant: str = "2d", f0: int = 16, size: int = 160) -> None:
    """Counted forward FLOPs per output voxel (torch's FlopCounterMode: 2 per multiply-add)."""
    kwargs = VARIANTS[variant]
    x = torch.rand(1, kwargs["in_channels"], *(size,) * kwargs["spatial_dims"])
    print(
        json.dumps(
            {
                "variant": variant,
                "f0": f0,
                "input": list(x.shape),
                "flops_per_voxel": round(_flops_per_voxel(ModularUNet(f0=f0, **kwargs).eval(), x)),
            }
        )
    )


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
    print(
        json.dumps(
            {
                "size": size,
                "dtype": dtype,
                "gflops": round(_matmul_flops(size, getattr(torch, dtype), repeats) / 1e9, 1),
            }
        )
    )


def train_steps(variant: str = "2d", f0: int = 16, bf16: bool = True, batch: int = 10, steps: int = 5) -> None:
    """Training steps/s at the paper's batch and crop sizes (160^2, 160^2 x 5, 32^3), AdaBelief + Jaccard2."""
    print(json.dumps(_train_steps(variant, f0, bf16, batch, steps)))


def _train_steps(variant: str, f0: int, bf16: bool, batch: int, steps: int) -> dict:
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
    return {
        "variant": variant,
        "f0": f0,
        "bf16": bool(bf16),
        "batch": batch,
        "crop": list(crop),
        "seconds_per_step": round(median, 3),
        "steps_per_s": round(1 / median, 3),
        "seconds_per_epoch_of_10_steps": round(10 * median, 1),
    }


def compare(
    shape: tuple = (16, 512, 512), ckpt_path: str = str(ROOT / "models" / "model.pt"), repeats: int = 3, **overrides
) -> None:
    """Our streamed 2D inference against the plain MONAI path on the same volume (see `_compare`)."""
    print(json.dumps(_compare(shape, ckpt_path, repeats, **overrides), indent=2))


def _compare(shape: tuple, ckpt_path: str, repeats: int, **overrides) -> dict:
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

    work = _scratch("xct_compare_")
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
    phantom = str(work / "data" / "phantom.raw")
    ours = [_inference(phantom, ckpt_path, "2d", work / f"out{i}", **overrides)["seconds_incl_startup"] for i in range(repeats)]
    ours_s = statistics.median(ours)
    reference = open_volume(work / "out0" / "phantom.seg.raw").read()
    with torch.no_grad():
        plain_labels = plain(volume, model).argmax(1)[0].numpy()
    flops_voxel = _flops_per_voxel(model, torch.rand(1, 1, 160, 160))
    bf16_flops = _matmul_flops(2048, torch.bfloat16, 10)
    fp32_flops = _matmul_flops(2048, torch.float32, 10)
    return {
        "shape_zyx": list(shape),
        "voxels": voxels,
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "ours_s_file_to_file_incl_startup": round(ours_s, 2),
        "ours_voxels_per_s": round(voxels / ours_s),
        "monai_slice_inferer_s": round(plain_model, 2),
        "monai_voxels_per_s": round(voxels / plain_model),
        "speedup_vs_monai": round(plain_model / ours_s, 2),
        "basic_unet_slice_inferer_s": round(plain_basic, 2),
        "labels_equal_to_monai_path": float((reference == plain_labels).mean()),
        "flops_per_voxel": round(flops_voxel),
        "matmul_bf16_gflops": round(bf16_flops / 1e9, 1),
        "matmul_fp32_gflops": round(fp32_flops / 1e9, 1),
        "fraction_of_bf16_limit": round(flops_voxel * voxels / ours_s / bf16_flops, 3),
        "fraction_of_fp32_limit": round(flops_voxel * voxels / ours_s / fp32_flops, 3),
    }


def suite(
    output: str = str(ROOT / "docs" / "benchmark.json"),
    compare_shape: tuple = (16, 512, 512),
    inference_shape: tuple = (64, 512, 512),
    models: dict | None = None,
    big_volume_path: str | None = None,
    big_ckpt_path: str | None = None,
    big_f0: int = 8,
    repeats: int = 3,
    steps: int = 5,
    train_batch: int = 10,
) -> None:
    """Every measurement of docs/performance.md in one run, written to `output` (JSON, atomically).

    `models` maps variants to checkpoints (the 2D default is models/model.pt); `big_volume_path` with a small
    `big_f0` checkpoint measures peak RSS on a volume of several GiB.
    """
    from bundle.phantom import make_phantom

    checkpoints = {"2d": str(ROOT / "models" / "model.pt"), **(models or {})}
    work = _scratch("xct_suite_")
    make_phantom(work / "data", tuple(inference_shape), seed=11)
    bf16_flops = _matmul_flops(2048, torch.bfloat16, 10)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_bf16": torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        },
        "matmul_gflops": {
            "bfloat16": round(bf16_flops / 1e9, 1),
            "float32": round(_matmul_flops(2048, torch.float32, 10) / 1e9, 1),
        },
        "flops_per_voxel": {},
        "inference": [],
        "train_steps": [],
    }
    for variant, kwargs in VARIANTS.items():
        x = torch.rand(
            1, kwargs["in_channels"], *(160 if kwargs["spatial_dims"] == 2 else 32,) * kwargs["spatial_dims"]
        )
        result["flops_per_voxel"][variant] = round(_flops_per_voxel(ModularUNet(**kwargs).eval(), x))
    result["compare_2d"] = _compare(compare_shape, checkpoints["2d"], repeats)
    for variant, ckpt in checkpoints.items():
        runs = [
            _inference(str(work / "data" / "phantom.raw"), ckpt, variant, work / f"out_{variant}_{i}")
            for i in range(repeats)
        ]
        median = sorted(runs, key=lambda r: r["seconds_incl_startup"])[len(runs) // 2]
        median["input"] = f"phantom seed 11, {list(inference_shape)}"
        median["fraction_of_bf16_limit"] = round(
            result["flops_per_voxel"][variant] * median["voxels_per_s"] / bf16_flops, 3
        )
        result["inference"].append(median)
    for variant in VARIANTS:
        for bf16 in (False, True):
            result["train_steps"].append(_train_steps(variant, 16, bf16, train_batch, steps))
    if big_volume_path:
        result["big_volume"] = _inference(
            big_volume_path, big_ckpt_path, "2d", work / "out_big", **{"network_def#f0": int(big_f0)}
        )
    out = Path(output)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    fire.Fire(
        {
            "params": params,
            "flops": flops,
            "matmul": matmul,
            "forward": forward,
            "train-steps": train_steps,
            "inference": inference,
            "compare": compare,
            "big-volume": big_volume,
            "suite": suite,
        }
    )
