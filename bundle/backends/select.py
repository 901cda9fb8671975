"""Which backend runs the forward pass here: timed on this machine, never read from a table of what was fastest
elsewhere (the same graph is faster in OpenVINO on one CPU and in PyTorch on another). The timings are
cached per machine, model and settings, so a resumed or repeated run makes the same choice."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import torch
from torch import nn

from ..io import write_atomically
from ..runtime import Runtime, autocast_dtype, cpu_model, resolve_precision
from .export import BACKENDS, EXPORTED, backend_version, cache_dir, export_onnx, missing_package, quantize_int8
from .forward import build_forward

__all__ = ["Backend", "resolve_backend"]

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Backend:
    """What runs the network's forward pass; `as_dict()` goes into provenance.json.

    `precision` is what the backend computes in (ONNX Runtime is fp32 whatever was asked);
    `autocast_precision` is what the torch inferer wraps the call in (fp32 for exported graphs,
    whose precision is set when they are compiled).
    """

    requested: str
    name: str
    precision: str
    reason: str
    version: str
    model_file: str | None = None
    timings_s: dict | None = None
    network: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def autocast_precision(self) -> str:
        return self.precision if self.name == "torch" else "fp32"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "network"}


def _probe_seconds(name: str, forward: nn.Module, sample: torch.Tensor, precision: str) -> float:
    """Best of two timed forward passes of `sample` after one warm-up, as the inferer calls the backend."""
    dtype = autocast_dtype(precision) if name == "torch" else None
    times = []
    with torch.inference_mode(), torch.autocast(sample.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        for _ in range(3):
            start = time.perf_counter()
            forward(sample)
            times.append(time.perf_counter() - start)
    return min(times[1:])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _backend_precision(name: str, precision: str) -> str:
    return "fp32" if name == "onnxruntime" else precision


def resolve_backend(
    requested: str,
    network: nn.Module,
    runtime: Runtime,
    model_sha256: str,
    in_channels: int,
    spatial_dims: int,
    probe_shape: Sequence[int],
    calibration: Callable[[], tuple[list[np.ndarray], dict]] | None = None,
    cache: str | os.PathLike | None = None,
) -> Backend:
    """The backend that runs `network`'s forward pass here, built, with why it was chosen (logged once).

    'auto' on a CPU times every installed backend (torch, OpenVINO, ONNX Runtime) on one
    [1, in_channels, *probe_shape] input at the resolved precision and takes the fastest; the
    timings are cached in `cache/backend_timings.json` under a key of the machine, thread count,
    model, shapes, precision and package versions. A named backend runs as asked. Precision int8
    runs a quantised OpenVINO model calibrated on `calibration()`. A missing package or a graph
    that fails to build falls back to torch with one warning. On a GPU the backend is torch.
    """
    text = str(requested).strip().lower()
    if text not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}.")
    device = torch.device(runtime.device)
    float_precision = resolve_precision("auto", device) if runtime.precision == "int8" else runtime.precision
    cache = Path(cache) if cache else cache_dir()
    if runtime.precision == "int8" and text in ("torch", "onnxruntime"):
        raise ValueError(f"precision int8 runs on the openvino backend (or auto), not {text}.")

    def torch_choice(reason: str) -> Backend:
        return Backend(text, "torch", float_precision, reason, torch.__version__, network=network)

    def warn_fallback(reason: str) -> Backend:
        logger.warning("backend %s -> torch (%s): %s", text, float_precision, reason)
        return torch_choice(reason)

    if device.type != "cpu":
        if text in EXPORTED or runtime.precision == "int8":
            return warn_fallback(f"OpenVINO and ONNX Runtime run here on the CPU only; the {device.type} device runs torch")
        return _logged(torch_choice(f"{device.type} device: torch"))
    candidates = ["openvino"] if runtime.precision == "int8" else (["torch", "openvino", "onnxruntime"] if text == "auto" else [text])
    notes = []
    for name in list(candidates):
        needs = [name, "export"] + (["int8"] if runtime.precision == "int8" else [])
        missing = [p for p in (missing_package(n) for n in needs if n != "torch") if p]
        if missing:
            notes.append(f"{name} needs {' and '.join(missing)} (pip install {' '.join(missing)})")
            candidates.remove(name)
    if not candidates:
        return warn_fallback("; ".join(notes))
    files: dict[str, Path] = {}
    built: dict[str, nn.Module] = {}

    def build(name: str) -> nn.Module | None:
        if name in built:
            return built[name]
        try:
            if name != "torch" and "onnx" not in files:
                files["onnx"] = export_onnx(network, model_sha256, in_channels, spatial_dims, cache)
            model_file = files.get("onnx")
            if runtime.precision == "int8":
                if "int8" not in files:
                    if calibration is None:
                        raise ValueError("precision int8 needs calibration data (a volume to calibrate on)")
                    samples, facts = calibration()
                    files["int8"] = quantize_int8(files["onnx"], samples, facts, cache)
                model_file = files["int8"]
            precision = _backend_precision(name, runtime.precision)
            built[name] = build_forward(name, network, precision, runtime.threads, model_file, float_precision)
        except Exception as err:
            notes.append(f"{name} failed to build ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
            built[name] = None
        return built[name]

    timings = None
    if len(candidates) == 1:
        chosen = candidates[0]
        reason = f"{chosen} as asked" if text != "auto" else f"{chosen}, the only backend for precision {runtime.precision}"
    else:
        versions = {name: backend_version(name) for name in candidates}
        key = json.dumps({
            "cpu": cpu_model(), "capability": runtime.cpu_capability, "native_bf16": runtime.cpu_native_bf16,
            "threads": runtime.threads, "model": model_sha256, "in_channels": in_channels, "spatial_dims": spatial_dims,
            "probe_shape": list(probe_shape), "precision": runtime.precision, "versions": versions,
        }, sort_keys=True)
        timings, origin = _read_json(cache / "backend_timings.json").get(key, {}).get("seconds"), "cached timing"
        if not timings and idist.get_rank() == 0:
            generator = torch.Generator().manual_seed(0)
            sample = torch.rand(1, in_channels, *probe_shape, generator=generator)
            timings = {}
            for name in candidates:
                forward = build(name)
                if forward is not None:
                    timings[name] = round(_probe_seconds(name, forward, sample, _backend_precision(name, runtime.precision)), 4)
            record = _read_json(cache / "backend_timings.json")
            record[key] = {"seconds": timings, "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            try:
                write_atomically(cache / "backend_timings.json", json.dumps(record, indent=1, sort_keys=True) + "\n")
            except OSError as err:
                logger.warning("%s: cannot keep the backend timings (%s); the next run times them again. Set XCT_CACHE_DIR to a writable folder.", cache, err)
            origin = "timing"
        if idist.get_world_size() > 1:
            timings = json.loads(idist.broadcast(json.dumps(timings or {}), src=0, safe_mode=True))
        if not timings:
            return warn_fallback("; ".join(notes) or "no backend could be timed")
        chosen = min(timings, key=timings.get)
        shape = "x".join(str(s) for s in (1, in_channels, *probe_shape))
        reason = f"fastest in a {origin} of one {shape} forward pass here: " + ", ".join(
            f"{n} {_backend_precision(n, runtime.precision)} {t:.3f} s" for n, t in sorted(timings.items(), key=lambda kv: kv[1])
        )
    forward = build(chosen)
    if forward is None:
        return warn_fallback("; ".join(notes))
    if notes:
        reason += "; " + "; ".join(notes)
    model_file = files.get("int8" if runtime.precision == "int8" else "onnx") if chosen != "torch" else None
    choice = Backend(
        text, chosen, _backend_precision(chosen, runtime.precision), reason, backend_version(chosen),
        str(model_file) if model_file else None, timings, network=forward,
    )
    return _logged(choice)


def _logged(choice: Backend) -> Backend:
    logger.info("backend: %s -> %s (%s): %s", choice.requested, choice.name, choice.precision, choice.reason)
    return choice
