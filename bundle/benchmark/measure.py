"""Measurements behind docs/performance.md and docs/reliability.md: parameters, FLOPs, forward time, training
steps/s, streamed inference speed and peak memory, backends, formats; each writes JSON (`scripts/benchmark.py`)."""

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

import numpy as np
import torch

from .. import BUNDLE_ROOT
from ..io import write_atomically
from ..launcher import bundle_command
from ..networks import ModularUNet
from ..runtime import machine_class
from ..variants import VARIANT_NETWORK, ablation_overlays, network_kwargs, variant_overlays

ROOT = Path(BUNDLE_ROOT)
MODEL_2D = str(ROOT / "models" / "model_2d.pt")  # the 2D-network measurements (compare, backends) use the shipped 2D weights


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


# Linux carries a forked child's peak RSS over its exec, so a child forked straight from this (large) process would
# report at least this process's RSS; a small launcher forks the measured command instead and reports its rusage.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "sys.stderr.write(f'\\nPEAK_RSS_KIB {usage.ru_maxrss}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _run_child(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process; RSS from its own rusage (what /usr/bin/time -v reports)."""
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryFile() as stdout:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", _LAUNCHER, *command], stdout=stdout, stderr=stderr)
        status = child.wait()
        seconds = time.perf_counter() - start
        stderr.seek(0)
        log = stderr.read().decode(errors="replace")
        stdout.seek(0)
        printed = stdout.read().decode(errors="replace")
    peak_kib = int((re.findall(r"PEAK_RSS_KIB (\d+)", log) or [0])[-1])
    if status:
        causes = [line for line in log.splitlines() if re.match(r"^[\w.]+(Error|Exception): ", line)]
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n" + ("\n".join(causes) or log[-3000:]))
    return seconds, peak_kib / 1024, printed


def _inference(input_path: str, ckpt_path: str | None, variant: str, output_dir: Path, **overrides) -> dict:
    configs = [ROOT / "configs" / "inference.json", *variant_overlays(variant)]
    settings = {"input_path": str(input_path), "output_dir": str(output_dir), "progress": False}
    settings.update({"ckpt_path": str(ckpt_path)} if ckpt_path else {})
    command = bundle_command("inference", configs, {**settings, **overrides})
    seconds, peak_mib, _ = _run_child(command)
    from ..io import open_volume, volume_stem

    volume = open_volume(input_path)
    voxels = int(np.prod(volume.shape))
    record = json.loads((Path(output_dir) / f"{volume_stem(input_path)}.provenance.json").read_text())
    segmenting = record["seconds_last_session"]
    return {
        **overrides,
        "variant": variant,
        "input": str(input_path),
        "shape_zyx": list(volume.shape),
        "dtype": str(volume.dtype),
        "gib_on_disk": round(_disk_bytes(Path(input_path)) / 2**30, 3),
        "voxels": voxels,
        "seconds_incl_startup": round(seconds, 1),
        "seconds_segmenting": round(segmenting, 2),
        "voxels_per_s": round(voxels / segmenting),
        "voxels_per_s_incl_startup": round(voxels / seconds),
        "peak_rss_mib": round(peak_mib, 1),
        "precision": record["precision"],
        "backend": record.get("backend"),
        "threads": record["runtime"]["threads"],
        "num_workers": record["runtime"]["num_workers"],
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
    from ..phantom import make_phantom

    work = Path(work_dir) if work_dir else _scratch("xct_bench_")
    if input_path is None:
        input_path = work / "data" / "phantom.raw"
        if not input_path.exists():
            make_phantom(input_path.parent, tuple(shape), seed=11)
    print(json.dumps(_inference(str(input_path), ckpt_path, variant, work / "out", **overrides)))


def big_volume(source: str, output: str, repeats: int = 8, dtype: str = "float32") -> None:
    """A large test volume: `source` repeated `repeats` times along z as `dtype`, written slab by slab (atomically)."""
    from ..io import RawInfo, atomic_path, format_sidecar, open_volume, sidecar_path

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


def _matmul_flops(size: int, dtype: torch.dtype, repeats: int, budget_s: float = 3.0) -> float:
    """FLOP/s of a square matrix product of up to `size`: from 256 the size doubles while `repeats` products of the
    next size would fit in `budget_s`, so a dtype the CPU only emulates (bf16 on AVX2: minutes at 2048) takes seconds."""
    n = min(256, size)
    while True:
        a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
        start = time.perf_counter()
        torch.mm(a, b)
        if n >= size or 8 * (time.perf_counter() - start) * repeats > budget_s:
            break
        n *= 2
    size = n
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


def train_workflow(
    variant: str = "2d",
    precision: str = "auto",
    dataset_dir: str | None = None,
    epochs: int = 3,
    steps: int = 10,
    batch: int = 10,
    **overrides,
) -> None:
    """Seconds per training step of the real `run training` workflow (data loading and augmentation included).

    Validation is excluded (its interval is beyond the last epoch); the first step of each epoch,
    which starts the loader, is reported apart. Prints one JSON line.
    """
    print(json.dumps(_train_workflow(variant, precision, dataset_dir, epochs, steps, batch, **overrides)))


def _train_workflow(variant, precision, dataset_dir, epochs, steps, batch, **overrides) -> dict:
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from ..phantom import make_phantom

    work = _scratch("xct_train_bench_")
    if dataset_dir is None:
        dataset_dir = work / "data"
        make_phantom(dataset_dir, (48, 256, 256), seed=5)
    configs = [str(path) for path in (ROOT / "configs" / "train.json", *variant_overlays(variant))]
    workflow = ConfigWorkflow(
        config_file=configs,
        workflow_type="train",
        dataset_dir=str(dataset_dir),
        output_dir=str(work / "run"),
        precision=precision,
        max_epochs=int(epochs),
        steps_per_epoch=int(steps),
        batch_size=int(batch),
        val_interval=int(epochs) + 1,
        **overrides,
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    runtime = workflow.parser.get_parsed_content("runtime")
    stamps: list[tuple[int, float]] = []
    loads: list[float] = []
    started: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stamps.append((e.state.epoch, time.perf_counter())))
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: started.append(time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: loads.append(time.perf_counter() - started[-1]))
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: stamps.append((e.state.epoch, time.perf_counter())))
    workflow.run()
    workflow.finalize()
    per_epoch = [[b - a for (ea, a), (eb, b) in zip(stamps, stamps[1:]) if ea == eb == e] for e in range(1, int(epochs) + 1)]
    steady = [t for times in per_epoch for t in times[1:]]
    first = [times[0] for times in per_epoch if times]
    median = statistics.median(steady)
    return {
        "variant": variant,
        "precision_requested": precision,
        "precision": runtime.precision,
        "batch": int(batch),
        "crop": list(workflow.parser.get_parsed_content("crop_size")),
        "num_workers": runtime.num_workers,
        "threads": runtime.threads,
        "steps_timed": len(steady),
        "seconds_per_step": round(median, 3),
        "seconds_per_step_min": round(min(steady), 3),
        "seconds_first_step_of_epoch": round(statistics.median(first), 3),
        "seconds_waiting_for_data_per_step": round(statistics.median(loads), 4),
        "machine": machine_class(),
    }


def compare(
    shape: tuple = (16, 512, 512), ckpt_path: str = MODEL_2D, repeats: int = 3, **overrides
) -> None:
    """Our streamed 2D inference against the plain MONAI path on the same volume (see `_compare`)."""
    print(json.dumps(_compare(shape, ckpt_path, repeats, **overrides), indent=2))


def _compare(shape: tuple, ckpt_path: str, repeats: int, matmul_size: int = 2048, limits: dict | None = None, **overrides) -> dict:
    """Our streamed 2D inference against the plain MONAI path on the same volume, in one run.

    Plain path: the whole volume in RAM, MONAI `SliceInferer(roi 160x160, overlap 0.25, gaussian)`, fp32,
    the same trained model (eval mode, no_grad); MONAI's `BasicUNet(spatial_dims=2)` through the same path
    for scale. Ours: the bundle's inference workflow file to file with its defaults (plus `overrides`).
    Also the model's counted FLOPs/voxel and the bf16 and fp32 `matmul_size`^2 matmul FLOP/s (`limits`, when the
    caller measured them), giving the fraction of the hardware limit.
    """
    from monai.inferers import SliceInferer
    from monai.networks.nets import BasicUNet

    from ..checkpoints import load_weights, read_model_sidecar
    from ..data import model_window
    from ..data.grey import normalise_grey
    from ..io import open_volume
    from ..phantom import make_phantom

    work = _scratch("xct_compare_")
    make_phantom(work / "data", tuple(shape), seed=12)
    voxels = int(np.prod(shape))
    phantom = str(work / "data" / "phantom.raw")
    window = model_window(read_model_sidecar(ckpt_path), phantom)
    volume = torch.from_numpy(normalise_grey(open_volume(phantom).read(), window))[None, None]
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
    ours = [_inference(phantom, ckpt_path, "2d", work / f"out{i}", **overrides)["seconds_segmenting"] for i in range(repeats)]
    ours_s = statistics.median(ours)
    reference = open_volume(work / "out0" / "phantom.seg.raw").read()
    with torch.no_grad():
        plain_labels = plain(volume, model).argmax(1)[0].numpy()
    flops_voxel = _flops_per_voxel(model, torch.rand(1, 1, 160, 160))
    limits = limits or {dtype: _matmul_flops(matmul_size, dtype, 10) for dtype in (torch.bfloat16, torch.float32)}
    bf16_flops, fp32_flops = limits[torch.bfloat16], limits[torch.float32]
    return {
        "shape_zyx": list(shape),
        "voxels": voxels,
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "ours_s_file_to_file": round(ours_s, 2),
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


def edges(dataset_dir: str = str(ROOT / "demo"), ckpt_path: str = str(ROOT / "models" / "model.pt"), output: str | None = None) -> None:
    """Test-slice IoU and the error rate of each slice's outer 2-voxel frame against its interior, per edge scheme.

    A 2D or 2.5D checkpoint (its sidecar's `in_channels`): a 2.5D model sees each test slice with its neighbours,
    mirrored past the volume's ends as the inference workflow gives them.

    Schemes: what lies past the plane's edge for the network. `stop` (tiles end at the edge, the network's
    own zero padding: the overlap-tile inferer's default), `replicate` (edge voxels repeated for a margin),
    `reflect` (mirrored), `zeros` (zero input for a margin, which MONAI's blended sliding window also gives
    planes smaller than its 512 x 512 window: the bundle's earlier default). fp32, the model's grey normalisation.
    """
    from monai.inferers import SlidingWindowInferer

    from ..checkpoints import load_weights, read_model_sidecar
    from ..data import load_dataset_description, model_window
    from ..data.crops import read_with_halo
    from ..data.grey import normalise_grey
    from ..inference import OverlapTileInferer, context_margin
    from ..networks import inference_ready

    entry = load_dataset_description(dataset_dir)[0]
    (z0, z1), = entry.ranges("test")
    sidecar = read_model_sidecar(ckpt_path)
    in_channels = int(sidecar.get("network", {}).get("in_channels", 1))
    context = (in_channels - 1) // 2
    window = model_window(sidecar, str(entry.image_path))
    grey = torch.from_numpy(normalise_grey(read_with_halo(entry.image(), z0, z1, context), window))
    image = grey.unfold(0, in_channels, 1).permute(0, 3, 1, 2).contiguous()
    label = entry.label().read(z0, z1)
    net = inference_ready(load_weights(ModularUNet(in_channels=in_channels), ckpt_path), True, True)
    margin = context_margin(net.u_depth)
    tiles = OverlapTileInferer((512, 512), margin)

    def padded(mode):
        return lambda x: tiles(torch.nn.functional.pad(x, (margin,) * 4, mode=mode), net)[..., margin:-margin, margin:-margin]

    schemes = {
        "stop": lambda x: tiles(x, net),
        "replicate": padded("replicate"),
        "reflect": padded("reflect"),
        "zeros": padded("constant"),
        "blended_sliding_window_512_zeros": lambda x: SlidingWindowInferer((512, 512), 4, 0.25, mode="gaussian")(x, net),
    }
    frame = np.zeros(label.shape[1:], bool)
    frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = True, True, True, True
    rows = []
    for name, infer in schemes.items():
        with torch.inference_mode():
            pred = torch.cat([infer(image[i : i + 4]) for i in range(0, len(image), 4)]).argmax(1).numpy()
        errors = pred != label
        iou = [float(((pred == c) & (label == c)).sum() / ((pred == c) | (label == c)).sum()) for c in range(3)]
        rows.append(
            {
                "scheme": name,
                "iou_matrix": round(100 * iou[0], 2),
                "iou_fibre": round(100 * iou[1], 2),
                "iou_porosity": round(100 * iou[2], 2),
                "mean_iou": round(100 * sum(iou) / 3, 2),
                "frame_error_pct": round(100 * float(errors[:, frame].mean()), 3),
                "interior_error_pct": round(100 * float(errors[:, ~frame].mean()), 3),
                "frame_to_interior": round(float(errors[:, frame].mean() / errors[:, ~frame].mean()), 2),
            }
        )
    result = {"dataset": str(dataset_dir), "test_slices": [z0, z1], "model": ckpt_path, "margin": margin, "machine": machine_class(), "rows": rows}
    _emit(result, output)


def _emit(result: dict, output: str | None) -> None:
    """Print `result` as JSON and, with `output`, write it there atomically."""
    text = json.dumps(result, indent=2) + "\n"
    if output:
        write_atomically(output, text)
    print(text, end="")


def tiff_pages(pages: int = 4000, size: int = 64, batch: int = 100, output: str | None = None) -> None:
    """Seconds to read `batch` pages of a `pages`-page TIFF at its start and at its end: flat means no re-walking.

    Against reopening the file for every page (`tifffile.imread(key=z)`), which walks the page list
    from the start each time.
    """
    import tifffile

    from ..io import open_volume

    work = _scratch("xct_tiff_")
    path = work / "stack.tif"
    rng = np.random.default_rng(0)
    with tifffile.TiffWriter(path) as writer:
        for _ in range(int(pages)):
            writer.write(rng.integers(0, 255, (size, size), dtype=np.uint8), contiguous=False)
    rows = []
    for start in (0, int(pages) - int(batch)):
        volume = open_volume(path)
        began = time.perf_counter()
        volume.read(start, start + int(batch))
        ours = time.perf_counter() - began
        began = time.perf_counter()
        for z in range(start, start + int(batch)):
            tifffile.imread(path, key=z)
        reopened = time.perf_counter() - began
        rows.append({"first_page": start, "pages_read": int(batch), "seconds_one_handle": round(ours, 4), "seconds_reopened_per_page": round(reopened, 4)})
    _emit({"pages": int(pages), "page_shape": [size, size], "machine": machine_class(), "rows": rows}, output)


def seamless(shape: tuple = (40, 170, 150), roi: tuple = ((14, 22), (37, 141), (3, 77)), output: str | None = None) -> None:
    """Label agreement of a sub-box, another tile size and another slab size with the whole-volume run, per case.

    Fixed-seed f0=4 networks (2D, 2.5D, 3D) on a phantom; through `run inference` each time. The
    2D/2.5D overlap-tile path is exact in fp32; bf16, the 3D blended window and multi-axis fusion
    are measured here, not promised.
    """
    from ..io import open_volume
    from ..phantom import make_phantom
    from ..variants import VARIANT_NETWORK

    work = _scratch("xct_seamless_")
    make_phantom(work / "data", tuple(shape), seed=7)
    scan = str(work / "data" / "phantom.raw")
    box = tuple(slice(a, b) for a, b in roi)
    cases = [
        ("2d", "fp32", {}), ("2d", "bf16", {}), ("2.5d", "fp32", {}), ("2d", "fp32", {"tta": True}),
        ("2d", "fp32", {"axes": ["z", "y", "x"], "z_halo": 16}), ("3d", "fp32", {}),
    ]
    rows = []
    for n, (variant, precision, extra) in enumerate(cases):
        torch.manual_seed(4)
        ckpt = work / f"model_{variant}.pt"
        torch.save(ModularUNet(f0=4, **VARIANT_NETWORK[variant]).state_dict(), ckpt)
        base = {"precision": precision, "network_def#f0": 4, **extra}
        small_tile = {"roi_size": [16, 64, 64]} if variant == "3d" else {"roi_size": [192, 256]}

        def labels(name, ckpt=ckpt, variant=variant, n=n, base=base, **overrides):
            _inference(scan, str(ckpt), variant, work / f"{n}_{name}", **{**base, **overrides})
            return open_volume(work / f"{n}_{name}" / "phantom.seg.raw").read()

        whole = labels("whole")
        rows.append(
            {
                "variant": variant,
                "precision": precision,
                "levers": ", ".join(f"{k} {v}" for k, v in extra.items() if k != "z_halo") or "none",
                "roi_vs_whole_pct": round(100 * float((labels("roi", roi=[list(r) for r in roi]) == whole[box]).mean()), 4),
                "tile_vs_default_pct": round(100 * float((labels("tile", **small_tile) == whole).mean()), 4),
                "slab_3_vs_auto_pct": round(100 * float((labels("slab", slab=3 if variant != "3d" else 8) == whole).mean()), 4),
            }
        )
    _emit({"shape_zyx": list(shape), "roi": [list(r) for r in roi], "machine": machine_class(), "rows": rows}, output)


def _own_memory_cgroup() -> Path | None:
    """This process's memory cgroup folder (v2 unified or v1 memory controller), if it can be read."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if controllers == "memory":
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if number == "0" and controllers == "" and (Path("/sys/fs/cgroup") / "cgroup.controllers").is_file():
            return Path("/sys/fs/cgroup") / path.lstrip("/")
    return None


def _capped(command: list[str], limit_bytes: int) -> tuple[list[str], Path | None, str]:
    """`command` made to run in a new child memory cgroup capped at `limit_bytes`, or the reason it cannot be."""
    parent = _own_memory_cgroup()
    if parent is None:
        return command, None, "no memory cgroup found"
    group = parent / f"xct_bench_{os.getpid()}"
    try:
        group.mkdir()
        limit = group / ("memory.max" if (group / "memory.max").exists() else "memory.limit_in_bytes")
        limit.write_text(str(int(limit_bytes)))
    except OSError as err:
        return command, None, f"cannot create a capped cgroup under {parent}: {err}"
    script = f"echo $$ > {group / 'cgroup.procs'} && exec \"$@\""
    return ["sh", "-c", script, "sh", *command], group, f"{limit.name} = {int(limit_bytes)}"


def memory(
    plane: int = 2048,
    depths: tuple = (8, 32),
    cap_mib: int = 1536,
    f0: int = 4,
    work_dir: str | None = None,
    output: str | None = None,
) -> None:
    """Peak RSS of default streamed inference on volumes of `plane`^2 slices and growing depth, and a capped run.

    Memory must be set by the slab, not the volume: the peak is the same for every depth. The last
    depth runs once more inside a cgroup capped at `cap_mib` and must give the same bytes. A fixed-seed
    f0=`f0` network stands in for a trained one: the footprint depends on tiles and slabs, not on weights.
    """
    from ..io import RawInfo, format_sidecar, sidecar_path

    work = Path(work_dir) if work_dir else _scratch("xct_memory_")
    torch.manual_seed(0)
    ckpt = work / "model.pt"
    torch.save(ModularUNet(f0=int(f0)).state_dict(), ckpt)
    rng = np.random.default_rng(0)
    runs = []
    for depth in depths:
        path = work / f"volume_{depth}.raw"
        with open(path, "wb") as f:
            for _ in range(int(depth)):
                f.write(rng.integers(60, 200, (plane, plane), dtype=np.uint8).tobytes())
        sidecar_path(path).write_text(format_sidecar(RawInfo((int(depth), plane, plane), np.dtype(np.uint8), "<", {})))
        row = _inference(str(path), str(ckpt), "2d", work / f"out_{depth}", **{"network_def#f0": int(f0)})
        row["written_bytes"] = sum(p.stat().st_size for p in (work / f"out_{depth}").glob("*.raw"))
        row["written_bytes_per_voxel"] = round(row["written_bytes"] / row["voxels"], 3)
        runs.append(row)
    last = work / f"volume_{depths[-1]}.raw"
    with_prob = _inference(str(last), str(ckpt), "2d", work / "out_prob", save_probabilities=True, **{"network_def#f0": int(f0)})
    with_prob["written_bytes"] = sum(p.stat().st_size for p in (work / "out_prob").glob("*.raw"))
    result = {"machine": machine_class(), "plane": plane, "runs": runs, "with_probabilities": with_prob}
    last = work / f"volume_{depths[-1]}.raw"
    command = bundle_command("inference", [ROOT / "configs" / "inference.json", *variant_overlays("2d")], {
        "input_path": str(last), "output_dir": str(work / "out_capped"), "ckpt_path": str(ckpt), "network_def#f0": int(f0), "progress": False,
    })
    capped, group, how = _capped(command, int(cap_mib) * 2**20)
    result["capped"] = {"cap": how}
    if group is not None:
        try:
            seconds, peak, _ = _run_child(capped)
            same = all(
                (work / "out_capped" / p.name).read_bytes() == p.read_bytes() for p in (work / f"out_{depths[-1]}").glob("*.raw")
            )
            result["capped"].update({"finished": True, "seconds": round(seconds, 1), "peak_rss_mib": round(peak, 1), "same_bytes": same})
        except RuntimeError as err:
            result["capped"].update({"finished": False, "error": str(err)[-500:]})
        finally:
            group.rmdir()
    _emit(result, output)


def _write_formats(source: np.ndarray, depth: int, folder: Path, chunks: tuple) -> dict[str, str]:
    """`source` repeated along z to `depth` slices as raw, Blosc-LZ4 HDF5 (`/exchange/data`) and Zarr v3 (zstd), block by block."""
    import h5py
    import hdf5plugin
    import zarr

    from ..io import RawInfo, format_sidecar, sidecar_path

    folder.mkdir(parents=True, exist_ok=True)
    shape = (int(depth),) + source.shape[1:]
    paths = {"raw": folder / "volume.raw", "hdf5": folder / "volume.h5", "zarr": folder / "volume.zarr"}
    with open(paths["raw"], "wb") as raw, h5py.File(paths["hdf5"], "w") as h5:
        dataset = h5.create_dataset("exchange/data", shape=shape, dtype=source.dtype, chunks=tuple(chunks),
                                    **hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE))
        array = zarr.create_array(str(paths["zarr"]), shape=shape, dtype=source.dtype, chunks=tuple(chunks), zarr_format=3)
        step = source.shape[0] - source.shape[0] % chunks[0]
        for z0 in range(0, shape[0], step):
            block = source[: min(step, shape[0] - z0)]
            raw.write(block.tobytes())
            dataset[z0 : z0 + len(block)] = block
            array[z0 : z0 + len(block)] = block
    sidecar_path(paths["raw"]).write_text(format_sidecar(RawInfo(shape, source.dtype, "<", {})))
    return {name: str(path) for name, path in paths.items()}


def _read_rate(path: str, slab: int = 8) -> float:
    """MiB/s of reading the whole volume slab by slab through `open_volume`, as inference reads it."""
    from ..io import open_volume

    volume = open_volume(path)
    start = time.perf_counter()
    for z0 in range(0, volume.shape[0], slab):
        volume.read(z0, min(z0 + slab, volume.shape[0]))
    return volume.dtype.itemsize * int(np.prod(volume.shape)) / 2**20 / (time.perf_counter() - start)


def _ome_zarr_nodes(store: Path) -> dict:
    """What the `ome-zarr` package's reader finds in an output store: the image and the labels, with their shapes."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    nodes = list(Reader(parse_url(str(store)))())
    labels = [n for n in nodes if n.load(Label)]
    images = [n for n in nodes if n.load(Multiscales) and not n.load(Label)]
    return {
        "image_shape": list(images[0].data[0].shape) if images else None,
        "labels_shape": list(labels[0].data[0].shape) if labels else None,
    }


def formats(
    plane: int = 1024,
    source_depth: int = 32,
    compare_depth: int = 128,
    big_gib: float = 2.0,
    f0: int = 4,
    chunks: tuple = (16, 256, 256),
    work_dir: str | None = None,
    output: str | None = None,
) -> None:
    """Beamline formats: the same volume as raw, Blosc-LZ4 HDF5 and Zarr, read and segmented (to OME-Zarr).

    `compare_depth` slices of `plane`^2 (a phantom of `source_depth` slices repeated) give read
    throughput and end-to-end voxels/s per format, with the labels checked equal; then a
    `big_gib` GiB HDF5 and a Zarr input are segmented to OME-Zarr with the child's peak RSS, and
    the `ome-zarr` reader must find the image and the labels. A fixed-seed f0=`f0` network stands
    in for a trained one, as in `memory`: the reading and writing, not the network, are measured.
    """
    import zarr

    from ..phantom import make_phantom

    work = Path(work_dir) if work_dir else _scratch("xct_formats_")
    make_phantom(work / "source", (int(source_depth), int(plane), int(plane)), seed=11)
    from ..io import open_volume

    source = open_volume(work / "source" / "phantom.raw").read()
    torch.manual_seed(0)
    ckpt = work / "model.pt"
    torch.save(ModularUNet(f0=int(f0)).state_dict(), ckpt)
    network = {"network_def#f0": int(f0)}
    result = {"machine": machine_class(), "plane": int(plane), "chunks_zyx": list(chunks), "f0": int(f0), "compare": [], "big": []}
    inputs = _write_formats(source, compare_depth, work / "compare", chunks)
    _inference(inputs["raw"], str(ckpt), "2d", work / "warm_up", **network)
    labels = {}
    for name, path in inputs.items():
        row = _inference(path, str(ckpt), "2d", work / f"out_{name}", output_ext=".zarr", **network)
        labels[name] = np.asarray(zarr.open_group(str(work / f"out_{name}" / "volume.zarr"), mode="r")["labels/segmentation/0"])
        row.update({"format": name, "read_mib_per_s": round(_read_rate(path))})
        row["labels_equal_raw_input"] = bool(np.array_equal(labels[name], labels["raw"]))
        result["compare"].append(row)
    shutil.rmtree(work / "compare")
    depth = int(round(float(big_gib) * 2**30 / (int(plane) ** 2 * source.dtype.itemsize)))
    inputs = _write_formats(source, depth, work / "big", chunks)
    for name in ("hdf5", "zarr"):
        out = work / f"big_{name}"
        row = _inference(inputs[name], str(ckpt), "2d", out, output_ext=".zarr", **network)
        row.update({"format": name, "gib_uncompressed": round(depth * int(plane) ** 2 * source.dtype.itemsize / 2**30, 3),
                    **_ome_zarr_nodes(out / "volume.zarr")})
        result["big"].append(row)
        shutil.rmtree(out)
    _emit(result, output)


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _train_child(variant: str, precision: str, epochs: int, steps: int, batch: int, dataset_dir: Path) -> dict:
    command = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "train-workflow", "--variant", variant, "--precision", precision]
    command += ["--epochs", str(epochs), "--steps", str(steps), "--batch", str(batch), "--dataset_dir", str(dataset_dir)]
    _, peak_mib, printed = _run_child(command)
    row = json.loads(printed.strip().splitlines()[-1])
    row.pop("machine")
    return {**row, "peak_rss_mib": round(peak_mib, 1)}


def _median_run(runs: list[dict], key: str) -> dict:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def suite(
    output: str = str(ROOT / "docs" / "results" / "benchmark.json"),
    compare_shape: tuple = (16, 512, 512),
    inference_shape: tuple = (64, 512, 512),
    models: dict | None = None,
    big_volume_path: str | None = None,
    big_ckpt_path: str | None = None,
    big_f0: int = 8,
    repeats: int = 3,
    train_epochs: int = 3,
    steps: int = 10,
    train_batch: int = 10,
    train_variants: tuple = ("2d",),
    skip_compare: bool = False,
    backend: str = "auto",
    matmul_size: int = 2048,
) -> None:
    """Every measurement of docs/performance.md in one run, written to `output` (JSON, atomically).

    Each inference and training figure of the defaults (`precision auto`, inference `--backend backend`) is
    taken beside the explicit fp32 run on torch (the reference path), in the same run on the same machine;
    training goes through the real `run training` workflow. OpenVINO ignores `ONEDNN_MAX_CPU_ISA`, so an
    emulated class is measured with `--backend torch`. `models` maps variants to checkpoints (2D: the shipped 2D weights, models/model_2d.pt);
    `big_volume_path` with a small `big_f0` checkpoint measures peak RSS on a volume of several GiB.
    To measure the AVX2-only class on a newer CPU, run it under `ONEDNN_MAX_CPU_ISA=AVX2
    ATEN_CPU_CAPABILITY=avx2` (recorded as `machine.emulated_isa`).
    """
    from ..phantom import make_phantom

    checkpoints = {"2d": MODEL_2D, **(models or {})}
    work = _scratch("xct_suite_")
    make_phantom(work / "data", tuple(inference_shape), seed=11)
    make_phantom(work / "train", (48, 256, 256), seed=5)
    limits = {dtype: _matmul_flops(matmul_size, dtype, 10) for dtype in (torch.bfloat16, torch.float32)}
    bf16_flops = limits[torch.bfloat16]
    result = {
        "machine": machine_class(),
        "matmul_gflops": {"bfloat16": round(bf16_flops / 1e9, 1), "float32": round(limits[torch.float32] / 1e9, 1)},
        "flops_per_voxel": {},
        "backend_requested": backend,
        "inference": [],
        "train_workflow": [],
    }
    for variant, kwargs in VARIANTS.items():
        x = torch.rand(
            1, kwargs["in_channels"], *(160 if kwargs["spatial_dims"] == 2 else 32,) * kwargs["spatial_dims"]
        )
        result["flops_per_voxel"][variant] = round(_flops_per_voxel(ModularUNet(**kwargs).eval(), x))
    if not skip_compare:
        chosen = {"backend": backend} if backend != "auto" else {}
        result["compare_2d"] = _compare(compare_shape, checkpoints["2d"], repeats, limits=limits, **chosen)
    for variant, ckpt in checkpoints.items():
        for precision in ("auto", "fp32"):
            settings = {"precision": precision, "backend": backend if precision == "auto" else "torch"}
            runs = [
                _inference(str(work / "data" / "phantom.raw"), ckpt, variant, work / f"out_{variant}_{precision}_{i}", **settings)
                for i in range(repeats)
            ]
            median = _median_run(runs, "seconds_segmenting")
            median["input"] = f"phantom seed 11, {list(inference_shape)}"
            median["precision_requested"] = precision
            median["fraction_of_bf16_limit"] = round(
                result["flops_per_voxel"][variant] * median["voxels_per_s"] / bf16_flops, 3
            )
            result["inference"].append(median)
    for variant in train_variants:
        for precision in ("auto", "fp32"):
            result["train_workflow"].append(_train_child(variant, precision, train_epochs, steps, train_batch, work / "train"))
    if big_volume_path:
        result["big_volume"] = _inference(
            big_volume_path, big_ckpt_path, "2d", work / "out_big", **{"network_def#f0": int(big_f0)}
        )
    _emit(result, output)


def _backend_rows(native_bf16: bool) -> list[tuple[str, str]]:
    """(backend, precision) pairs worth measuring here: bf16 only where native, packages only where installed."""
    from ..backends import missing_package

    rows = [("torch", "fp32")] + ([("torch", "bf16")] if native_bf16 else [])
    if missing_package("onnxruntime") is None:
        rows.append(("onnxruntime", "fp32"))
    if missing_package("openvino") is None:
        rows += [("openvino", "fp32")] + ([("openvino", "bf16")] if native_bf16 else [])
        if missing_package("int8") is None:
            rows.append(("openvino", "int8"))
    return rows + [("auto", "auto")]


def _forward_rate(backend: str, precision: str, ckpt_path: str, batch: int, size: int, repeats: int, cache: Path) -> dict:
    """Voxels/s of the resolved backend's forward pass alone on a [batch, 1, size, size] input, best of `repeats`."""
    from ..backends import resolve_backend
    from ..checkpoints import file_sha256, load_weights
    from ..inference import calibration_batches
    from ..networks import inference_ready
    from ..runtime import resolve_runtime

    runtime = resolve_runtime("cpu", precision)
    net = inference_ready(load_weights(ModularUNet(), ckpt_path), True, True)
    calibration_volume = cache / "calibration" / "phantom.raw"
    if not calibration_volume.exists():
        from ..phantom import make_phantom

        make_phantom(calibration_volume.parent, (48, 256, 256), seed=5)
    choice = resolve_backend(
        backend, net, runtime, file_sha256(ckpt_path), 1, 2, (size, size),
        lambda: calibration_batches(calibration_volume, [0.0, 255.0], 1, 2, (size, size)), cache,
    )
    x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(choice.autocast_precision)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        for _ in range(repeats + 1):
            start = time.perf_counter()
            choice.network(x)
            times.append(time.perf_counter() - start)
    return {"backend": choice.name, "precision": choice.precision, "voxels_per_s": round(x.numel() / min(times[1:]))}


def _score(prediction: Path, dataset_dir: Path, output_dir: Path) -> dict:
    """Test-slice IoU (%) of a segmentation file through the evaluate workflow's `--prediction_path` scoring."""
    command = bundle_command("evaluate", [ROOT / "configs" / name for name in ("inference.json", "evaluate.json")], {
        "dataset_dir": str(dataset_dir), "prediction_path": str(prediction), "output_dir": str(output_dir), "write_volumes": False,
    })
    _run_child(command)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    return {**{k: round(100 * v, 2) for k, v in metrics["iou"].items()}, "mean": round(100 * metrics["mean_iou"], 2)}


def backends(
    output: str | None = None,
    ckpt_path: str = MODEL_2D,
    speed_shape: tuple = (32, 512, 512),
    quality_shape: tuple = (128, 256, 256),
    quality_seeds: tuple = (0, 11),
    forward_batch: int = 4,
    forward_size: int = 512,
    repeats: int = 3,
) -> None:
    """Backend x precision on this machine: forward pass alone, `run inference` file to file with peak RSS, and quality.

    Rows: torch fp32, torch bf16 (native only), ONNX Runtime fp32, OpenVINO fp32 / bf16 (native only) / int8, and the
    default (`--backend auto --precision auto`). Speed: a phantom of `speed_shape` (seed 11), the median of `repeats`
    file-to-file runs. Quality: each row segments phantoms of `quality_shape` for each of `quality_seeds` (seed 0 is
    the demo phantom) and the evaluate workflow scores their test slices; label agreement is against torch fp32.
    int8 is calibrated on 10 batches of 4 slices of a separate phantom (seed 5) in the forward timing, and on the
    volume it segments in the file-to-file runs (the bundle's default).
    """
    from ..io import open_volume
    from ..phantom import make_phantom

    work = _scratch("xct_backends_")
    cache = work / "cache"
    os.environ["XCT_CACHE_DIR"] = str(cache)
    info = machine_class()
    make_phantom(work / "speed", tuple(speed_shape), seed=11)
    for seed in quality_seeds:
        make_phantom(work / f"seed{seed}", tuple(quality_shape), seed=seed)
    rows = []
    for backend, precision in _backend_rows(info["cpu_native_bf16"]):
        row = {"backend_requested": backend, "precision_requested": precision}
        row["forward"] = _forward_rate(backend, precision, ckpt_path, forward_batch, forward_size, repeats, cache)
        settings = {"backend": backend, "precision": precision}
        runs = [_inference(str(work / "speed" / "phantom.raw"), ckpt_path, "2d", work / f"out_{backend}_{precision}_{i}", **settings)
                for i in range(repeats)]
        row["file_to_file"] = _median_run(runs, "seconds_segmenting")
        record = json.loads((work / f"out_{backend}_{precision}_0" / "phantom.provenance.json").read_text())
        row["backend"], row["precision"] = record["backend"], record["precision"]
        row["quality"] = {}
        for seed in quality_seeds:
            out = work / f"quality_{seed}_{backend}_{precision}"
            _inference(str(work / f"seed{seed}" / "phantom.raw"), ckpt_path, "2d", out, **settings)
            row["quality"][str(seed)] = {"iou": _score(out / "phantom.seg.raw", work / f"seed{seed}", out / "evaluate")}
        rows.append(row)
    reference = {str(seed): open_volume(work / f"quality_{seed}_torch_fp32" / "phantom.seg.raw").read() for seed in quality_seeds}
    for row in rows:
        for seed, labels in reference.items():
            seg = open_volume(work / f"quality_{seed}_{row['backend_requested']}_{row['precision_requested']}" / "phantom.seg.raw").read()
            row["quality"][seed]["labels_equal_to_torch_fp32_pct"] = round(100 * float((seg == labels).mean()), 3)
    result = {
        "machine": info,
        "model": str(Path(ckpt_path).relative_to(ROOT) if Path(ckpt_path).is_relative_to(ROOT) else ckpt_path),
        "speed_input": f"phantom seed 11, {list(speed_shape)}",
        "quality_input": f"phantoms seeds {list(quality_seeds)}, {list(quality_shape)}, test slices",
        "forward_input": [forward_batch, 1, forward_size, forward_size],
        "versions": {name: __import__("bundle.backends", fromlist=["x"]).backend_version(name) for name in ("torch", "openvino", "onnxruntime", "int8")},
        "rows": rows,
    }
    _emit(result, output)


def full_disk(input_path: str = str(ROOT / "demo" / "phantom.raw"), ckpt_path: str = str(ROOT / "models" / "model.pt"), size_mib: int = 20,
              slab: int = 8, output: str | None = None) -> None:
    """Fill a small tmpfs output folder mid-run, free it, resume, and compare with an uninterrupted run (needs root to mount)."""
    from .full_disk import full_disk_run

    _emit(full_disk_run(input_path, ckpt_path, ROOT / "configs" / "inference.json", size_mib, slab), output)
