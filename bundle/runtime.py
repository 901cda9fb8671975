"""The one place that decides how this process computes: device, precision, threads, loader workers.

Defaults follow what the hardware supports, never what was fastest on one machine:
bf16 autocast only where the CPU (oneDNN with AVX512-bf16 / AMX) or the GPU (compute
capability 8.0+) has native bf16 kernels; elsewhere PyTorch falls back to reference
convolutions that are many times slower than fp32 (measured in docs/performance.md).
Threads come from the CPUs this process may really use (affinity and cgroup quota), so that
compute threads and DataLoader workers do not oversubscribe a container or a batch slot.

Which backend (PyTorch eager, OpenVINO or ONNX Runtime) runs the forward pass is decided
apart, in `bundle.backends.select`, from the precision and threads chosen here.

The result is logged once at start and written into `model.json` and `provenance.json`.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "PRECISIONS",
    "Runtime",
    "autocast_dtype",
    "cpu_capability",
    "cpu_has_native_bf16",
    "cpu_model",
    "cpu_has_native_fp16",
    "cuda_capability",
    "machine_class",
    "resolve_precision",
    "resolve_runtime",
    "usable_cpus",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32", "int8")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
_WARNED: set[tuple[str, str]] = set()


def cpu_capability() -> str:
    """The SIMD class PyTorch dispatches to on this CPU: 'AVX512', 'AVX2', 'DEFAULT', ..."""
    return str(torch.backends.cpu.get_cpu_capability())


def cpu_has_native_bf16() -> bool:
    """oneDNN has native bf16 kernels here (AVX512-bf16 or AMX), as PyTorch itself reports it."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_has_native_fp16() -> bool:
    """oneDNN has native fp16 kernels here (AVX512-fp16 or AMX-fp16)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of a CUDA device."""
    return tuple(torch.cuda.get_device_capability(device))


def _native_precisions(device: torch.device, training: bool) -> tuple[str, dict[str, bool]]:
    """The best precision for `device` and which reduced precisions it runs natively."""
    if device.type == "cpu":
        native = {"bf16": cpu_has_native_bf16(), "fp16": cpu_has_native_fp16()}
        return ("bf16" if native["bf16"] else "fp32"), native
    if device.type == "cuda":
        major, _ = cuda_capability(device)
        native = {"bf16": major >= 8, "fp16": major >= 7}
        if native["bf16"]:
            return "bf16", native
        return ("fp16" if native["fp16"] else "fp32"), native
    return "fp32", {"bf16": False, "fp16": False}


def resolve_precision(requested: str, device: torch.device | str, training: bool = False) -> str:
    """`requested` ('auto', 'bf16', 'fp16', 'fp32', 'int8') as the precision to run on `device`.

    'auto': CPU bf16 where oneDNN has native bf16, else fp32; CUDA bf16 on compute
    capability 8.0+, fp16 on 7.x (training adds a gradient scaler), fp32 below; any other
    device fp32. A forced reduced precision without native support runs, with one warning.
    'int8' is for inference only (a quantised OpenVINO model, see `resolve_backend`).
    """
    text = str(requested).strip().lower()
    if text not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}.")
    if text == "int8" and training:
        raise ValueError("precision int8 is for inference (post-training quantisation); train with auto, bf16, fp16 or fp32.")
    device = torch.device(device)
    best, native = _native_precisions(device, training)
    if text == "auto":
        return best
    if text == "int8":
        return text
    if text in native and not native[text] and (text, device.type) not in _WARNED:
        _WARNED.add((text, device.type))
        logger.warning(
            "precision %s was asked for, but this %s has no native %s kernels: it will run, many times slower "
            "than fp32. Use --precision auto (here: %s) for the fast path.",
            text,
            _describe_device(device),
            text,
            best,
        )
    return text


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None for fp32)."""
    if precision not in _AUTOCAST:
        raise ValueError(f"expected a resolved precision (bf16, fp16, fp32), got {precision!r}.")
    return _AUTOCAST[precision]


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = cuda_capability(device)
        return f"GPU {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    if device.type == "cpu":
        return f"CPU ({cpu_capability()})"
    return f"{device.type} device"


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup quota (v2 `cpu.max`, or v1 cfs quota / period), None when unlimited."""
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota = int(quota_file.read_text())
            return None if quota <= 0 else quota / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (not `os.cpu_count()`)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


@dataclass(frozen=True)
class Runtime:
    """How this process computes, resolved once; `as_dict()` goes into model.json and provenance.json."""

    device: str
    device_name: str
    precision_requested: str
    precision: str
    cpu_capability: str
    cpu_native_bf16: bool
    cuda_capability: str | None
    usable_cpus: int
    threads: int
    num_workers: int
    torch_version: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.precision)

    @property
    def grad_scaler(self) -> bool:
        """fp16 training needs a gradient scaler (MONAI's trainer `amp`); bf16 does not."""
        return self.precision == "fp16" and self.device.startswith("cuda")

    def as_dict(self) -> dict:
        return asdict(self)


def _count(value, name: str) -> int | None:
    if value is None or str(value).strip().lower() in ("auto", "none", ""):
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number or 'auto', got {value!r}.") from None
    if count < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}.")
    return count


def resolve_runtime(
    device: torch.device | str,
    precision: str = "auto",
    threads: int | str | None = None,
    num_workers: int | str | None = None,
    training: bool = False,
) -> Runtime:
    """Resolve and apply precision, intra-op threads and DataLoader workers for `device`; log the result once.

    Workers: `auto` gives one loader process per four usable CPUs (at most 4), none on a machine of
    fewer than four, so that loaders take CPUs the compute threads do not. Threads: `auto` gives the
    usable CPUs less the workers (at least 1) on a CPU device, and leaves PyTorch's choice on a GPU.
    """
    device = torch.device(device)
    cpus = usable_cpus()
    workers = _count(num_workers, "num_workers")
    if workers is None:
        workers = min(4, cpus // 4)
    wanted = _count(threads, "threads")
    if wanted is None:
        wanted = max(1, cpus - workers) if device.type == "cpu" else torch.get_num_threads()
    if wanted and wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)
    resolved = resolve_precision(precision, device, training)
    runtime = Runtime(
        device=str(device),
        device_name=_describe_device(device),
        precision_requested=str(precision).strip().lower(),
        precision=resolved,
        cpu_capability=cpu_capability(),
        cpu_native_bf16=cpu_has_native_bf16(),
        cuda_capability=".".join(map(str, cuda_capability(device))) if device.type == "cuda" else None,
        usable_cpus=cpus,
        threads=torch.get_num_threads(),
        num_workers=workers,
        torch_version=torch.__version__,
    )
    logger.info(
        "runtime: %s, native bf16 on CPU %s; precision %s -> %s; %d compute threads, %d loader workers (%d usable CPUs)",
        runtime.device_name,
        "yes" if runtime.cpu_native_bf16 else "no",
        runtime.precision_requested,
        runtime.precision,
        runtime.threads,
        runtime.num_workers,
        cpus,
    )
    return runtime

def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_class() -> dict:
    """The machine class every figure is measured on: CPU capability, native bf16, usable CPUs, threads."""
    return {
        "cpu_capability": cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cpu_model": cpu_model(),
        "usable_cpus": usable_cpus(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "emulated_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
